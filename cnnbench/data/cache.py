"""An on-disk cache of decoded data sets, so a second run skips decoding (JPEGs take seconds, a cache read ms).

The key covers what the images came from and how they were made: the data set, its root, every file under the
root and every file a list names, wherever it lives (path, size, modification time: an image replaced, added or
removed anywhere makes a new key), the sizes and pipeline asked for, the channels and the decoding version. A
cache file that cannot be read, or does not hold what a cache holds, is rebuilt, never trusted. A run killed
while writing the cache leaves a temporary file that the next run removes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from cnnbench.data.decode import DECODE_VERSION
from cnnbench.data.folders import walk_files
from cnnbench.data.images import ImageSet
from cnnbench.data.pipeline import CONFIG_KEYS, Pipeline
from cnnbench.data.sources import RawSplits
from cnnbench.fileio import atomic_save, remove_stale_temporaries

DEFAULT_DIR = "~/.cache/cnnbench"  # (conf/data/*.yaml: ${oc.env:CNNBENCH_CACHE,'~/.cache/cnnbench'})


def local_cache_dir() -> str:
    """This machine's cache folder: ``CNNBENCH_CACHE``, else ~/.cache/cnnbench (what the data configs say)."""
    return os.environ.get("CNNBENCH_CACHE") or DEFAULT_DIR


def files_fingerprint(root: Path, paths: list[str] | None = None) -> str:
    """A digest of files: their paths (relative to ``root``), sizes and modification times; ``paths`` default to
    every file under ``root`` (links followed once)."""
    digest = hashlib.sha1()
    for path in walk_files(root) if paths is None else paths:
        try:
            st = os.stat(path)
        except OSError:  # a dangling link: part of the key as such
            st = None
        entry = (os.path.relpath(path, root), st.st_size, st.st_mtime_ns) if st else (path, None, None)
        digest.update(json.dumps(entry).encode())
    return digest.hexdigest()


def listed_files(root: Path) -> list[str]:
    """Every image that the split lists under ``root`` name (data=filelist), wherever it lives."""
    from cnnbench.data.folders import list_files, read_list

    return sorted({path for lst in list_files(root).values() for path, _ in read_list(lst)})


def cache_key(cfg) -> dict:
    """What decides the decoded images of the ``data`` config ``cfg``."""
    key = {"name": cfg.name, "channels": cfg.channels, "decode": DECODE_VERSION,
           **{k: cfg[k] for k in CONFIG_KEYS}}
    if cfg.decode_device != "cpu":  # nvJPEG's pixels differ from Pillow's by a grey level or two
        key["decoder"] = "nvjpeg"
    if cfg.name == "hf":  # (the dataset's own fingerprints, per split)
        from cnnbench.data.hf import fingerprint

        key.update(path=cfg.path, fingerprint=fingerprint(cfg))
    if cfg.root is not None:
        root = Path(cfg.root).expanduser().resolve()
        key.update(root=str(root), files=files_fingerprint(root) if root.is_dir() else None)
        if cfg.name == "filelist" and root.is_dir():  # lists may name images outside the root (../, absolute)
            key["listed"] = files_fingerprint(root, listed_files(root))
    return key


def cache_path(cache_dir: str, key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"{key['name']}-{digest}.pt"


def _images(stored) -> ImageSet | None:
    if stored is None:
        return None
    images, labels, sizes = stored
    if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != (len(images),) or (
            sizes is not None and sizes.shape != (len(images), 2)):
        raise ValueError("not a cached image set")
    return ImageSet(images, labels, sizes)


def load(path: Path) -> RawSplits | None:
    """The cached splits, or None when there is no usable cache file."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        return RawSplits(_images(blob["train"]), _images(blob["test"]), list(blob["class_names"]),
                         val=_images(blob.get("val")), per_class=bool(blob.get("per_class", False)),
                         notes=tuple(blob.get("notes", ())),
                         pipeline=Pipeline(**blob["pipeline"]) if blob.get("pipeline") else None)
    except Exception:  # a stale, damaged or foreign file is rebuilt, never fatal
        return None


def save(path: Path, splits: RawSplits) -> None:
    def pair(images: ImageSet | None):
        return None if images is None else (images.images, images.labels, images.sizes)

    try:
        os.makedirs(path.parent, exist_ok=True)
        remove_stale_temporaries(path.parent)  # (partial files of runs killed while writing)
        atomic_save({"train": pair(splits.train), "test": pair(splits.test), "val": pair(splits.val),
                     "class_names": splits.class_names, "per_class": splits.per_class,
                     "notes": list(splits.notes),
                     "pipeline": dataclasses.asdict(splits.pipeline) if splits.pipeline else None}, path)
    except OSError:
        pass  # a read-only cache location only costs speed
