"""ImageFolders too large to hold in memory: decoded per batch by DataLoader workers, augmented on the device.

Above ``data.max_memory_gb`` the images stay files (a ``FileImageSet``). A ``StreamLoader`` serves the same
batches as a ``DeviceLoader`` would: torch's DataLoader decodes them in ``data.num_workers`` processes into
pinned memory, the copy to the device is non-blocking, and crop/flip/cutout/normalisation are the same batched
ops on the device as for in-memory data.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from cnnbench.data.images import FileImageSet
from cnnbench.data.loader import Batch, DeviceLoader
from cnnbench.errors import CnnbenchError


class _Decode(Dataset):
    def __init__(self, data: FileImageSet) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data.read(self.data.paths[i])


class StreamLoader(DeviceLoader):
    """A DeviceLoader over image files: the same batches, order and augmentation, decoded on the fly.

    Data parallel: each process decodes only its share, and its augmentation is drawn for that share (the
    in-memory loader draws for the global batch)."""

    def __init__(self, data: FileImageSet, batch_size: int, device: torch.device, mean: list[float],
                 std: list[float], *, num_workers: int = 2, **kwargs) -> None:
        super().__init__(data, batch_size, device, mean, std, **kwargs)
        self.num_workers = num_workers

    def __iter__(self) -> Iterator[Batch]:
        positions = torch.arange(len(self.data), device=self.device)
        batches = [positions[idx] for idx in self.sampler]
        if self.world_size > 1:
            batches = [b[self.sampler.shard] for b in batches]
        loader = DataLoader(_Decode(self.data), batch_sampler=[b.tolist() for b in batches],
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        try:
            for idx, x in zip(batches, loader, strict=True):
                yield self._finish(x.to(self.device, non_blocking=True), idx, shard=False)  # (sharded above)
        except CnnbenchError as e:  # a worker's error arrives with its traceback in the message: keep its line
            raise CnnbenchError(str(e).strip().splitlines()[-1].removeprefix("cnnbench.errors.CnnbenchError: ")
                                ) from None
