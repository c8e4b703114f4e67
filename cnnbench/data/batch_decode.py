"""JPEG files decoded in batches by torchvision's ``decode_jpeg`` (nvJPEG on a GPU), then resized on that device
as the Pillow path resizes them (``cnnbench.data.decode.Resize``). A file that is not a JPEG, or that the batch
decoder refuses (CMYK, 12-bit, a truncated file), is decoded by the Pillow path, which names a file that nothing
can read. ``data.decode_device=cuda`` uses it for the one-time decode of a folder; the pixels are within a grey
level or two of Pillow's (another IDCT, and a tensor resize in place of Pillow's).

torchvision 0.29 (the newest this project allows) deprecates its image decoders for TorchCodec's; TorchCodec
releases are tied to one torch release each, which the range of torch versions cnnbench supports rules out for now.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from cnnbench.data.decode import Resize, decode, resize_to
from cnnbench.data.parallel import gather

BATCH = 256  # files per decode_jpeg call: enough to keep the decoder busy, little memory
JPEG_MAGIC = (0xFF, 0xD8, 0xFF)


def is_jpeg(data: torch.Tensor) -> bool:
    """Whether the file's bytes ``data`` (uint8, 1-D) start as a JPEG does, whatever its name."""
    return len(data) > 3 and tuple(data[:3].tolist()) == JPEG_MAGIC


def resized(image: torch.Tensor, spec: Resize) -> torch.Tensor:
    """A decoded uint8 (C, H, W) image at the size ``spec`` says, as ``decode.decode`` makes it with Pillow: the
    content of a ``fit`` image at the top-left of a zero square canvas."""
    image = resize_to(image, spec)
    if spec.mode != "fit":
        return image
    canvas = image.new_zeros((image.shape[0], spec.size, spec.size))
    canvas[:, :image.shape[1], :image.shape[2]] = image
    return canvas


def _decoded(data: list[torch.Tensor], channels: int, device: torch.device) -> list[torch.Tensor | None]:
    """``data`` (JPEG bytes) decoded in one call, upright; where the batch is refused, file by file, with None
    for a file the decoder cannot read."""
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY

    def decoded(what):
        with warnings.catch_warnings():  # (the deprecation: see the module's docstring)
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(what, mode=mode, device=device, apply_exif_orientation=True)

    try:
        return list(decoded(data))
    except RuntimeError:
        out = []
        for one in data:
            try:
                out.append(decoded(one))
            except RuntimeError:
                out.append(None)
        return out


def _bytes(path: str) -> torch.Tensor:
    """The file's bytes; none for what is not a readable regular file (the Pillow path then names the problem)."""
    try:
        data = bytearray(Path(path).read_bytes()) if os.path.isfile(path) else bytearray()
    except OSError:
        data = bytearray()
    return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def _batches(paths: Sequence[str], channels: int, spec: Resize, device: torch.device
             ) -> Iterator[tuple[int, torch.Tensor]]:
    """(first position, uint8 (B, C, size, size) on the CPU) for each batch of ``BATCH`` files of ``paths``."""
    for start in range(0, len(paths), BATCH):
        chunk = list(paths[start:start + BATCH])
        data = [_bytes(p) for p in chunk]
        jpegs = [i for i, d in enumerate(data) if is_jpeg(d)]
        images: list[torch.Tensor | None] = [None] * len(chunk)
        for i, image in zip(jpegs, _decoded([data[i] for i in jpegs], channels, device), strict=True):
            images[i] = image
        yield start, torch.stack([
            resized(image, spec).cpu() if image is not None
            else torch.from_numpy(decode(path, channels, spec)).permute(2, 0, 1)  # Pillow: refused, or not a JPEG
            for path, image in zip(chunk, images, strict=True)])


def decode_batched(paths: Sequence[str], channels: int, spec: Resize, device: torch.device) -> torch.Tensor:
    """Every file of ``paths`` decoded per ``spec``: uint8 (N, C, size, size) on the CPU."""
    return gather(_batches(paths, channels, spec, device), len(paths))
