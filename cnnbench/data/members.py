"""Images that live inside containers, named by strings that stand where file paths stand.

A Hugging Face dataset's rows and a WebDataset shard's members are images too; the folder machinery (sizes
from headers, the pipeline, decoding on every core, streaming by DataLoader workers, the overlap checks) reads
them through these names, unchanged:

- ``wds:<shard>:<offset>:<size>``: ``size`` bytes at ``offset`` of a tar file (read with one seek: any process,
  forked or not, reads it without state);
- ``hf:<n>:<row>``: the image of row ``row`` of the ``n``-th dataset registered in this process
  (``register``), as its encoded bytes: forked decoding workers inherit the registry.
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

PREFIXES = ("wds:", "hf:")
_DATASETS: list[tuple[Any, str]] = []  # (a datasets.Dataset whose image column is not decoded, that column)


def is_member(path: object) -> bool:
    return isinstance(path, str) and path.startswith(PREFIXES)


def register(dataset: Any, column: str) -> int:
    """Register a Hugging Face dataset (its ``column`` of images cast to undecoded bytes); its number."""
    _DATASETS.append((dataset, column))
    return len(_DATASETS) - 1


def read(name: str) -> bytes:
    """The encoded bytes of a member."""
    if name.startswith("wds:"):
        shard, offset, size = name[4:].rsplit(":", 2)
        with open(shard, "rb") as f:
            f.seek(int(offset))
            return f.read(int(size))
    number, row = name[3:].split(":")
    dataset, column = _DATASETS[int(number)]
    cell = dataset[int(row)][column]
    if cell.get("bytes") is not None:
        return cell["bytes"]
    with open(cell["path"], "rb") as f:  # (a dataset that keeps its images as files beside it)
        return f.read()


def opened(name: str) -> io.BytesIO:
    """A member as a file-like object Pillow opens."""
    return io.BytesIO(read(name))


def size(path: str) -> int:
    """Bytes of a file or a member."""
    if path.startswith("wds:"):
        return int(path.rsplit(":", 1)[1])
    return len(read(path)) if is_member(path) else os.path.getsize(path)


def digest(path: str) -> str:
    """SHA-1 of a file's or a member's bytes."""
    if is_member(path):
        return hashlib.sha1(read(path)).hexdigest()
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def identity(path: str) -> str:
    """What names the same stored image twice: a file's real path, a member's own name."""
    return path if is_member(path) else os.path.realpath(path)
