"""One registry of model builders, looked up by name (the ``model.name`` of a config)."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping

from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench.errors import CnnbenchError

Builder = Callable[..., nn.Module]
_MODELS: dict[str, Builder] = {}
_INPUT_ARGS = ("num_classes", "in_channels", "image_size")


def register_model(name: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator: register a builder ``fn(*, num_classes, in_channels, image_size, **options)``."""

    def wrap(fn: Builder) -> Builder:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} is registered twice")
        _MODELS[key] = fn
        return fn

    return wrap


ZOOS = ("timm", "tv_model")  # other libraries' architectures, chosen by model.arch
ZOO_PREFIX = {"timm": "timm_", "tv_model": "tv_"}


def model_label(cfg: Mapping) -> str:
    """A model config's name as runs are named and summarised: the registered name, or for another library's
    zoo its architecture (``timm_convnext_atto``, ``tv_resnet50``): two zoo models never share a name."""
    name = cfg.get("name")
    return f"{ZOO_PREFIX[name]}{cfg.get('arch')}" if name in ZOO_PREFIX and cfg.get("arch") else str(name)


def list_models(include_zoos: bool = True) -> list[str]:
    """Names of all registered models, sorted; without ``timm`` and ``tv_model`` (other libraries' zoos) on
    request."""
    return sorted(n for n in _MODELS if include_zoos or n not in ZOOS)


def model_options(name: str) -> list[str]:
    """The keyword options a model accepts beyond num_classes, in_channels and image_size."""
    params = inspect.signature(_lookup(name)).parameters
    return [p for p in params if p not in _INPUT_ARGS]


def option_table() -> dict[str, dict[str, tuple[str, object]]]:
    """Every model's options as {name: {option: (annotation, default)}}: what the config schema is made of
    (``cnnbench/config/model_options.py`` is this table, written by ``scripts/dev/model_options.py``)."""
    table = {}
    for name in list_models():
        params = inspect.signature(_MODELS[name]).parameters
        table[name] = {key: (str(params[key].annotation),
                             list(params[key].default) if isinstance(params[key].default, tuple)
                             else params[key].default)
                       for key in model_options(name)}
    return table


def _lookup(name: str) -> Builder:
    if name not in _MODELS:
        raise CnnbenchError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def build_model(name: str, num_classes: int, in_channels: int, image_size: int, **options) -> nn.Module:
    """Build a registered model for inputs of shape (in_channels, image_size, image_size)."""
    builder = _lookup(name)
    accepted = model_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise CnnbenchError(
            f"model.{unknown[0]} is not an option of {name}; it accepts: {', '.join(accepted) or 'none'}"
        )
    return builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **options)


def build_from_config(cfg: Mapping, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Build the model a ``model`` config group describes (``name`` plus the builder's options)."""
    options = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    name = options.pop("name")
    if "weights" not in model_options(name) or is_weights_file(options.get("weights")):
        options.pop("weights", None)  # a weights file is read by cnnbench.transfer, not by the builder
    return build_model(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size, **options)


WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def is_weights_file(value: object) -> bool:
    """Whether a ``model.weights`` value names a file (a path or a weights suffix), not torchvision's weights
    enum (``DEFAULT``, ``IMAGENET1K_V2``); cnnbench.transfer.weights_file reads it."""
    return isinstance(value, str) and (value.lower().endswith(WEIGHTS_SUFFIXES) or os.sep in value
                                       or value.startswith("~"))


def require_min_size(name: str, image_size: int, min_size: int) -> None:
    """Fail at build time when an architecture down-samples more often than the image allows."""
    if image_size < min_size:
        raise CnnbenchError(f"{name} needs images of at least {min_size}x{min_size}, got {image_size}x{image_size}")
