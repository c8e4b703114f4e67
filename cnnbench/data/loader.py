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
        padding_mode: str = "constant",
        hflip: bool = False,
        alternate_flip: bool = False,
        cutout: int = 0,
        seed: int = 0,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        # (a StreamLoader's images are files, decoded per batch)
        self.images = data.images.to(device) if isinstance(data.images, torch.Tensor) else data.images
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.train = train
        self.crop_padding, self.padding_mode, self.hflip, self.cutout = crop_padding, padding_mode, hflip, cutout
        self.channels_last = channels_last
        self.mean, self.std = list(mean), list(std)
        # x_norm = (x / 255 - mean) / std = x * scale + shift, one fused op per batch
        std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -mean_t / std_t
        self.generator = torch.Generator(device=device).manual_seed(seed)
        # Alternating flip (airbench): each image is mirrored in every other epoch, starting at random, so that
        # any two consecutive epochs show both versions (a coin flip per epoch repeats one half the time).
        self.alternate_flip = hflip and alternate_flip
        self.epoch = 0
        if self.alternate_flip:
            self.flip_first = torch.rand(len(self.labels), generator=self.generator, device=device) < 0.5
        # Data parallel: every process draws the same global batch of world_size x batch_size images (same
        # seed, same augmentation draws) and keeps its own slice, so N processes see what one would at N x B.
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.shard = slice(rank * batch_size, (rank + 1) * batch_size)  # this process's part of a global batch
        # Training drops the last partial batch (BatchNorm cannot use a batch of one); evaluation keeps all.
        self.drop_last = train and len(self.labels) >= self.global_batch
        if world_size > 1 and not self.drop_last:
            raise ValueError(f"{len(self.labels)} training images are fewer than one global batch "
                             f"({world_size} x {batch_size})")

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)

    @property
    def num_images(self) -> int:
        """Images this process sees per pass."""
        return len(self) * self.batch_size if self.drop_last else len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        """The epoch about to be drawn (0-based; the alternating flip depends on it)."""
        self.epoch = epoch

    def _global_batches(self) -> Iterator[torch.Tensor | slice]:
        """The indices of each global batch: shuffled by the generator when training, in order otherwise."""
        n = len(self.labels)
        order = torch.randperm(n, device=self.device, generator=self.generator) if self.train else None
        for i in range(len(self)):
            sl = slice(i * self.global_batch, (i + 1) * self.global_batch)
            yield sl if order is None else order[sl]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self._global_batches():
            x, y = self.images[idx], self.labels[idx]
            if self.train:
                x = self.augment(x, idx)
            if self.world_size > 1:
                x, y = x[self.shard], y[self.shard]
            yield self.normalize(x), y

    def augment(self, x: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """The configured random crop, flip and cutout of a uint8 batch (``idx``: the images' positions in the
        split, which the alternating flip needs)."""
        if self.crop_padding:
            x = augment.random_crop(x, self.crop_padding, self.generator, self.padding_mode)
        if self.alternate_flip and idx is not None:
            x = augment.flip_where(x, self.flip_first[idx] ^ (self.epoch % 2 == 1))
        elif self.hflip:
            x = augment.hflip(x, self.generator)
        if self.cutout:
            x = augment.cutout(x, self.cutout, self.generator)
        return x

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Augment (training only) and normalise a uint8 batch."""
        return self.normalize(self.augment(x) if self.train else x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float, (x / 255 - mean) / std, in the loader's memory format."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return torch.addcmul(self.shift, x.float(), self.scale).contiguous(memory_format=memory_format)
