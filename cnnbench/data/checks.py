"""The checks of a run's config that only the loaded data can settle: its classes, split sizes and pipeline."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from omegaconf import DictConfig

from cnnbench.config.checks import check_augment
from cnnbench.data.bundle import DataBundle
from cnnbench.data.folders import overlap_warning, shared_files
from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.errors import require as _require


def check_against_data(cfg: DictConfig, data: DataBundle, batch_size: int) -> None:
    """What only the loaded data settles: its classes against ``data.num_classes``, ``class_names`` and
    ``trainer.class_weights``; classes a classifier can learn; the training batch (one process's, ``batch_size``)
    against the split; a validation split for what monitors one; the augmentation against the pipeline."""
    d, t = cfg.data, cfg.trainer
    found = data.dataset_classes
    _require(d.num_classes is None or d.num_classes == len(found),
             f"data.num_classes={d.num_classes} but {d.name} has {len(found)} classes")
    _require(not d.class_names or len(d.class_names) == len(found),
             f"data.class_names has {len(d.class_names or ())} names but {d.name} has {len(found)} classes")
    _require(batch_size <= len(data.train), f"data.batch_size={d.batch_size} is larger than the training split "
             f"({len(data.train)} images); lower data.batch_size")
    weights = t.class_weights
    _require(weights is None or weights == "balanced" or len(weights) == len(found), f"trainer.class_weights has "
             f"{len(weights or ())} values but the data has {len(found)} classes; give one per class, or balanced")
    es = t.early_stopping
    _require(not es.patience or not es.monitor.startswith("val") or data.val is not None,
             f"trainer.early_stopping.monitor={es.monitor} needs a validation split; set data.val_fraction > 0 or "
             f"monitor train/loss")
    a = d.augment
    _require(data.pipeline.name != "pad" or (a.crop_scale is None and a.crop_ratio is None),
             "data.augment.crop_scale and crop_ratio shape the random resized crops of data.pipeline=crop; this "
             "run's pipeline is pad: set data.pipeline=crop or leave them")
    check_augment(a, data.image_size)


def check_classes(d: DictConfig, found: Sequence[str], train_counts: Sequence[int], per_class: bool) -> None:
    """Refuse class sets a classifier cannot learn (data code calls this as soon as it has read the classes,
    before it carves splits): fewer than two classes, or (in users' folders, ``per_class``; a library set's classes
    are its own) a class without training images: it could never be predicted, and every score of it would be 0."""
    where = f"data.root={d.root}" if d.root else f"data={d.name}"
    _require(len(found) >= 2, f"{where} has {len(found)} class ({', '.join(found)}); a classifier needs at least 2 "
             f"classes (one folder, or one label, per class)")
    empty = [name for name, n in zip(found, train_counts, strict=True) if n == 0]
    _require(not (empty and per_class), f"{where}: class {', '.join(empty[:5])} has no training images; add "
             f"images to it or remove its folder")


def carved_overlap(train: ImageSet | FileImageSet, held: ImageSet | FileImageSet, name: str) -> list[str]:
    """A warning when images of a split carved from the training images (``held``) are also in what stays for
    training: the same file or bytes (files), or the same pixels (decoded in memory): a folder holding one photo
    twice puts one copy on each side."""
    if train.streamed:
        same_file, same = shared_files(train.paths, held.paths)
        content = "bytes"
    else:
        seen = {_digest(row) for row in train.images}
        same_file, same = 0, sum(_digest(row) in seen for row in held.images)
        content = "pixels"
    return [overlap_warning(name, len(held), same_file, same, content)] if same_file or same else []


def _digest(image: torch.Tensor) -> bytes:
    return hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest()
