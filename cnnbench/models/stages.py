"""A model's anatomy as pictures and explanations need it: every module's output in network order (one traced
forward pass) and where the stages end."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Output:
    """One module's output in a forward pass: its position among the outputs, shape without the batch, calls."""

    name: str
    module: nn.Module
    order: int  # 0 = the first output produced
    shape: tuple[int, ...]
    calls: int  # forward calls per pass: a module used twice (a shared ReLU) has no single output to show


def module_outputs(model: nn.Module, x: torch.Tensor) -> list[Output]:
    """Every named module whose (first) output is a tensor, in the order the outputs were produced by one forward
    pass of ``x[:1]`` in eval mode without gradients; the model is left as it was."""
    seen: dict[str, list] = {}
    modules = {n: m for n, m in model.named_modules() if n}

    def hook(name: str):
        def record(module: nn.Module, inputs, output) -> None:
            if name in seen:
                seen[name][1] += 1
            elif isinstance(output, torch.Tensor):
                seen[name] = [tuple(output.shape[1:]), 1, len(seen)]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [Output(n, modules[n], order, shape, calls)
            for n, (shape, calls, order) in sorted(seen.items(), key=lambda kv: kv[1][2])]


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
