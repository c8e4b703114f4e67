"""Where a model's stages end: the layers pictures and explanations look at first."""

from __future__ import annotations

from torch import nn


def structural_layers(model: nn.Module) -> list[str]:
    """The end of each stage as the model declares it (``feature_stages``; timm's ``feature_info``; ``stages``)
    or, for a plain conv stack, each pooling layer of ``features``."""
    names = {m: n for n, m in model.named_modules()}
    if hasattr(model, "feature_stages"):
        return list(model.feature_stages)
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and all(isinstance(i, dict) and i.get("module") in names.values() for i in info):
        return [i["module"] for i in info]
    if isinstance(getattr(model, "stages", None), nn.Sequential):
        return [names[stage[-1]] if isinstance(stage, nn.Sequential) else names[stage] for stage in model.stages
                if not isinstance(stage, nn.Sequential) or len(stage)]
    if isinstance(getattr(model, "features", None), nn.Sequential):
        return [names[m] for m in model.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    return []
