"""Decoding one image file into a uint8 tensor, as torchvision's ImageFolder loader would see it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnbench.errors import CnnbenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def read_image(path: str | Path, channels: int, size: int | None = None) -> torch.Tensor:
    """One image file as uint8 (C, size, size): opened with Pillow, converted like torchvision's ``ImageFolder``
    loader does, resized with Pillow's bilinear filter (what ``transforms.Resize`` does to PIL images).
    ``size`` None keeps the image's width. An unreadable file is a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            size = size or img.width
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8).reshape(size, size, channels)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as e:
        raise CnnbenchError(f"cannot decode image {path}: {e}; remove or replace it") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)
