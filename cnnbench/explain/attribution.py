"""Where in the image the evidence for a class lies: Grad-CAM, input saliency, integrated gradients and occlusion,
computed with Captum on the model's own device, one map (B, H, W) per image at the input's resolution.

- Grad-CAM (Selvaraju et al., 2017) on a layer: the layer's channels weighted by the mean gradient of the class
  score, summed, ReLU; upsampled bilinearly. The default layer is the end of the last convolutional stage; for a
  vision transformer, the tokens entering its last attention, laid out on the patch grid.
- Saliency (Simonyan et al., 2014): |d score / d pixel|, the largest over the colour channels.
- Integrated gradients (Sundararajan et al., 2017): (x - baseline) times the gradient averaged along the straight
  path from the baseline, |.| summed over channels. The baseline is 0 after normalisation: the data set's mean.
- Occlusion (Zeiler & Fergus, 2014): how much the class score changes, |.|, when a square patch is replaced by the
  mean (0), averaged over the patches that cover each pixel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.stages import module_outputs, structural_layers

METHODS = ("gradcam", "saliency", "integrated_gradients", "occlusion")
TITLES = {"gradcam": "Grad-CAM", "saliency": "saliency", "integrated_gradients": "integrated gradients",
          "occlusion": "occlusion"}
IG_STEPS = 32  # points on the path from the baseline: Captum's default 50 changes these maps by < 1%


@dataclass(frozen=True)
class Explanation:
    """One attribution map per image, >= 0, at the input's resolution, and what it explains."""

    maps: torch.Tensor  # (B, H, W) float on the CPU
    method: str
    layer: str | None  # Grad-CAM's layer
    targets: list[int]  # the class explained, per image


def token_grid(tokens: int) -> tuple[int, int] | None:
    """(prefix tokens, side) when ``tokens`` is a square patch grid with 0 or 1 class token before it."""
    for prefix in (1, 0):
        side = math.isqrt(tokens - prefix)
        if side > 1 and side * side == tokens - prefix:
            return prefix, side
    return None


def default_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Grad-CAM's layer: the end of the last convolutional stage with maps of at least 2x2 (the model's declared
    stages, else the last such module); for a transformer, the norm before its last attention (its patch tokens
    still reach the class token there; after it they no longer do)."""
    outputs = module_outputs(model, x)
    attention = [i for i, o in enumerate(outputs) if "attention" in type(o.module).__name__.lower()]
    if attention:
        norms = [o.name for o in outputs[:attention[-1]] if isinstance(o.module, nn.LayerNorm)
                 and len(o.shape) == 2 and token_grid(o.shape[0])]
        if norms:
            return norms[-1]
    maps = {o.name: o.shape for o in outputs if len(o.shape) == 3 and min(o.shape[1:]) >= 2}
    stages = [n for n in structural_layers(model) if n in maps]
    if stages:
        return stages[-1]
    if not maps:
        raise CnnbenchError("this model has no layer with feature maps (B, C, H, W) of at least 2x2 for Grad-CAM; "
                            "use explain=saliency, integrated_gradients or occlusion")
    return list(maps)[-1]


@contextmanager
def as_grid(model: nn.Module, name: str, x: torch.Tensor) -> Iterator[nn.Module]:
    """The module Grad-CAM should look at for layer ``name``: the layer itself when it outputs (B, C, H, W); for
    a token layer (B, N, D), a stand-in that receives its patch tokens as a (B, D, side, side) grid, in the
    graph, for as long as the context lasts."""
    modules = dict(model.named_modules())
    if name not in modules:
        raise CnnbenchError(f"no layer named {name!r}; cnnbench-visualize run=<dir> image=<file> lists them")
    layer = modules[name]
    shape = {o.name: o.shape for o in module_outputs(model, x)}.get(name)
    if shape is None or len(shape) not in (2, 3):
        raise CnnbenchError(f"layer {name!r} outputs no feature maps (B, C, H, W) or tokens (B, N, D) for Grad-CAM")
    if len(shape) == 3:
        yield layer
        return
    grid = token_grid(shape[0])
    if grid is None:
        raise CnnbenchError(f"layer {name!r} outputs {shape[0]} tokens, not a square patch grid")
    prefix, side = grid
    stand_in = nn.Identity()

    def regrid(module: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
        patches = stand_in(out[:, prefix:].transpose(1, 2).reshape(out.shape[0], -1, side, side))
        return torch.cat([out[:, :prefix], patches.flatten(2).transpose(1, 2)], dim=1)

    handle = layer.register_forward_hook(regrid)
    try:
        yield stand_in
    finally:
        handle.remove()


def _gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: str) -> torch.Tensor:
    from captum.attr import LayerAttribution, LayerGradCam

    with as_grid(model, layer, x) as module:
        cam = LayerGradCam(model, module).attribute(x, target=targets, relu_attributions=True)  # (B, 1, h, w)
    return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]


def _occlusion(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from captum.attr import Occlusion

    window = max(2, x.shape[-1] // 8)
    stride = max(1, window // 2)
    change = Occlusion(model).attribute(x, target=targets, sliding_window_shapes=(x.shape[1], window, window),
                                        strides=(x.shape[1], stride, stride), baselines=0.0,
                                        perturbations_per_eval=16)
    return change.abs().mean(1)


def attribute(model: nn.Module, x: torch.Tensor, targets: torch.Tensor | list[int], method: str,
              layer: str | None = None) -> Explanation:
    """``method``'s map for each normalised image of ``x`` (B, C, H, W), explaining class ``targets[i]``; the
    model runs in eval mode on ``x``'s device and is left as it was."""
    from captum.attr import IntegratedGradients, Saliency

    if method not in METHODS:
        raise CnnbenchError(f"explain={method!r} is not a method; choose one of {', '.join(METHODS)}")
    targets = torch.as_tensor(targets, device=x.device).long()
    x = x.detach().clone().requires_grad_(True)  # (the gradient methods' input; Captum warns when it is not)
    was_training = model.training
    model.eval()
    try:
        if method == "gradcam":
            layer = layer or default_layer(model, x)
            maps = _gradcam(model, x, targets, layer)
        elif method == "saliency":
            maps = Saliency(model).attribute(x, target=targets, abs=True).amax(1)
        elif method == "integrated_gradients":
            maps = IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=targets,
                                                        n_steps=IG_STEPS, internal_batch_size=len(x) * 8
                                                        ).abs().sum(1)
        else:
            maps = _occlusion(model, x, targets)
    finally:
        model.train(was_training)
    return Explanation(maps.detach().float().cpu(), method, layer if method == "gradcam" else None,
                       targets.tolist())


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (B, classes) in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return F.softmax(model(x).float(), dim=1).cpu()
    finally:
        model.train(was_training)
