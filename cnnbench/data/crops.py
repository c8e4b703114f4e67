"""Random resized crops and evaluation centre crops of photo canvases, a whole batch in one call.

A photo is stored whole, aspect kept, at the top-left of a square canvas (``cnnbench.data.decode``, ``fit``);
its (height, width) there is known. ``resized_crop_boxes`` draws torchvision's ``RandomResizedCrop`` box for
every image at once, ``centre_boxes`` gives the box of ``Resize(resize) + CenterCrop(size)``, and
``crop_resize`` cuts every box out and resizes it to the model's square with Pillow's filter arithmetic (that
of torchvision's ``resized_crop`` with ``antialias=True``) as two batched matrix products.
"""

from __future__ import annotations

import math

import torch

Boxes = torch.Tensor  # float (B, 4): top, left, height, width in canvas pixels


def resized_crop_boxes(sizes: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float],
                       generator: torch.Generator, attempts: int = 10) -> Boxes:
    """One ``RandomResizedCrop.get_params`` box per image of (height, width) ``sizes`` (B, 2), drawn as
    torchvision draws it: up to ``attempts`` tries of an area fraction uniform in ``scale`` and an aspect
    (width / height) log-uniform in ``ratio``, the first that fits placed uniformly; none fits: the centred
    crop of the whole image clamped to ``ratio``."""
    dev = sizes.device
    b = len(sizes)
    h, w = sizes[:, :1].double(), sizes[:, 1:].double()  # (B, 1)
    area = h * w * torch.empty(b, attempts, device=dev, dtype=torch.float64).uniform_(*scale, generator=generator)
    aspect = torch.empty(b, attempts, device=dev, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    cw, ch = (area * aspect).sqrt().round(), (area / aspect).sqrt().round()  # (B, attempts)
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.int().argmax(1, keepdim=True)  # the first attempt that fits
    found = fits.any(1)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)  # (B,)
    h, w = h.squeeze(1), w.squeeze(1)
    # torchvision: i = randint(0, h - ch + 1), j = randint(0, w - cw + 1)
    top = (torch.rand(b, generator=generator, device=dev, dtype=torch.float64) * (h - ch + 1)).floor()
    left = (torch.rand(b, generator=generator, device=dev, dtype=torch.float64) * (w - cw + 1)).floor()
    # the fallback: the whole image, cut to the nearest allowed aspect, centred
    in_ratio = w / h
    fw = torch.where(in_ratio > ratio[1], (h * ratio[1]).round(), w)
    fh = torch.where(in_ratio < ratio[0], (w / ratio[0]).round(), h)
    boxes = torch.stack([torch.where(found, top, ((h - fh) / 2).floor()),
                         torch.where(found, left, ((w - fw) / 2).floor()),
                         torch.where(found, ch, fh), torch.where(found, cw, fw)], 1)
    return boxes.float()


def centre_boxes(sizes: torch.Tensor, size: int, resize: int) -> Boxes:
    """The boxes that ``Resize(resize)`` (shorter side) + ``CenterCrop(size)`` keep of images of (height,
    width) ``sizes``, in the images' own pixels."""
    h, w = sizes[:, 0].double(), sizes[:, 1].double()
    side = torch.minimum(h, w) * (size / resize)  # the crop's side before the resize
    return torch.stack([(h - side) / 2, (w - side) / 2, side, side], 1).float()


def _triangle(t: torch.Tensor) -> torch.Tensor:
    return (1 - t.abs()).clamp_(min=0)


def _cubic(t: torch.Tensor, a: float = -0.5) -> torch.Tensor:  # Pillow's bicubic (a = -0.5)
    t = t.abs()
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return torch.where(t < 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


KERNELS = {"bilinear": (_triangle, 1.0), "bicubic": (_cubic, 2.0)}


def resample_weights(start: torch.Tensor, length: torch.Tensor, out: int, n: int, interpolation: str = "bilinear"
                     ) -> torch.Tensor:
    """(B, out, n): row i holds the weights of the n input pixels in output pixel i, when the span [start,
    start + length) of each of B rows of pixels is resized to ``out`` pixels. Pillow's (and torch's
    ``antialias=True``) arithmetic: the kernel stretched by the shrink factor, only pixels inside the span,
    weights summing to one."""
    kernel, _ = KERNELS.get(interpolation, KERNELS["bilinear"])  # (nearest: bilinear for crops)
    scale = (length / out)[:, None, None]  # (B, 1, 1): input pixels per output pixel
    centre = start[:, None, None] + (torch.arange(out, device=start.device) + 0.5)[None, :, None] * scale
    pos = torch.arange(n, device=start.device, dtype=start.dtype) + 0.5  # pixel centres
    weights = kernel((pos - centre) / scale.clamp(min=1))  # (B, out, n)
    inside = (pos >= start[:, None]) & (pos < (start + length)[:, None])  # (B, n)
    weights = weights * inside[:, None, :]
    return weights / weights.sum(-1, keepdim=True).clamp(min=1e-12)


def crop_resize(x: torch.Tensor, boxes: Boxes, size: int, interpolation: str = "bilinear") -> torch.Tensor:
    """The ``boxes`` (B, 4) of the uint8 canvases ``x`` (B, C, H, W), each resized to size x size: uint8.
    Separable, as Pillow resizes: rows then columns, each one batched matrix product."""
    top, left, height, width = boxes.to(device=x.device, dtype=torch.float32).unbind(1)
    rows = resample_weights(top, height, size, x.shape[2], interpolation)  # (B, size, H)
    cols = resample_weights(left, width, size, x.shape[3], interpolation)  # (B, size, W)
    out = rows[:, None] @ x.float() @ cols[:, None].transpose(2, 3)  # (B, C, size, size)
    return out.round_().clamp_(0, 255).to(torch.uint8)
