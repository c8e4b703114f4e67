"""ImageFolders too large to hold in memory: decoded per batch by DataLoader workers, augmented on the device.

Above ``data.max_memory_gb`` the images stay files. A ``FileImageSet`` stands in for an ``ImageSet`` (indexing
decodes just the images asked for), and a ``StreamLoader`` replaces the ``DeviceLoader``: torch's DataLoader
decodes batches in ``data.num_workers`` processes into pinned memory, the copy to the device is non-blocking,
and crop/flip/cutout/normalisation are the same batched ops on the device as for in-memory data.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from cnnbench.data.loader import DeviceLoader
from cnnbench.data.sources import read_image


class FileImages:
    """Image files as a lazily decoded uint8 (N, C, S, S) tensor: ``images[index]`` decodes those only."""

    def __init__(self, paths: list[str], channels: int, size: int) -> None:
        self.paths, self.channels, self.size = paths, channels, size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.channels, self.size, self.size)

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, index: torch.Tensor | slice) -> FileImages:
        paths = self.paths[index] if isinstance(index, slice) else [self.paths[i] for i in index.tolist()]
        return FileImages(paths, self.channels, self.size)

    def __getitem__(self, index: torch.Tensor | slice | int) -> torch.Tensor:
        if isinstance(index, int) or (isinstance(index, torch.Tensor) and index.ndim == 0):
            return read_image(self.paths[int(index)], self.channels, self.size)
        return torch.stack([read_image(p, self.channels, self.size) for p in self.select(index).paths])


class FileImageSet:
    """An ``ImageSet`` whose images stay on disk."""

    def __init__(self, images: FileImages, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> FileImageSet:
        return FileImageSet(self.images.select(index), self.labels[index])


class _Decode(Dataset):
    def __init__(self, images: FileImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


class StreamLoader(DeviceLoader):
    """A DeviceLoader over image files: the same batches, order and augmentation, decoded on the fly."""

    def __init__(self, data: FileImageSet, batch_size: int, device: torch.device, mean: list[float],
                 std: list[float], *, num_workers: int = 2, **kwargs) -> None:
        super().__init__(data, batch_size, device, mean, std, **kwargs)  # self.images: the FileImages
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        positions = torch.arange(len(self.labels), device=self.device)
        batches = [positions[idx] for idx in self._global_batches()]
        if self.world_size > 1:  # decode only this process's share (its augmentation is drawn for the share)
            batches = [b[self.shard] for b in batches]
        loader = DataLoader(_Decode(self.images), batch_sampler=[b.tolist() for b in batches],
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        for idx, x in zip(batches, loader, strict=True):
            x = x.to(self.device, non_blocking=True)
            if self.train:
                x = self.augment(x, idx)
            yield self.normalize(x), self.labels[idx]
