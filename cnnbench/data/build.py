"""Build a run's data: read a data set (or its cache), conform, subset and split it, and make its loaders."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

import cnnbench.data.cache as cache
from cnnbench.data.bundle import DataBundle
from cnnbench.data.checks import carved_overlap, check_classes
from cnnbench.data.folders import read_filelist, read_imagefolder
from cnnbench.data.hf import read_hf
from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.data.loader import DeviceLoader
from cnnbench.data.pipeline import Pipeline, for_library
from cnnbench.data.shards import ShardImageSet, ShardLoader, read_webdataset
from cnnbench.data.sources import READERS as LIBRARY_READERS
from cnnbench.data.sources import RawSplits, per_class_split, random_split
from cnnbench.data.stream import StreamLoader
from cnnbench.errors import CnnbenchError

READERS = {**LIBRARY_READERS, "imagefolder": read_imagefolder, "filelist": read_filelist, "hf": read_hf,
           "webdataset": read_webdataset}


def _read(cfg: DictConfig) -> RawSplits:
    reader = READERS[cfg.name]
    if not cfg.cache_dir or cfg.name == "synthetic":
        return reader(cfg)
    path = cache.cache_path(cfg.cache_dir, cache.cache_key(cfg))
    splits = cache.load(path)
    if splits is None:
        splits = reader(cfg)
        if not splits.train.streamed:  # (images streamed from files are not cached)
            cache.save(path, splits)
    return splits


def _conform(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Convert a uint8 batch to the configured channels (gray <-> RGB) and square size."""
    if images.shape[1] != channels:
        if channels == 3:
            images = images.expand(-1, 3, -1, -1)
        else:  # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * w).sum(1, keepdim=True).round().to(torch.uint8)
    if images.shape[-2:] != (size, size):
        out = []
        for chunk in images.split(4096):  # bounded memory for large sets
            out.append(F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                                     align_corners=False).round().clamp(0, 255).to(torch.uint8))
        images = torch.cat(out)
    return images.contiguous()


def _carve(images: ImageSet | FileImageSet, fraction: float, seed: int, per_class: bool, key: str
           ) -> tuple[ImageSet | FileImageSet, ImageSet | FileImageSet]:
    """Split ``images`` into (rest, held-out part of ``fraction``), class by class when ``per_class``."""
    keep, held = per_class_split(images.labels, fraction, seed) if per_class else random_split(
        len(images), fraction, seed)
    if len(held) == 0 or len(keep) == 0:
        raise CnnbenchError(f"data.{key}={fraction} leaves an empty split of {len(images)} images")
    return images.subset(keep), images.subset(held)


def load_data(cfg: DictConfig) -> DataBundle:
    """Read, conform, subset and split the data set that ``cfg`` (the ``data`` group) describes."""
    raw = _read(cfg)
    pipeline = raw.pipeline or for_library(cfg, raw.train.shape[-1])

    def conform(images: ImageSet | FileImageSet | None) -> ImageSet | FileImageSet | None:
        if images is None or images.streamed or raw.pipeline:  # (users' files: decoded at their size, channels)
            return images
        return ImageSet(_conform(images.images, cfg.channels, pipeline.image_size), images.labels)

    train = conform(raw.train)
    test = conform(raw.test)
    val = conform(raw.val)
    class_names = list(cfg.class_names) if cfg.class_names else raw.class_names
    counts = torch.bincount(raw.train.labels, minlength=len(raw.class_names)).tolist()
    check_classes(cfg, raw.class_names, counts, raw.per_class)
    notes = raw.notes
    if test is None:  # a train/ folder alone: the reported part is carved from it first
        train, test = _carve(train, cfg.test_fraction, cfg.split_seed + 1, raw.per_class, "test_fraction")
        notes += tuple(carved_overlap(train, test, "the test split carved from train") if raw.per_class else ())
    # Subsets are random (fixed by split_seed) so that class-sorted folders keep every class.
    if cfg.num_train and cfg.num_train < len(train):
        train = train.subset(random_split(len(train), cfg.num_train / len(train), cfg.split_seed)[1])
    if cfg.num_test and cfg.num_test < len(test):
        test = test.subset(random_split(len(test), cfg.num_test / len(test), cfg.split_seed)[1])
    if val is None and cfg.val_fraction > 0:
        train, val = _carve(train, cfg.val_fraction, cfg.split_seed, raw.per_class, "val_fraction")
        notes += tuple(carved_overlap(train, val, "the validation split carved from train") if raw.per_class else ())
    return DataBundle(train, val, test, class_names, cfg.channels, pipeline, notes, tuple(raw.class_names))


def normalization(cfg: DictConfig, channels: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the ``data`` config (a single value applies to every channel)."""
    mean, std = list(cfg.mean), list(cfg.std)
    if len(mean) == 1 and channels == 3:
        mean, std = mean * 3, std * 3
    return mean, std


def image_loader(images: ImageSet | FileImageSet, batch_size: int, device: torch.device, mean: list[float],
                 std: list[float], num_workers: int, shuffle_buffer: int = 1000, **kwargs) -> DeviceLoader:
    """A loader over ``images``: in memory, decoded per batch by ``num_workers`` workers when they are files, or
    (training on shards) streamed through a shuffle buffer of ``shuffle_buffer`` samples."""
    if isinstance(images, ShardImageSet) and kwargs.get("train"):
        return ShardLoader(images, batch_size, device, mean, std, num_workers=num_workers,
                           shuffle_buffer=shuffle_buffer, **kwargs)
    if images.streamed:
        return StreamLoader(images, batch_size, device, mean, std, num_workers=num_workers, **kwargs)
    return DeviceLoader(images, batch_size, device, mean, std, **kwargs)


def make_loaders(
    data: DataBundle, cfg: DictConfig, device: torch.device, seed: int, channels_last: bool,
    rank: int = 0, world_size: int = 1,
) -> dict[str, DeviceLoader]:
    """The train loader (augmented, shuffled by ``seed``; this process's shard of each batch) and val/test
    loaders (neither)."""
    mean, std = normalization(cfg, data.channels)
    augment = augment_for(cfg.augment, data.pipeline)
    batch_size = train_batch_size(cfg, len(data.train), world_size)

    def loader(images: ImageSet | FileImageSet, batch_size: int, **kwargs) -> DeviceLoader:
        return image_loader(images, batch_size, device, mean, std, cfg.num_workers, cfg.shuffle_buffer,
                            channels_last=channels_last, pipeline=data.pipeline, **kwargs)

    try:
        train = loader(data.train, batch_size, train=True, augment=augment, seed=seed, rank=rank,
                       world_size=world_size, num_classes=data.num_classes, balanced=cfg.sampler == "balanced")
    except ValueError as e:
        raise CnnbenchError(f"{e}; lower data.batch_size") from None
    loaders = {"train": train}
    for split in ("val", "test"):
        images = getattr(data, split)
        if images is not None:
            loaders[split] = loader(images, cfg.eval_batch_size)
    return loaders


def train_batch_size(cfg: DictConfig, images: int, world_size: int = 1) -> int:
    """``data.batch_size``, capped on a small training set so that an epoch has ``data.min_steps_per_epoch``
    optimizer steps: 221 photos at the default 128 would otherwise train one step per epoch."""
    steps = cfg.min_steps_per_epoch
    if not steps or images >= steps * cfg.batch_size * world_size:
        return cfg.batch_size
    return max(2, math.ceil(images / (steps * world_size)))


def batch_note(cfg: DictConfig, loader: DeviceLoader, images: int) -> str:
    """The console line on training batches: size (and the cap, when it applied), steps and images per epoch."""
    size = loader.sampler.batch_size
    capped = (f" (data.batch_size={cfg.batch_size} capped so that an epoch has {cfg.min_steps_per_epoch} steps; "
              f"data.min_steps_per_epoch=0 keeps it)" if size < cfg.batch_size else "")
    used = "every image" if loader.num_images * loader.sampler.global_batch // size >= images else (
        f"{loader.num_images * loader.sampler.global_batch // size} of {images} images (the last partial batch "
        f"is dropped)")
    return f"training batches of {size}{capped}: {len(loader)} steps per epoch, {used} per epoch"


def augment_for(augment: DictConfig, pipeline: Pipeline) -> DictConfig:
    """``data.augment`` with ``crop_padding`` null resolved (pad: image_size / 8, CIFAR's 4 px at 32; crop: 0, the
    random resized crop moves the image instead). ``crop_scale`` and ``crop_ratio`` are the crop pipeline's (null:
    ``config.schema.crop_range``'s defaults)."""
    if augment.crop_padding is None:
        augment = OmegaConf.merge(augment, {"crop_padding": pipeline.image_size // 8 if pipeline.name == "pad" else 0})
    return augment


def dataset_summary(data: DataBundle) -> str:
    val = len(data.val) if data.val is not None else 0
    streamed = ", streamed from shards" if isinstance(data.train, ShardImageSet) else (
        ", decoded per batch from files (above data.max_memory_gb)" if data.train.streamed else "")
    return (f"{len(data.train)} train / {val} val / {len(data.test)} test images, "
            f"{data.channels}x{data.image_size}x{data.image_size}, {data.num_classes} classes{streamed}")


