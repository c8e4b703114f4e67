"""Which layers to picture, in network order, and what each one is: one traced forward pass tells.

A forward hook on every module records, in the order outputs are produced, each module's kind and output shape.
From that trace come the default layers (a post-activation first layer, the end of each stage, never maps too
small to read) and the tags, which sort in network order and say what they show: ``02 stages.0.1 block
64x32x32``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.stages import module_outputs, structural_layers

MIN_MAP = 4  # default layers whose maps are smaller than this (4x4 px) are skipped: min-max scaling of a 1x1 or
# 2x2 map gives solid or black-and-white blocks that read as a dead layer
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish, nn.Tanh)
ACTIVATION_KINDS = {cls.__name__.lower() for cls in ACTIVATIONS}
KINDS = {nn.Conv2d: "conv", nn.BatchNorm2d: "bn", nn.MaxPool2d: "maxpool", nn.AvgPool2d: "avgpool",
         nn.AdaptiveAvgPool2d: "avgpool", nn.Sequential: "stage", nn.Linear: "linear"}


@dataclass(frozen=True)
class Layer:
    """One module's output for one image: where it comes in the network, what it is, its (C, H, W)."""

    order: int  # position among the modules' outputs in a forward pass (0 = first)
    name: str
    kind: str
    shape: tuple[int, ...]
    calls: int  # forward calls per pass: a module used twice (a shared ReLU) has no single output to show

    def label(self) -> str:
        """``stages.0.1 block 64x32x32``."""
        return f"{self.name} {self.kind} {'x'.join(map(str, self.shape))}"


def kind_of(module: nn.Module) -> str:
    """conv, bn, relu, maxpool, stage, ... ; a block class's name without "Block" otherwise (basic, bottleneck)."""
    for cls, kind in KINDS.items():
        if type(module) is cls:
            return kind
    if isinstance(module, ACTIVATIONS):
        return type(module).__name__.lower()
    name = type(module).__name__
    return name[:-5].lower() if name.endswith("Block") and len(name) > 5 else name.lower()


def trace(model: nn.Module, x: torch.Tensor) -> dict[str, Layer]:
    """Run ``x`` (one image is enough) through ``model`` in eval mode and describe every module whose output is a
    (B, C, H, W) feature map, in the order the outputs were produced."""
    return {o.name: Layer(o.order, o.name, kind_of(o.module), o.shape, o.calls)
            for o in module_outputs(model, x) if len(o.shape) == 3}


def first_layer(layers: dict[str, Layer]) -> str | None:
    """The first conv's activated output (the activation right after it, used once), else the first conv."""
    ordered = list(layers.values())
    conv = next((i for i, layer in enumerate(ordered) if layer.kind == "conv"), None)
    if conv is None:
        return None
    for layer in ordered[conv + 1:conv + 4]:  # conv -> (bn) -> activation
        if layer.kind == "conv":
            break
        if layer.calls == 1 and layer.kind in ACTIVATION_KINDS:
            return layer.name
    return ordered[conv].name


def default_feature_layers(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The first layer after its activation, then the end of each stage; maps under ``MIN_MAP`` px left out."""
    layers = trace(model, x)
    chosen = [first_layer(layers), *structural_layers(model)]
    chosen = [n for n in dict.fromkeys(chosen) if n in layers and min(layers[n].shape[1:]) >= MIN_MAP]
    return sorted(chosen, key=lambda n: layers[n].order)


def tags(layers: dict[str, Layer], names: list[str]) -> dict[str, str]:
    """``feature_maps/NN <label>`` for each name, NN counting in network order from 01 (00 is the input)."""
    missing = [n for n in names if n not in layers]
    if missing:
        raise CnnbenchError(f"layer {missing[0]!r} does not output feature maps (B, C, H, W); layers: "
                            f"{', '.join(layers)}")
    ordered = sorted(names, key=lambda n: layers[n].order)
    return {n: f"feature_maps/{i:02d} {layers[n].label()}" for i, n in enumerate(ordered, start=1)}


def capture(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Run ``x`` through ``model`` (eval, no grad) and return each named layer's output (B, C, H, W) as float on
    the CPU (copied at once: a later in-place op, ``out += identity``, would change it)."""
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        names = [n for n, m in modules.items() if n and not isinstance(m, nn.Identity)]
        raise CnnbenchError(f"no layer named {unknown[0]!r}; layers: {', '.join(names)}")
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:  # None: the output goes on as is
            outputs.setdefault(name, output.detach().to("cpu", torch.float32, copy=True))
        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: o for n, o in outputs.items() if o.ndim == 4}
