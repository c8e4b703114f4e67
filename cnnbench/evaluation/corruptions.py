"""Common corruptions (Hendrycks & Dietterich, ICLR 2019: CIFAR-10-C), applied batched to (B, C, H, W) images.

Each function takes float images in [0, 1] on any device, a severity 1-5 and a torch Generator, and returns
corrupted images in [0, 1], with the published CIFAR-10-C severity parameters (``make_cifar_c.py``). Fourteen of
the fifteen types are here; frost is not, since it blends in six photographs of frost that are not at hand.
Motion blur (and the snow's streaks) follow ImageMagick's motion-blur kernel, which CIFAR-10-C called: a
one-sided line of Gaussian weights at a random angle.
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
PIXELATE = [0.95, 0.9, 0.85, 0.75, 0.65]
GLASS_BLUR = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]  # sigma, max shift, rounds
MOTION_BLUR = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)]  # ImageMagick radius, sigma; angle in [-45, 45)
SNOW = [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)]  # flake mean, std, zoom,
# threshold, blur radius, blur sigma, image weight
ELASTIC = [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)]  # x size:
# displacement scale, its smoothing sigma, affine jitter  # box-downscale to this fraction of the size, then back
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


def _depthwise(x: torch.Tensor, kernel: torch.Tensor, border: str = "reflect") -> torch.Tensor:
    """Convolve each channel with ``kernel`` (k, k). Borders: "reflect" mirrors without repeating the edge
    (OpenCV's default, BORDER_REFLECT_101), "replicate" repeats it (scikit-image's "nearest")."""
    k = kernel.shape[-1]
    channels = x.shape[1]
    weight = kernel.to(x)[None, None].expand(channels, 1, k, k)
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode=border), weight, groups=channels)


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


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """scikit-image's ``gaussian`` (truncate 4, edges repeated) per channel."""
    radius = int(4 * sigma + 0.5)
    if radius == 0:
        return x
    return _depthwise(x, gaussian_kernel(2 * radius + 1, sigma), border="replicate")


def glass_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Blur, then swap every pixel with a random neighbour, sweeping from the bottom-right corner (the
    published sequential order, each step done for the whole batch at once), then blur again."""
    sigma, delta, rounds = GLASS_BLUR[severity - 1]
    x = (_gaussian_blur(x, sigma) * 255 + 1e-4).floor().clamp(0, 255) / 255  # (np.uint8 truncates; the 1e-4
    # keeps a value of exactly k/255 at k)
    b, _, h, w = x.shape
    rows = torch.arange(b, device=x.device)
    for _ in range(rounds):
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                dx, dy = torch.randint(-delta, delta, (2, b), generator=g, device=x.device)  # (high exclusive)
                here, there = x[rows, :, i, j].clone(), x[rows, :, i + dy, j + dx].clone()
                x[rows, :, i, j], x[rows, :, i + dy, j + dx] = there, here
    return _gaussian_blur(x, sigma).clamp(0, 1)


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's MotionBlurImage: 2 ceil(radius) + 1 Gaussian weights exp(-i^2 / 2 sigma^2) (normalised) on
    pixels i steps along ``angles`` (degrees, one per image), edges repeated."""
    width = int(2 * math.ceil(radius) + 1)
    steps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-(steps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).tolist()
    b, _, h, w = x.shape
    theta = angles.double().cpu() * math.pi / 180
    out = torch.zeros_like(x)
    rows = torch.arange(b, device=x.device)[:, None, None]
    for i, weight in enumerate(weights):
        dx = torch.ceil(i * torch.cos(theta) - 0.5).long().to(x.device)
        dy = torch.ceil(i * torch.sin(theta) - 0.5).long().to(x.device)
        ys = (torch.arange(h, device=x.device)[None, :, None] + dy[:, None, None]).clamp(0, h - 1)
        xs = (torch.arange(w, device=x.device)[None, None, :] + dx[:, None, None]).clamp(0, w - 1)
        out += weight * x[rows, :, ys, xs].permute(0, 3, 1, 2)
    return out


def motion_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    radius, sigma = MOTION_BLUR[severity - 1]
    angles = torch.rand(len(x), generator=g, device=x.device) * 90 - 45
    return _motion_blur((x * 255).round() / 255, radius, sigma, angles).clamp(0, 1)


def snow(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Random flakes (thresholded noise, zoomed), streaked by motion blur, added twice (the second turned 180
    degrees) to an image brightened towards its grey level."""
    mean, std, zoom, threshold, radius, sigma, keep = SNOW[severity - 1]
    b, c, h, w = x.shape
    flakes = torch.randn((b, 1, h, w), generator=g, device=x.device) * std + mean
    flakes = _clipped_zoom(flakes, zoom)
    flakes = torch.where(flakes < threshold, torch.zeros_like(flakes), flakes)
    flakes = (flakes.clamp(0, 1) * 255).floor() / 255  # (stored as an 8-bit image before the blur)
    angles = torch.rand(b, generator=g, device=x.device) * 90 - 135
    flakes = (_motion_blur(flakes, radius, sigma, angles) * 255).round() / 255
    grey = x if c == 1 else (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = keep * x + (1 - keep) * torch.maximum(x, grey * 1.5 + 0.5)
    return (x + flakes + flakes.flip(-1, -2)).clamp(0, 1)


def _symmetric_blur(noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """scikit-image's ``gaussian`` with mode 'reflect' (edges mirrored with repetition), truncate 3."""
    radius = int(3 * sigma + 0.5)
    if radius == 0 or sigma == 0:
        return noise
    k = 2 * radius + 1
    padded = torch.cat([noise[..., :radius, :].flip(-2), noise, noise[..., -radius:, :].flip(-2)], -2)
    padded = torch.cat([padded[..., :radius].flip(-1), padded, padded[..., -radius:].flip(-1)], -1)
    return F.conv2d(padded, gaussian_kernel(k, sigma).to(noise)[None, None])


def elastic_transform(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """A random affine warp of three points around the centre (borders mirrored), then a smooth random
    displacement field (bilinear, borders mirrored), as CIFAR-10-C's with its parameters scaled by the size."""
    scale, smooth, jitter = (v * x.shape[-1] for v in ELASTIC[severity - 1])
    b, _, h, w = x.shape
    centre, side = torch.tensor([h // 2, w // 2], dtype=torch.float64), min(h, w) // 3
    src = torch.stack([centre + side, torch.stack([centre[0] + side, centre[1] - side]), centre - side])  # (3, 2)
    dst = src + (torch.rand((b, 3, 2), generator=g, device=x.device).double().cpu() * 2 - 1) * jitter
    # the affine map src -> dst as a 3x3 matrix per image; the output samples the input at its inverse
    ones = torch.ones(3, 1, dtype=torch.float64)
    forward = torch.linalg.solve(torch.cat([src, ones], 1)[None].expand(b, 3, 3), dst).transpose(1, 2)  # (b, 2, 3)
    full = torch.cat([forward, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(b, 1, 3)], 1)
    inverse = torch.linalg.inv(full)[:, :2]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1).view(1, -1, 3)  # (x, y, 1): OpenCV's order
    source = (points @ inverse.transpose(1, 2)).view(b, h, w, 2)
    grid = torch.stack([source[..., 0] / (w - 1), source[..., 1] / (h - 1)], -1) * 2 - 1
    x = F.grid_sample(x, grid.to(x), mode="bilinear", padding_mode="reflection", align_corners=True)
    noise = torch.rand((b, 2, h, w), generator=g, device=x.device) * 2 - 1
    shift = torch.cat([_symmetric_blur(noise[:, i:i + 1], smooth) for i in range(2)], 1) * scale  # (dx, dy)
    grid = torch.stack([(xs.to(x) + shift[:, 0] + 0.5) / w, (ys.to(x) + shift[:, 1] + 0.5) / h], -1) * 2 - 1
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False).clamp(0, 1)


CORRUPTIONS = {f.__name__: f for f in (gaussian_noise, shot_noise, impulse_noise, defocus_blur, glass_blur,
                                       motion_blur, zoom_blur, snow, fog, brightness, contrast, elastic_transform,
                                       pixelate, jpeg_compression)}
NOT_AT_HAND = {"frost": "blends in six photographs of frost, not at hand"}


def corrupt(x: torch.Tensor, name: str, severity: int, g: torch.Generator) -> torch.Tensor:
    """``x`` (float [0, 1]) with corruption ``name`` at ``severity`` (1-5), quantised to 8 bits as CIFAR-10-C."""
    return (CORRUPTIONS[name](x, severity, g) * 255).round() / 255
