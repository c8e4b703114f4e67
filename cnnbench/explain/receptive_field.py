"""Receptive fields measured: the *effective* receptive field of a layer (Luo et al., 2016), the gradient of one
output unit at the centre of its map with respect to the input, |.| summed over channels and averaged over
images, beside the *theoretical* one the layer recurrence gives (``cnnbench.anatomy``): a unit sees the
theoretical square, but most of what moves it lies in a much smaller, roughly Gaussian centre."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnbench.explain.attribution import as_grid

MASS = 0.95  # the effective size: the side of the smallest centred square holding this share of the gradient


@dataclass(frozen=True)
class EffectiveField:
    """A layer's effective receptive field: the map over the input (H, W) summing to 1, and its measured side."""

    layer: str
    heat: torch.Tensor  # (H, W) on the CPU, sums to 1
    side: int  # pixels: the smallest square around the centre of mass holding MASS of the heat
    centre: tuple[int, int]  # (row, column) of the centre of mass


def effective_field(model: nn.Module, images: torch.Tensor, layer: str) -> EffectiveField:
    """The effective receptive field of ``layer``'s centre unit (the channel sum at the middle of its map) over
    normalised ``images`` (B, C, H, W); the model runs in eval mode and is left as it was."""
    was_training = model.training
    model.eval()
    captured: list[torch.Tensor] = []
    try:
        with as_grid(model, layer, images) as module:
            handle = module.register_forward_hook(lambda m, i, out: captured.append(out))
            x = images.detach().clone().requires_grad_(True)
            try:
                model(x)
            finally:
                handle.remove()
        out = captured[0]  # (B, C, h, w)
        centre = out[:, :, out.shape[-2] // 2, out.shape[-1] // 2].sum()
        (grad,) = torch.autograd.grad(centre, x)
    finally:
        model.train(was_training)
    heat = grad.detach().abs().sum(1).mean(0).float().cpu()
    heat = heat / heat.sum().clamp_min(1e-30)
    side, centre_of_mass = mass_side(heat)
    return EffectiveField(layer, heat, side, centre_of_mass)


def mass_side(heat: torch.Tensor, mass: float = MASS) -> tuple[int, tuple[int, int]]:
    """The side of the smallest square centred on ``heat``'s centre of mass that holds ``mass`` of it (clipped at
    the image's edges), and that centre (rounded)."""
    rows, cols = torch.arange(heat.shape[0], dtype=heat.dtype), torch.arange(heat.shape[1], dtype=heat.dtype)
    total = heat.sum().clamp_min(1e-30)
    r, c = float((heat.sum(1) * rows).sum() / total), float((heat.sum(0) * cols).sum() / total)
    for side in range(1, 2 * max(heat.shape)):
        top, left = max(0, round(r - (side - 1) / 2)), max(0, round(c - (side - 1) / 2))
        if heat[top:top + side, left:left + side].sum() >= mass * total:
            return side, (round(r), round(c))
    return 2 * max(heat.shape) - 1, (round(r), round(c))


def support(heat: torch.Tensor, eps: float = 0.0) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the smallest box holding every pixel of ``heat`` above ``eps``."""
    rows = (heat > eps).any(1).nonzero().flatten()
    cols = (heat > eps).any(0).nonzero().flatten()
    if not len(rows):
        return 0, 0, 0, 0
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
