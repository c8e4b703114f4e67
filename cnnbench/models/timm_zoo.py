"""timm's zoo (pytorch-image-models, about 1,000 architectures) as cnnbench models: ``model=timm
model.arch=<name>``, built by ``timm.create_model`` for the data's classes and channels.

``model.drop_path`` is timm's ``drop_path_rate``; ``model.kwargs.<key>=...`` passes any other keyword of the
architecture through (one line when it takes no such keyword); a vision transformer is sized for the data's
image size. ``model.pretrained=true`` reads timm's weights from the local Hugging Face cache only (nothing is
downloaded during a run): when they are not there, one line says which repository it looked for and where.
The weights' ``pretrained_cfg`` sets the preprocessing (``pretrained_preprocessing``), as torchvision's
weights do theirs.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.registry import register_model

MAX_LISTED = 30  # matches of a pattern listed by cnnbench-inspect


def architectures(pattern: str = "*") -> list[str]:
    """timm's architecture names matching a shell pattern (``convnext*``), sorted."""
    import timm

    return sorted(fnmatch.filter(timm.list_models(), pattern))


def check_arch(arch: str | None) -> str:
    """``arch`` when timm has it; else one line with the closest names."""
    import timm

    if not arch:
        raise CnnbenchError("model=timm needs model.arch=<name>; list names with cnnbench-inspect model=timm "
                            "model.arch='convnext*'")
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.5)
        raise CnnbenchError(f"model.arch={arch} is not a timm architecture" +
                            (f"; closest: {', '.join(close)}" if close else "") +
                            " (cnnbench-inspect model=timm model.arch='<pattern>*' lists them)")
    return arch


@contextmanager
def offline_hub() -> Iterator[None]:
    """Hugging Face Hub lookups answered from the local cache only, for as long as the context lasts (the hub
    reads HF_HUB_OFFLINE once, at import: its constant is what it consults)."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved


def _create(arch: str, pretrained: bool, options: dict, user_keys: list[str]) -> nn.Module:
    """``timm.create_model`` with its failures as one line: a keyword the architecture does not take, weights
    not in the local cache."""
    import timm

    try:
        with offline_hub():
            return timm.create_model(arch, pretrained=pretrained, **options)
    except TypeError as e:
        if not user_keys:
            raise
        raise CnnbenchError(f"timm's {arch} does not take one of model.kwargs ({', '.join(user_keys)}): "
                            f"{str(e).splitlines()[0]}") from None
    except (OSError, RuntimeError, ValueError) as e:
        if not pretrained:
            raise
        repo = getattr(timm.get_pretrained_cfg(arch), "hf_hub_id", None) or arch
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
        raise CnnbenchError(f"model.pretrained=true: timm's weights for {arch} ({repo}) are not in the local "
                            f"Hugging Face cache {cache}, and runs do not download; fetch them once online "
                            f"(timm.create_model('{arch}', pretrained=True)) or set model.pretrained=false "
                            f"({type(e).__name__})") from None


def check_cached(arch: str) -> None:
    """Refuse, before anything is built, ``model.pretrained=true`` for an architecture whose weights are not in
    the local Hugging Face cache (runs never download them)."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    repo = getattr(timm.get_pretrained_cfg(arch), "hf_hub_id", None)
    if not repo:  # (weights from a URL: timm.create_model tells)
        return
    if not any(isinstance(try_to_load_from_cache(repo, name), str) for name in ("model.safetensors",
                                                                                "pytorch_model.bin")):
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
        raise CnnbenchError(f"model.pretrained=true: timm's weights for {arch} ({repo}) are not in the local "
                            f"Hugging Face cache {cache}, and runs do not download; fetch them once online "
                            f"(timm.create_model('{arch}', pretrained=True)) or set model.pretrained=false")


def pretrained_preprocessing(arch: str) -> dict:
    """How timm's weights for ``arch`` want their input, from its ``pretrained_cfg`` as timm's own
    ``resolve_data_config`` reads it: data.image_size, resize_size (image_size / crop_pct, floored, as timm's
    eval transform), interpolation, mean and std."""
    import timm
    from timm.data import resolve_data_config

    pretrained = timm.get_pretrained_cfg(arch)
    config = resolve_data_config({}, pretrained_cfg=pretrained.to_dict() if pretrained else {})
    size = config["input_size"][-1]
    return {"image_size": size, "resize_size": math.floor(size / config["crop_pct"]),
            "interpolation": config["interpolation"], "mean": list(config["mean"]), "std": list(config["std"])}


@register_model("timm")
def timm_model(*, num_classes: int, in_channels: int, image_size: int, arch: str | None = None,
               pretrained: bool = False, drop_path: float = 0.0, kwargs: dict | None = None) -> nn.Module:
    """A timm architecture for ``num_classes`` classes of ``in_channels`` x ``image_size`` images."""
    arch = check_arch(arch)
    user = dict(kwargs or {})
    options = {"num_classes": num_classes, "in_chans": in_channels, "drop_path_rate": drop_path, **user}
    model = _create(arch, pretrained, options, list(user))
    grid = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if grid is not None and tuple(grid) != (image_size, image_size) and "img_size" not in user:
        # a transformer's position embeddings are sized for one input: size them for the data's (timm
        # resamples pretrained ones)
        model = _create(arch, pretrained, {**options, "img_size": image_size}, list(user))
    return model
