"""Decoding one image file into a uint8 tensor, as torchvision's ImageFolder loader would see it, with what
photographs need beyond it: the EXIF orientation applied, and 16-bit images scaled to 8 bits (not clipped)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnbench.errors import CnnbenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DECODE_VERSION = 2  # part of every cache key: a change in decoding rebuilds the caches made before it
EXIF_ORIENTATION = 0x0112
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit (and 32-bit integer) grey


def to_8bit(img):
    """A Pillow image upright (its EXIF orientation applied) and, if it is 16-bit grey, scaled to 8 bits:
    65535 becomes 255 (Pillow's own convert would clip everything above 255 to white)."""
    from PIL import Image, ImageOps

    if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode in WIDE_MODES:
        values = np.asarray(img, dtype=np.float64)
        if img.mode != "I" or values.max(initial=0) > 255:  # an "I" image holding 8-bit values stays as it is
            values = values / 257.0
        img = Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")
    return img


def read_image(path: str | Path, channels: int, size: int | None = None) -> torch.Tensor:
    """One image file as uint8 (C, size, size): opened with Pillow, made upright and 8-bit (``to_8bit``),
    converted like torchvision's ``ImageFolder`` loader does (palette and grey images to RGB), resized with
    Pillow's bilinear filter (what ``transforms.Resize`` does to PIL images). ``size`` None keeps the image's
    width. An unreadable file is a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = to_8bit(img).convert("RGB" if channels == 3 else "L")
            size = size or img.width
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8).reshape(size, size, channels)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as e:
        raise CnnbenchError(f"cannot decode image {path}: {e}; remove or replace it") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
