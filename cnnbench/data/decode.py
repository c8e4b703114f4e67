"""Decoding one image file into a uint8 tensor, as torchvision's ImageFolder loader would see it, with what
photographs need beyond it: the EXIF orientation applied, and 16-bit images scaled to 8 bits (not clipped).

A ``Resize`` says what size the decoded image is stored at, in one of three ways (``cnnbench.data.pipeline``
chooses): ``square`` (CIFAR-style data: resized to a square, aspect not kept), ``fit`` (photos for training:
the longer side to ``size``, aspect kept, at the top-left of a zero square canvas, so that a random crop can
see the whole photo) and ``centre`` (photos for evaluation: torchvision's ``Resize(resize)`` then
``CenterCrop(size)``, by torchvision's own functions, so the pixels are those of ``weights.transforms()``).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import cnnbench.data.members as members
from cnnbench.errors import CnnbenchError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DECODE_VERSION = 3  # part of every cache key: a change in decoding rebuilds the caches made before it
EXIF_ORIENTATION = 0x0112
TURNED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16-bit (and 32-bit integer) grey


@dataclass(frozen=True)
class Resize:
    """How a decoded image becomes a stored size x size square (see the module docstring)."""

    mode: str = "square"  # square | fit | centre
    size: int | None = None  # the stored side; square with None keeps the image's width
    resize: int | None = None  # centre: the shorter side before the centre crop
    interpolation: str = "bilinear"


def fit_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image scaled so that its longer side is ``size``, aspect kept."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


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


def resize_to(img, spec: Resize):
    """The upright 8-bit image ``img`` (a Pillow image, or a uint8 (C, H, W) tensor) at the size ``spec`` says
    (the canvas of ``fit`` not yet added), by torchvision's functions for either kind."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    mode = InterpolationMode(spec.interpolation)
    if spec.mode == "centre":  # exactly torchvision's Resize(resize) + CenterCrop(size)
        return TF.center_crop(TF.resize(img, [spec.resize], interpolation=mode, antialias=True),
                              [spec.size, spec.size])
    height, width = TF.get_size(img)
    size = spec.size or width
    shape = fit_shape(height, width, size) if spec.mode == "fit" else (size, size)
    return img if (height, width) == tuple(shape) else TF.resize(img, list(shape), interpolation=mode, antialias=True)


@contextmanager
def _opened(path: str | Path):
    """The Pillow image of ``path`` (a file, or an image inside a container: ``cnnbench.data.members``); an
    unreadable one is a one-line error naming it."""
    from PIL import Image, UnidentifiedImageError

    member = members.is_member(path)
    if not member and not os.path.isfile(path):  # (a FIFO or device would block the read for ever)
        what = "not a regular file" if os.path.exists(path) else "no such file"
        raise CnnbenchError(f"cannot decode image {path}: {what}; give an image file")
    try:
        with Image.open(members.opened(path) if member else path) as img:
            yield img
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as e:
        raise CnnbenchError(f"cannot decode image {path}: {e}; remove or replace it") from None


def decode(path: str | Path, channels: int, spec: Resize) -> np.ndarray:
    """One image file as a uint8 array (size, size, C) per ``spec`` (the content of a ``fit`` image at its
    top-left, zeros around it). An unreadable file is a one-line error naming it."""
    with _opened(path) as img:
        img = resize_to(to_8bit(img).convert("RGB" if channels == 3 else "L"), spec)
        array = np.array(img, dtype=np.uint8).reshape(img.height, img.width, channels)  # (a writable copy)
    if spec.mode == "fit":
        canvas = np.zeros((spec.size, spec.size, channels), np.uint8)
        canvas[:array.shape[0], :array.shape[1]] = array
        return canvas
    return array


def probe(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file as decoded upright, from its header (the pixels are not read)."""
    with _opened(path) as img:
        turned = img.getexif().get(EXIF_ORIENTATION, 1) in TURNED
        return (img.width, img.height) if turned else (img.height, img.width)


def read_image(path: str | Path, channels: int, size: int | Resize | None = None) -> torch.Tensor:
    """One image file as uint8 (C, size, size): opened with Pillow, made upright and 8-bit (``to_8bit``),
    converted like torchvision's ``ImageFolder`` loader does (palette and grey images to RGB) and resized as
    ``size`` says (an int: squashed to that square with Pillow's bilinear filter, as ``transforms.Resize((s, s))``
    does; None keeps the image's width)."""
    spec = size if isinstance(size, Resize) else Resize("square", size)
    return torch.from_numpy(decode(path, channels, spec)).permute(2, 0, 1)
