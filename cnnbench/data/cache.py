"""An on-disk cache of decoded data sets, so a second run skips decoding (JPEGs take seconds, a cache read ms)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from cnnbench.data.images import ImageSet
from cnnbench.data.sources import RawSplits
from cnnbench.fileio import atomic_save


def folder_fingerprint(root: Path) -> list[tuple[str, int]]:
    """Modification times of the split and class folders: they change when images are added or removed."""
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.glob("*/*") if p.is_dir())


def cache_path(cache_dir: str, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"{key['name']}-{digest}.pt"


def load(path: Path) -> RawSplits | None:
    """The cached splits, or None when there is no usable cache file."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return RawSplits(ImageSet(*blob["train"]), ImageSet(*blob["test"]), list(blob["class_names"]))
    except Exception:  # a stale or damaged cache is rebuilt, never fatal
        return None


def save(path: Path, splits: RawSplits) -> None:
    try:
        os.makedirs(path.parent, exist_ok=True)
        atomic_save({"train": (splits.train.images, splits.train.labels),
                     "test": (splits.test.images, splits.test.labels),
                     "class_names": splits.class_names}, path)
    except OSError:
        pass  # a read-only cache location only costs speed
