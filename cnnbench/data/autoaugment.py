"""TrivialAugmentWide (Müller & Hutter 2021) and RandAugment (Cubuk et al. 2020) as torchvision.transforms.v2
defines them, batched on uint8 images on their own device.

Every image draws its own op (one of the 14 below), magnitude bin and sign, as torchvision does per image; the
images are then grouped by op, and each op runs once per batch on its group with a magnitude per image, so there
is no per-image Python. Each op computes what torchvision's v2 functional op computes (the same inverse affine
matrix and sampling grid, nearest interpolation, zero fill; the same blends and rounding), checked against it
image by image in tests/test_autoaugment.py. AutoContrast and Equalize have no magnitude: torchvision's own
batched kernels run on the group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
       "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize")
SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast", "Sharpness"}


def magnitude_table(policy: str, bins: int, height: int, width: int) -> dict[str, torch.Tensor]:
    """Each op's magnitudes by bin (torchvision's ``_AUGMENTATION_SPACE``); ops without one are absent."""
    wide = policy == "trivialaugment"
    lin = torch.linspace
    shear, rotate, enhance = (0.99, 135.0, 0.99) if wide else (0.3, 30.0, 0.9)
    table = {"ShearX": lin(0.0, shear, bins), "ShearY": lin(0.0, shear, bins),
             "TranslateX": lin(0.0, 32.0 if wide else 150.0 / 331.0 * width, bins),
             "TranslateY": lin(0.0, 32.0 if wide else 150.0 / 331.0 * height, bins),
             "Rotate": lin(0.0, rotate, bins), "Solarize": lin(1.0, 0.0, bins),
             "Posterize": (8 - (torch.arange(bins) / ((bins - 1) / (6 if wide else 4)))).round().int()}
    for op in ("Brightness", "Color", "Contrast", "Sharpness"):
        table[op] = lin(0.0, enhance, bins)
    return table


class AutoAugment:
    """``policy``: trivialaugment (one op per image, a random magnitude bin of ``bins``) or randaugment
    (``num_ops`` ops in turn, each at bin ``magnitude``)."""

    def __init__(self, policy: str, generator: torch.Generator, *, bins: int = 31, magnitude: int = 9,
                 num_ops: int = 2) -> None:
        self.policy, self.generator = policy, generator
        self.bins = bins
        self.magnitude = magnitude
        self.num_ops = num_ops
        self._tables: dict[tuple, dict[str, torch.Tensor]] = {}  # by image size and device, made once

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment the uint8 batch ``x`` (B, C, H, W)."""
        key = (*x.shape[-2:], x.device)
        if key not in self._tables:
            self._tables[key] = {k: v.to(torch.float64).to(x.device)
                                 for k, v in magnitude_table(self.policy, self.bins, *x.shape[-2:]).items()}
        table = self._tables[key]
        for _ in range(1 if self.policy == "trivialaugment" else self.num_ops):
            x = self._round(x, table)
        return x

    def _round(self, x: torch.Tensor, table: dict[str, torch.Tensor]) -> torch.Tensor:
        b = x.shape[0]
        g = self.generator
        dev = x.device
        op = torch.randint(0, len(OPS), (b,), generator=g, device=dev)
        if self.policy == "trivialaugment":
            level = torch.randint(0, self.bins, (b,), generator=g, device=dev)
        else:
            level = torch.full((b,), self.magnitude, device=dev)
        negative = torch.rand(b, generator=g, device=dev) <= 0.5
        out = x.clone()
        for k, name in enumerate(OPS):
            idx = (op == k).nonzero().squeeze(1)
            if name == "Identity" or idx.numel() == 0:
                continue
            m = table[name][level[idx]] if name in table else None
            if name in SIGNED:
                m = torch.where(negative[idx], -m, m)
            out[idx] = apply_op(x[idx], name, m)
        return out


def apply_op(x: torch.Tensor, name: str, m: torch.Tensor | None) -> torch.Tensor:
    """Op ``name`` on the uint8 images ``x`` (n, C, H, W), image i at magnitude ``m[i]`` (float64)."""
    n, _, h, w = x.shape
    zeros = torch.zeros(n, dtype=torch.float64, device=x.device)
    if name in ("ShearX", "ShearY"):  # shear by atan(m) about the top-left corner (center=[0, 0])
        shear = torch.rad2deg(torch.atan(m))
        shears = torch.stack([shear, zeros] if name == "ShearX" else [zeros, shear], 1)
        corner = torch.tensor([-w * 0.5, -h * 0.5], dtype=torch.float64, device=x.device).expand(n, 2)
        return affine(x, zeros, torch.zeros_like(corner), shears, corner)
    if name in ("TranslateX", "TranslateY"):
        shift = torch.trunc(m)  # int(magnitude)
        moves = torch.stack([shift, zeros] if name == "TranslateX" else [zeros, shift], 1)
        return affine(x, zeros, moves, torch.zeros_like(moves), torch.zeros_like(moves))
    if name == "Rotate":
        return rotate(x, m)
    factor = (1.0 + m).view(n, 1, 1, 1) if m is not None else None  # float64, as torchvision's Python floats
    if name == "Brightness":
        return x.float().mul(factor.float()).clamp_(0, 255).to(torch.uint8)
    if name == "Color":
        return x if x.shape[1] == 1 else blend(x, grayscale(x), factor)
    if name == "Contrast":
        gray = grayscale(x) if x.shape[1] == 3 else x.float()
        return blend(x, gray.mean(dim=(-3, -2, -1), keepdim=True), factor)
    if name == "Sharpness":
        return sharpen(x, factor)
    if name == "Posterize":
        bits = m.long()
        mask = ((1 << bits) - 1) << (8 - bits)  # bits 8: 255, the image unchanged
        return x & mask.to(torch.uint8).view(n, 1, 1, 1)
    if name == "Solarize":
        threshold = (255.0 * m).float().view(n, 1, 1, 1)
        return torch.where(x >= threshold, 255 - x, x)
    if name == "AutoContrast":
        return TF.autocontrast(x)
    if name == "Equalize":
        return TF.equalize(x)
    raise ValueError(f"unknown op {name}")


def inverse_affine(angle: torch.Tensor, translate: torch.Tensor, shear: torch.Tensor, center: torch.Tensor
                   ) -> torch.Tensor:
    """torchvision's ``_get_inverse_affine_matrix`` (scale 1) for n images at once, float64: (n, 2, 3).
    angle (n,) and shear (n, 2) in degrees; translate and center (n, 2) in pixels, center from the image centre."""
    rot = torch.deg2rad(angle)
    sx = torch.deg2rad(shear[:, 0])
    sy = torch.deg2rad(shear[:, 1])
    cx, cy = center.unbind(1)
    cx_plus_tx, cy_plus_ty = cx + translate[:, 0], cy + translate[:, 1]
    cos_sy = torch.cos(sy)
    tan_sx = torch.tan(sx)
    rot_minus_sy = rot - sy
    a = torch.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + torch.sin(rot))
    c = torch.sin(rot_minus_sy) / cos_sy
    d = torch.cos(rot) - c * tan_sx
    m0 = d
    m1 = -b
    m3 = -c
    m4 = a
    m2 = cx - m0 * cx_plus_tx - m1 * cy_plus_ty
    m5 = cy - m3 * cx_plus_tx - m4 * cy_plus_ty
    return torch.stack([m0, m1, m2, m3, m4, m5], 1).view(-1, 2, 3)


def affine(x: torch.Tensor, angle: torch.Tensor, translate: torch.Tensor, shear: torch.Tensor,
           center: torch.Tensor) -> torch.Tensor:
    """torchvision's ``affine_image`` (nearest, zero fill) with a transform per image."""
    return _sample(x, inverse_affine(angle, translate, shear, center))


def rotate(x: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """torchvision's ``rotate_image`` (about the centre, nearest, zero fill, same size), its exact quarter turns
    included."""
    n, _, h, w = x.shape
    angle = torch.remainder(angle, 360.0)
    zeros = torch.zeros(n, 2, dtype=torch.float64, device=x.device)
    out = _sample(x, inverse_affine(-angle, zeros, zeros, zeros))
    turns = {0: 0, 180: 2} | ({90: 1, 270: 3} if h == w else {})
    for degrees, k in turns.items():  # torchvision's fast paths: a copy, or torch.rot90
        exact = (angle == degrees).nonzero().squeeze(1)
        if exact.numel():
            out[exact] = torch.rot90(x[exact], k=k, dims=(-2, -1))
    return out


def _sample(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` at the inverse transforms ``matrix`` (n, 2, 3): torchvision's ``_affine_grid`` and
    ``_apply_grid_transform``."""
    n, _, h, w = x.shape
    theta = matrix.to(torch.float32)
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    scaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=x.device))
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(scaled).view(n, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round_().to(torch.uint8)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """The luma of RGB images as float, floored (torchvision's, before blending): (n, 1, H, W)."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * other``, clamped, back to uint8 (torchvision's ``_blend``); ``factor``
    float64 (n, 1, 1, 1), both weights rounded to float32 from it, as torchvision's scalars are."""
    return x.float().mul(factor.float()).add_(other * (1.0 - factor).float()).clamp_(0, 255).to(torch.uint8)


def sharpen(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_sharpness_image``: blend with a 3x3 smoothed copy, the border pixels kept."""
    c = x.shape[1]
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=torch.float32, device=x.device)
    out = x.to(torch.float32, copy=True)
    blurred = F.conv2d(out, kernel.expand(c, 1, 3, 3), groups=c).round_()
    inner = out[..., 1:-1, 1:-1]
    inner.add_(blurred.sub_(inner).mul_((1.0 - factor).float()))
    return out.clamp_(0, 255).to(torch.uint8)
