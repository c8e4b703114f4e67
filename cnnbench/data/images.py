"""Image sets: uint8 images (N, C, H, W) plus int64 labels, held in memory or left as files.

Both kinds answer the same questions: how many images, their labels, a subset, and a batch of images as a
uint8 tensor (``take``). Loaders, splits and subsets never ask which kind they hold, except to choose how to
fetch batches (``streamed``). Photos stored for random resized crops (``cnnbench.data.pipeline``) sit at the
top-left of a zero square canvas; ``sizes`` then holds each one's (height, width) there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cnnbench.data.decode import Resize, read_image

Index = torch.Tensor | slice


@dataclass
class ImageSet:
    """Images as one uint8 tensor (N, C, H, W) and labels as int64 (N,); ``sizes`` int64 (N, 2) where the
    images are canvases (None: every image fills its square)."""

    images: torch.Tensor
    labels: torch.Tensor
    sizes: torch.Tensor | None = None
    streamed = False

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape)

    def subset(self, index: Index) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], None if self.sizes is None else self.sizes[index])

    def take(self, index: Index) -> torch.Tensor:
        """The images at ``index`` (positions or a slice) as uint8 (B, C, H, W)."""
        return self.images[index]


@dataclass
class FileImageSet:
    """Image files decoded on demand to uint8 (C, S, S) as ``spec`` says: for folders too large to hold in
    memory. ``sizes`` as for ``ImageSet`` (known from the files' headers)."""

    paths: list[str]
    labels: torch.Tensor
    channels: int
    spec: Resize
    sizes: torch.Tensor | None = None
    streamed = True

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.paths), self.channels, self.spec.size, self.spec.size)

    def _paths(self, index: Index) -> list[str]:
        return self.paths[index] if isinstance(index, slice) else [self.paths[i] for i in index.tolist()]

    def subset(self, index: Index) -> FileImageSet:
        return FileImageSet(self._paths(index), self.labels[index], self.channels, self.spec,
                            None if self.sizes is None else self.sizes[index])

    def take(self, index: Index) -> torch.Tensor:
        return torch.stack([self.read(p) for p in self._paths(index)])

    def read(self, path: str) -> torch.Tensor:
        return read_image(path, self.channels, self.spec)
