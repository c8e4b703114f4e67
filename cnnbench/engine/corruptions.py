"""Common corruptions (Hendrycks & Dietterich, ICLR 2019: CIFAR-10-C), applied batched to (B, C, H, W) images.

Each function takes float images in [0, 1] on any device, a severity 1-5 and a torch Generator, and returns
corrupted images in [0, 1], with the published CIFAR-10-C severity parameters (``make_cifar_c.py``). Ten of the
fifteen types are here; the other five need what is not at hand: glass blur swaps pixels one after another (a
sequential process with no batched equivalent that keeps its statistics), motion blur and snow use ImageMagick's
motion-blur kernel, frost blends in six photographs of frost, and elastic transform is not written yet.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F

GAUSSIAN_NOISE = [0.04, 0.06, 0.08, 0.09, 0.10]  # noise std
SHOT_NOISE = [500, 250, 100, 75, 50]  # photons per unit intensity (Poisson rate)
IMPULSE_NOISE = [0.01, 0.02, 0.03, 0.05, 0.07]  # share of values set to 0 or 1 (salt and pepper)
DEFOCUS_BLUR = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)]  # disk radius, anti-alias sigma
ZOOM_BLUR = [0.06, 0.11, 0.16, 0.21, 0.26]  # zoom factors 1, 1.01, ... up to (not including) 1 + this
FOG = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)]  # fog strength, fractal roughness decay
BRIGHTNESS = [0.05, 0.1, 0.15, 0.2, 0.3]  # added to the HSV value
CONTRAST = [0.75, 0.5, 0.4, 0.3, 0.15]  # deviations from the channel mean scaled by this
PIXELATE = [0.95, 0.9, 0.85, 0.75, 0.65]  # box-downscale to this fraction of the size, then back
JPEG_QUALITY = [80, 65, 58, 50, 40]


def gaussian_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=g, device=x.device) * GAUSSIAN_NOISE[severity - 1]
    return (x + noise).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    rate = SHOT_NOISE[severity - 1]
    return (torch.poisson(x * rate, generator=g) / rate).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    u = torch.rand(x.shape, generator=g, device=x.device)
    amount = IMPULSE_NOISE[severity - 1]
    salt = torch.rand(x.shape, generator=g, device=x.device) < 0.5
    return torch.where(u < amount, salt.to(x.dtype), x)


def _depthwise(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each channel with ``kernel`` (k, k), borders reflected without repeating the edge (OpenCV's
    default, BORDER_REFLECT_101)."""
    k = kernel.shape[-1]
    channels = x.shape[1]
    weight = kernel.to(x)[None, None].expand(channels, 1, k, k)
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), weight, groups=channels)


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """A disk of ``radius`` on a 17x17 grid, normalised, then smoothed by a 3x3 Gaussian (anti-aliasing)."""
    r = torch.arange(-8, 9, dtype=torch.float64)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).double()
    disk = disk / disk.sum()
    smooth = gaussian_kernel(3, alias_blur)
    return _depthwise(disk[None, None], smooth)[0, 0].float()  # (the disk's zero border reflects as zeros)


def defocus_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    radius, alias = DEFOCUS_BLUR[severity - 1]
    return _depthwise(x, disk_kernel(radius, alias)).clamp(0, 1)


def _clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre by ``factor`` (linear interpolation), keeping the size."""
    h = x.shape[-1]
    crop = math.ceil(h / factor)
    top = (h - crop) // 2
    size = round(crop * factor)
    zoomed = F.interpolate(x[..., top:top + crop, top:top + crop], size=(size, size), mode="bilinear",
                           align_corners=True)
    trim = (size - h) // 2
    return zoomed[..., trim:trim + h, trim:trim + h]


def zoom_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    factors = np.arange(1, 1 + ZOOM_BLUR[severity - 1], 0.01)
    out = x + sum(_clipped_zoom(x, float(f)) for f in factors)
    return (out / (len(factors) + 1)).clamp(0, 1)


def plasma_fractal(batch: int, size: int, decay: float, g: torch.Generator) -> torch.Tensor:
    """(batch, size, size) diamond-square height maps in [0, 1] (``size`` a power of two), as CIFAR-10-C's fog."""
    maps = torch.zeros(batch, size, size, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:  # the mean of 4 neighbours plus noise of wibble^2 amplitude
        return a / 4 + wibble * wibble * (torch.rand(a.shape, generator=g, dtype=torch.float64) * 2 - 1)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0:size:step, 0:size:step]
        square = corners + corners.roll(-1, 1)
        square = square + square.roll(-1, 2)
        maps[:, half:size:step, half:size:step] = wibbled(square)
        centres = maps[:, half:size:step, half:size:step]
        corners = maps[:, 0:size:step, 0:size:step]
        maps[:, 0:size:step, half:size:step] = wibbled(centres + centres.roll(1, 1) + corners + corners.roll(-1, 2))
        maps[:, half:size:step, 0:size:step] = wibbled(centres + centres.roll(1, 2) + corners + corners.roll(-1, 1))
        step, wibble = half, wibble / decay
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values.view(-1, 1, 1), flat.max(1).values.view(-1, 1, 1)
    return ((maps - lo) / (hi - lo)).float()


def fog(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    strength, decay = FOG[severity - 1]
    h, w = x.shape[-2:]
    size = 1 << max(5, math.ceil(math.log2(max(h, w))))
    layer = plasma_fractal(len(x), size, decay, g)[:, None, :h, :w].to(x.device)
    top = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    return ((x + strength * layer) * top / (top + strength)).clamp(0, 1)


def brightness(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """HSV value + c with hue and saturation kept: every channel scales by V'/V (a black pixel becomes grey V')."""
    value = x.amax(1, keepdim=True)
    lifted = (value + BRIGHTNESS[severity - 1]).clamp(max=1)
    return torch.where(value > 0, x * lifted / value.clamp_min(1e-12), lifted.expand_as(x)).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * CONTRAST[severity - 1] + mean).clamp(0, 1)


def _per_image_pil(x: torch.Tensor, fn) -> torch.Tensor:
    from PIL import Image

    out = []
    for image in (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy():
        pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
        array = np.asarray(fn(pil), dtype=np.float32).reshape(image.shape)
        out.append(torch.from_numpy(array).permute(2, 0, 1))
    return (torch.stack(out) / 255).to(x.device)


def pixelate(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Box-filter down to ``c`` x the size and back (Pillow's BOX, as CIFAR-10-C)."""
    from PIL import Image

    c = PIXELATE[severity - 1]

    def box(img):
        small = img.resize((int(img.width * c), int(img.height * c)), Image.BOX)
        return small.resize(img.size, Image.BOX)

    return _per_image_pil(x, box)


def jpeg_compression(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Encoded and decoded as JPEG at the severity's quality (Pillow)."""
    from PIL import Image

    quality = JPEG_QUALITY[severity - 1]

    def jpeg(img):
        buffer = io.BytesIO()
        img.save(buffer, "JPEG", quality=quality)
        return Image.open(buffer).convert(img.mode)

    return _per_image_pil(x, jpeg)


CORRUPTIONS = {f.__name__: f for f in (gaussian_noise, shot_noise, impulse_noise, defocus_blur, zoom_blur, fog,
                                       brightness, contrast, pixelate, jpeg_compression)}
MISSING = {"glass_blur": "sequential pixel swaps", "motion_blur": "ImageMagick's motion-blur kernel",
           "snow": "ImageMagick's motion-blur kernel", "frost": "the frost photographs",
           "elastic_transform": "not written yet"}


def corrupt(x: torch.Tensor, name: str, severity: int, g: torch.Generator) -> torch.Tensor:
    """``x`` (float [0, 1]) with corruption ``name`` at ``severity`` (1-5), quantised to 8 bits as CIFAR-10-C."""
    return (CORRUPTIONS[name](x, severity, g) * 255).round() / 255
