"""The library's data sets (digits, torchvision's, synthetic), each read once into uint8 tensors (N, C, H, W)
plus int64 labels; users' own folders and lists are read by ``cnnbench.data.folders``.

No per-image transforms happen here: augmentation and normalisation run batched on the training device
(``cnnbench.data.augment``). Readers return their natural image size and channels; ``load_data`` in
``cnnbench.data.build`` resizes and converts to what the data config declares.
"""

from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.data.pipeline import Pipeline
from cnnbench.errors import CnnbenchError


@dataclass
class RawSplits:
    """What a reader found. ``test`` None: carve it from train (``data.test_fraction``); ``val`` None: carve
    it from train (``data.val_fraction``); ``per_class``: carve each class in proportion (users' folders)."""

    train: ImageSet | FileImageSet
    test: ImageSet | FileImageSet | None
    class_names: list[str]
    val: ImageSet | FileImageSet | None = None
    per_class: bool = False
    notes: tuple[str, ...] = ()  # said on the console: which folder selects and which is reported
    pipeline: Pipeline | None = None  # users' files: chosen from their sizes; None: the library's (pad)


def random_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out) of a fixed random split, the held-out part ``fraction`` of n."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_out = int(round(n * fraction))
    return perm[n_out:].sort().values, perm[:n_out].sort().values


def per_class_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``random_split``, class by class: each class gives ``fraction`` of its images (rounded) to the
    held-out part, so that a rare class is in both parts."""
    keep, held = [], []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().squeeze(1)
        k, h = random_split(len(members), fraction, seed + c)
        keep.append(members[k])
        held.append(members[h])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def read_digits(cfg: DictConfig) -> RawSplits:
    """The UCI handwritten digits from scikit-learn: 8x8 images with values 0..16, split 80/20."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target).long()
    full = ImageSet(images, labels)
    train_idx, test_idx = random_split(len(full), 0.2, cfg.split_seed)
    return RawSplits(full.subset(train_idx), full.subset(test_idx), [str(i) for i in range(10)])


# name: (torchvision class, how it names its splits: train=True/False or split="train"/"test")
_TORCHVISION = {"cifar10": ("CIFAR10", "train"), "cifar100": ("CIFAR100", "train"), "mnist": ("MNIST", "train"),
                "fashion_mnist": ("FashionMNIST", "train"), "svhn": ("SVHN", "split"), "stl10": ("STL10", "split")}


def _offline_hint(name: str, root: str) -> str:
    return (
        f"{name} not found under {os.path.abspath(root)} and could not be downloaded; "
        f"put the data set there (or set data.root=...), allow data.download=true with a network, "
        f"or try cnnbench offline with data=digits"
    )


def read_torchvision(cfg: DictConfig) -> RawSplits:
    """CIFAR-10/100, MNIST, Fashion-MNIST, SVHN or STL-10 (its 5,000 labelled training images) through
    torchvision's own dataset classes (and their downloads)."""
    import torchvision.datasets as tvd

    class_name, split_arg = _TORCHVISION[cfg.name]
    cls = getattr(tvd, class_name)
    splits = []
    for train in (True, False):
        split = {"train": train} if split_arg == "train" else {"split": "train" if train else "test"}
        try:
            ds = cls(root=cfg.root, download=cfg.download, **split)
        except (RuntimeError, urllib.error.URLError, OSError) as e:
            if isinstance(e, RuntimeError) and "not found" not in str(e).lower():
                raise
            raise CnnbenchError(_offline_hint(cfg.name, cfg.root)) from None
        data = torch.as_tensor(np.asarray(ds.data))
        if data.ndim == 3:  # NHW (MNIST)
            images = data[:, None]
        else:  # NHWC (CIFAR) or already NCHW (SVHN, STL-10)
            images = data if data.shape[1] in (1, 3) else data.permute(0, 3, 1, 2)
        labels = getattr(ds, "targets", None)
        labels = ds.labels if labels is None else labels
        splits.append(ImageSet(images.contiguous(), torch.as_tensor(np.asarray(labels)).long()))
    classes = list(getattr(ds, "classes", None) or [str(i) for i in range(int(splits[0].labels.max()) + 1)])
    return RawSplits(splits[0], splits[1], classes)


def read_synthetic(cfg: DictConfig) -> RawSplits:
    """Random uint8 images and labels (fixed by data.split_seed); for smoke tests and throughput."""
    g = torch.Generator().manual_seed(cfg.split_seed)
    c = cfg.channels
    s = cfg.image_size
    k = cfg.num_classes

    def make(n: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8),
                        torch.randint(0, k, (n,), generator=g))

    return RawSplits(make(cfg.num_train or 4096), make(cfg.num_test or 512), [str(i) for i in range(k)])


READERS = {"digits": read_digits, **dict.fromkeys(_TORCHVISION, read_torchvision), "synthetic": read_synthetic}
