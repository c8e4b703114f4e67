"""Which images form each batch: shuffled or in order, whole global batches, this process's share of each."""

from __future__ import annotations

from collections.abc import Iterator

import torch

KEEP_SHARE = 0.02  # a last partial training batch holding this share of the images or more is kept


class BatchSampler:
    """Index batches over ``n`` images.

    Data parallel: every process draws the same global batch of ``world_size x batch_size`` images (same seed,
    same draws) and keeps its own slice (``shard``), so N processes see what one would at N x B. Training drops
    the last partial batch when it is a small share of the data (under ``KEEP_SHARE``) or a single image
    (BatchNorm cannot use a batch of one), and always under data parallelism (equal shards); otherwise, on small
    data sets, it keeps it, so every image is seen every epoch. Evaluation keeps every image.

    ``weights`` (one per image): draw each epoch's n positions with replacement in proportion to them instead of
    a permutation (class-balanced sampling: weight 1 / the image's class size).
    """

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, generator: torch.Generator, rank: int = 0,
                 world_size: int = 1, weights: torch.Tensor | None = None) -> None:
        self.n = n
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.weights = weights
        self.global_batch = batch_size * world_size
        self.shard = slice(rank * batch_size, (rank + 1) * batch_size)  # this process's part of a global batch
        rest = n % self.global_batch
        keep = world_size == 1 and rest >= 2 and rest >= KEEP_SHARE * n
        self.drop_last = shuffle and n >= self.global_batch and not keep
        if world_size > 1 and not self.drop_last:
            raise ValueError(f"{n} training images are fewer than one global batch ({world_size} x {batch_size})")

    def __len__(self) -> int:
        return self.n // self.global_batch if self.drop_last else -(-self.n // self.global_batch)

    @property
    def images_per_pass(self) -> int:
        """Images this process sees per pass."""
        return len(self) * self.batch_size if self.drop_last else self.n

    def __iter__(self) -> Iterator[torch.Tensor | slice]:
        """The positions of each global batch: shuffled by the generator, or in order (as slices)."""
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=self.generator)
        elif self.shuffle:
            order = torch.randperm(self.n, device=self.generator.device, generator=self.generator)
        else:
            order = None
        for i in range(len(self)):
            sl = slice(i * self.global_batch, (i + 1) * self.global_batch)
            yield sl if order is None else order[sl]
