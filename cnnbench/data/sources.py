"""Each data set, read once into uint8 tensors (N, C, H, W) plus int64 labels.

No per-image transforms happen here: augmentation and normalisation run batched on the training device
(``cnnbench.data.augment``). Readers return their natural image size and channels; ``load_data`` in
``cnnbench.data.build`` resizes and converts to what the data config declares.
"""

from __future__ import annotations

import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from cnnbench.data.decode import IMAGE_EXTENSIONS, read_image
from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.errors import CnnbenchError


@dataclass
class RawSplits:
    train: ImageSet | FileImageSet
    test: ImageSet | FileImageSet
    class_names: list[str]


def random_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out) of a fixed random split, the held-out part ``fraction`` of n."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_out = int(round(n * fraction))
    return perm[n_out:].sort().values, perm[:n_out].sort().values


def read_digits(cfg: DictConfig) -> RawSplits:
    """The UCI handwritten digits from scikit-learn: 8x8 images with values 0..16, split 80/20."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images * (255.0 / 16.0)).round().to(torch.uint8)[:, None]  # (1797, 1, 8, 8)
    labels = torch.from_numpy(digits.target).long()
    full = ImageSet(images, labels)
    train_idx, test_idx = random_split(len(full), 0.2, cfg.split_seed)
    return RawSplits(full.subset(train_idx), full.subset(test_idx), [str(i) for i in range(10)])


_TORCHVISION = {"cifar10": "CIFAR10", "mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


def _offline_hint(name: str, root: str) -> str:
    return (
        f"{name} not found under {os.path.abspath(root)} and could not be downloaded; "
        f"put the data set there (or set data.root=...), allow data.download=true with a network, "
        f"or try cnnbench offline with data=digits"
    )


def read_torchvision(cfg: DictConfig) -> RawSplits:
    """CIFAR-10, MNIST or Fashion-MNIST through torchvision's own dataset classes (and their downloads)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION[cfg.name])
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=cfg.root, train=train, download=cfg.download)
        except (RuntimeError, urllib.error.URLError, OSError) as e:
            if isinstance(e, RuntimeError) and "not found" not in str(e).lower():
                raise
            raise CnnbenchError(_offline_hint(cfg.name, cfg.root)) from None
        data = torch.as_tensor(np.asarray(ds.data))
        images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data[:, None]  # NHWC (CIFAR) or NHW (MNIST)
        splits.append(ImageSet(images.contiguous(), torch.as_tensor(np.asarray(ds.targets)).long()))
    return RawSplits(splits[0], splits[1], list(ds.classes))


def scan_folder(folder: Path) -> tuple[list[str], torch.Tensor, list[str]]:
    """The image files of an ImageFolder-style tree (one sub-folder per class), their labels and the classes."""
    from torchvision.datasets.folder import find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_idx, extensions=IMAGE_EXTENSIONS)
    except FileNotFoundError as e:
        raise CnnbenchError(f"{folder}: {e}; expected one sub-folder per class holding images") from None
    return [p for p, _ in samples], torch.tensor([label for _, label in samples], dtype=torch.long), classes


def read_imagefolder(cfg: DictConfig) -> RawSplits:
    """``data.root`` with ``train/`` and ``test/`` (or ``val/``) sub-folders of class folders.

    Decoded into memory when the uint8 images take at most ``data.max_memory_gb``; larger sets stay files and
    are decoded per batch (``cnnbench.data.stream``).
    """
    if cfg.root is None:
        raise CnnbenchError("data=imagefolder needs data.root=<folder holding train/ and test/ (or val/)>")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise CnnbenchError(f"data.root={cfg.root} does not exist or is not a folder")
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise CnnbenchError(f"data.root={cfg.root} must hold train/ and test/ (or val/) folders of class folders")
    train_paths, train_labels, classes = scan_folder(root / "train")
    test_paths, test_labels, test_classes = scan_folder(test_dir)
    if test_classes != classes:
        raise CnnbenchError(f"class folders differ between {root / 'train'} and {test_dir}: "
                            f"{classes} vs {test_classes}")
    if not train_paths or not test_paths:
        raise CnnbenchError(f"data.root={cfg.root}: no images in {root / 'train' if not train_paths else test_dir}")
    size = cfg.image_size or read_image(train_paths[0], cfg.channels).shape[-1]  # null: the first image's
    gigabytes = (len(train_paths) + len(test_paths)) * cfg.channels * size * size / 2**30
    train = FileImageSet(train_paths, train_labels, cfg.channels, size)
    test = FileImageSet(test_paths, test_labels, cfg.channels, size)
    if gigabytes > cfg.max_memory_gb:
        return RawSplits(train, test, classes)
    # Decode everything now. A file that is not a readable image stops the run with its path: silently training
    # on fewer images would hide a broken data set.
    return RawSplits(ImageSet(train.take(slice(None)), train_labels), ImageSet(test.take(slice(None)), test_labels),
                     classes)


def read_synthetic(cfg: DictConfig) -> RawSplits:
    """Random uint8 images and labels (fixed by data.split_seed); for smoke tests and throughput."""
    g = torch.Generator().manual_seed(cfg.split_seed)
    c, s, k = cfg.channels, cfg.image_size, cfg.num_classes

    def make(n: int) -> ImageSet:
        return ImageSet(torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8),
                        torch.randint(0, k, (n,), generator=g))

    return RawSplits(make(cfg.num_train or 4096), make(cfg.num_test or 512), [str(i) for i in range(k)])


READERS = {
    "digits": read_digits,
    "cifar10": read_torchvision,
    "mnist": read_torchvision,
    "fashion_mnist": read_torchvision,
    "imagefolder": read_imagefolder,
    "synthetic": read_synthetic,
}
