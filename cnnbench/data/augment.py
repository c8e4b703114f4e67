"""Batched augmentation of uint8 image batches on their own device: no per-image Python work.

Each op draws one random choice per image, matching the torchvision transform it replaces:
``random_crop`` = RandomCrop(size, padding=p, padding_mode=m) (m: constant = zero fill, edge or reflect),
``hflip`` = RandomHorizontalFlip(0.5),
``auto`` = TrivialAugmentWide() or RandAugment(num_ops, magnitude) (``cnnbench.data.autoaugment``),
``cutout`` = a zeroed square of side s centred uniformly in the image (DeVries & Taylor 2017),
``brightness_contrast`` = a shift and a scale per image of the normalised pixels,
``random_erasing`` = RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0) after Normalize, as in
torchvision's and timm's recipes (Zhong et al. 2020).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnbench.config.schema import PAD_MODES, AugmentConfig
from cnnbench.data.autoaugment import AutoAugment


class Augmenter:
    """The configured crop, flip and cutout of uint8 batches, drawn from ``generator``.

    The alternating flip (airbench) mirrors each image in every other epoch, starting at random, so that any
    two consecutive epochs show both versions (a coin flip per epoch repeats one half the time); it needs each
    image's position in the split and the epoch."""

    def __init__(self, cfg: AugmentConfig, generator: torch.Generator, num_images: int) -> None:
        self.cfg, self.generator = cfg, generator
        self.flip_first = None
        self.auto = AutoAugment(cfg.auto, generator, bins=cfg.auto_bins, magnitude=cfg.auto_magnitude,
                                num_ops=cfg.auto_num_ops) if cfg.auto else None
        if cfg.hflip and cfg.alternate_flip:
            self.flip_first = torch.rand(num_images, generator=generator, device=generator.device) < 0.5

    def __call__(self, x: torch.Tensor, idx: torch.Tensor, epoch: int) -> torch.Tensor:
        """Augment the uint8 batch ``x`` of the images at positions ``idx`` in epoch ``epoch`` (0-based)."""
        cfg, g = self.cfg, self.generator
        if cfg.crop_padding:
            x = random_crop(x, cfg.crop_padding, g, cfg.padding_mode)
        if self.flip_first is not None:
            x = flip_where(x, self.flip_first[idx] ^ (epoch % 2 == 1))
        elif cfg.hflip:
            x = hflip(x, g)
        if self.auto is not None:
            x = self.auto(x)
        if cfg.cutout:
            x = cutout(x, cfg.cutout, g)
        return x

    def after_normalize(self, x: torch.Tensor) -> torch.Tensor:
        """What acts on the normalised float batch: brightness and contrast, then random erasing (0 there is the
        mean colour)."""
        if self.cfg.brightness or self.cfg.contrast:
            x = brightness_contrast(x, self.cfg.brightness, self.cfg.contrast, self.generator)
        if self.cfg.erasing_prob:
            x = random_erasing(x, self.cfg.erasing_prob, self.generator)
        return x


def brightness_contrast(x: torch.Tensor, brightness: float, contrast: float, generator: torch.Generator
                        ) -> torch.Tensor:
    """Normalised images (B, C, H, W) each shifted by U(-brightness, brightness), then scaled by
    U(1 - contrast, 1 + contrast): on normalised pixels the dataset's mean colour is 0, so the scale stretches
    or flattens contrast about it (the colour jitter of hiverge's CIFAR-10 speedrun record)."""
    shape = (x.shape[0], 1, 1, 1)
    shift = (torch.rand(shape, generator=generator, device=x.device) * 2 - 1) * brightness
    scale = 1 + (torch.rand(shape, generator=generator, device=x.device) * 2 - 1) * contrast
    return ((x + shift.to(x.dtype)) * scale.to(x.dtype))


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator, padding_mode: str = "constant"
                ) -> torch.Tensor:
    """Pad by ``padding`` (zeros, edge pixels or reflection) and crop back to (H, W) at a random offset per
    image. x: (B, C, H, W)."""
    b, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding), mode=PAD_MODES[padding_mode])  # (B, C, H+2p, W+2p)
    dy = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), generator=generator, device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[batch, chan, rows, cols]


def hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 0.5."""
    return flip_where(x, torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5)


def flip_where(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images whose entry of the bool vector ``flip`` (B,) is true."""
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a size x size square (clipped at the border) centred at a random pixel of each image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1), generator=generator, device=x.device)
    cx = torch.randint(0, w, (b, 1), generator=generator, device=x.device)
    ys = torch.arange(h, device=x.device) - cy + size // 2  # (B, H): inside when 0 <= ys < size
    xs = torch.arange(w, device=x.device) - cx + size // 2
    inside = ((ys >= 0) & (ys < size))[:, :, None] & ((xs >= 0) & (xs < size))[:, None, :]  # (B, H, W)
    return x.masked_fill(inside[:, None], 0)


def random_erasing(x: torch.Tensor, p: float, generator: torch.Generator, scale: tuple[float, float] = (0.02, 0.33),
                   ratio: tuple[float, float] = (0.3, 3.3), attempts: int = 10) -> torch.Tensor:
    """Set a random rectangle of each image to 0 with probability ``p``, drawn as torchvision's RandomErasing
    does: up to ``attempts`` tries of an area fraction uniform in ``scale`` and an aspect log-uniform in
    ``ratio``; the first that fits inside the image is erased (none fits: the image is left alone)."""
    b, _, h, w = x.shape
    dev = x.device
    erase = torch.rand(b, generator=generator, device=dev) < p
    area = h * w * torch.empty(b, attempts, device=dev).uniform_(*scale, generator=generator)
    aspect = torch.empty(b, attempts, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                          generator=generator).exp()
    eh, ew = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()  # (B, attempts)
    fits = (eh < h) & (ew < w)
    first = fits.int().argmax(1, keepdim=True)  # the first attempt that fits
    erase &= fits.any(1)
    eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)  # (B,)
    top = (torch.rand(b, generator=generator, device=dev) * (h - eh + 1)).long()
    left = (torch.rand(b, generator=generator, device=dev) * (w - ew + 1)).long()
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (B, W)
    inside = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # (B, H, W)
    return x.masked_fill(inside[:, None], 0.0)
