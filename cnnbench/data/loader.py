"""Batches drawn from a uint8 tensor that lives on the training device.

The whole split is moved to the device once; every batch is one index, one batched augmentation and one
fused normalisation. This replaces a DataLoader with per-image PIL transforms, which leaves the accelerator
(or the CPU's vector units) waiting on Python.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cnnbench.data import augment
from cnnbench.data.sources import ImageSet


class DeviceLoader:
    """Iterate (images float (B, C, H, W) normalised, labels int64 (B,)) over an ImageSet on ``device``."""

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        device: torch.device,
        mean: list[float],
        std: list[float],
        *,
        train: bool = False,
        crop_padding: int = 0,
        hflip: bool = False,
        cutout: int = 0,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.crop_padding, self.hflip, self.cutout = crop_padding, hflip, cutout
        self.channels_last = channels_last
        self.mean, self.std = list(mean), list(std)
        # x_norm = (x / 255 - mean) / std = x * scale + shift, one fused op per batch
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # Training drops the last partial batch (BatchNorm cannot use a batch of one); evaluation keeps all.
        self.drop_last = train and len(self.labels) >= batch_size

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, device=self.device, generator=self.generator) if self.train else None
        for i in range(len(self)):
            sl = slice(i * self.batch_size, (i + 1) * self.batch_size)
            if order is None:
                x, y = self.images[sl], self.labels[sl]
            else:
                idx = order[sl]
                x, y = self.images[idx], self.labels[idx]
            yield self.transform(x), y

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Augment (training only) and normalise a uint8 batch."""
        if self.train:
            if self.crop_padding:
                x = augment.random_crop(x, self.crop_padding, self.generator)
            if self.hflip:
                x = augment.hflip(x, self.generator)
            if self.cutout:
                x = augment.cutout(x, self.cutout, self.generator)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return torch.addcmul(self.shift, x.float(), self.scale).contiguous(memory_format=memory_format)
