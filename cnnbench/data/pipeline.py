"""How images become the model's square input: the ``pad`` pipeline (CIFAR-style) or the ``crop`` pipeline
(ImageNet-style, for photos of any size and aspect).

``pad``: every image is stored resized to ``image_size`` square (a non-square image is squashed); training
pads and crops (``data.augment.crop_padding``), evaluation takes the stored image. Right for small images that
are all one size (CIFAR, MNIST, SVHN), where resizing does nothing.

``crop``: no step distorts aspect. Training images are stored whole with their longer side ``store_size`` and
cropped on the device by a random resized crop (``cnnbench.data.crops``); evaluation images are decoded with
torchvision's ``Resize(resize_size)`` + ``CenterCrop(image_size)``, with ``model.weights`` exactly as the
weights' ``transforms()``.

``data.pipeline=auto`` (the default) takes ``pad`` for the library's data sets and for folders whose images
are all one square size of at most 64 px, and ``crop`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from cnnbench.data.decode import Resize
from cnnbench.errors import CnnbenchError

THUMBNAIL = 64  # auto: one square size up to this many pixels is CIFAR-like data (pad)
CROP_SIZE = 224  # crop with data.image_size null: torchvision's ImageNet crop
CROP_PCT = 0.875  # resize_size = image_size / CROP_PCT (torchvision's 256 for 224)
STORE_SCALE = 1.5  # store_size = image_size * STORE_SCALE: a typical random crop is then about image_size
CONFIG_KEYS = ("pipeline", "image_size", "store_size", "resize_size", "interpolation")  # the data.* keys it resolves


@dataclass(frozen=True)
class Pipeline:
    """The resolved choice: which pipeline and its sizes (all in pixels)."""

    name: str = "pad"  # pad | crop
    image_size: int = 32  # the model's input side
    store_size: int = 32  # crop: the training images' longer side as stored
    resize_size: int = 32  # crop: evaluation's shorter side before the centre crop
    interpolation: str = "bilinear"

    @classmethod
    def pad(cls, size: int, interpolation: str = "bilinear") -> Pipeline:
        """The pad pipeline at ``size`` (it stores and evaluates at that size)."""
        return cls("pad", size, size, size, interpolation)

    def config(self) -> dict:
        """The ``data.*`` values (CONFIG_KEYS) that resolve to this pipeline."""
        return dict(zip(CONFIG_KEYS, (self.name, self.image_size, self.store_size, self.resize_size,
                                      self.interpolation), strict=True))

    @property
    def train_resize(self) -> Resize:
        if self.name == "crop":
            return Resize("fit", self.store_size, interpolation=self.interpolation)
        return Resize("square", self.image_size)

    @property
    def eval_resize(self) -> Resize:
        if self.name == "crop":
            return Resize("centre", self.image_size, self.resize_size, self.interpolation)
        return Resize("square", self.image_size)

    def describe(self, scale: tuple[float, float] | None = None, ratio: tuple[float, float] | None = None) -> str:
        """One line for the console; ``scale`` and ``ratio``: the training crops' (crop pipeline)."""
        if self.name == "pad":
            return f"data.pipeline=pad: images resized to {self.image_size}x{self.image_size}"
        return (f"data.pipeline=crop: training RandomResizedCrop({self.image_size}, scale={tuple(scale)}, "
                f"ratio=({ratio[0]:.3g}, {ratio[1]:.3g})) from whole photos stored at {self.store_size} px (longer "
                f"side); evaluation Resize({self.resize_size}) + CenterCrop({self.image_size}), {self.interpolation}")


def _crop(cfg: DictConfig) -> Pipeline:
    size = cfg.image_size or CROP_SIZE
    for key in ("store_size", "resize_size"):  # (config.checks compares them with a data.image_size given)
        if cfg[key] is not None and cfg[key] < size:
            raise CnnbenchError(f"data.{key}={cfg[key]} must be at least the model's input side ({size} px, "
                                f"data.image_size{'' if cfg.image_size else ' null: the crop default'}); raise it "
                                f"or leave it null")
    return Pipeline("crop", size, cfg.store_size or round(size * STORE_SCALE),
                    cfg.resize_size or int(round(size / CROP_PCT, 6)), cfg.interpolation)


def for_library(cfg: DictConfig, native: int) -> Pipeline:
    """The pipeline of a library data set whose images are ``native`` px squares: always ``pad``."""
    return Pipeline.pad(cfg.image_size or native, cfg.interpolation)


def for_files(cfg: DictConfig, sizes: torch.Tensor) -> Pipeline:
    """The pipeline of users' images of (height, width) ``sizes`` (N, 2), all of them."""
    uniform = bool((sizes == sizes[0]).all())
    thumbnails = uniform and int(sizes[0, 0]) == int(sizes[0, 1]) <= THUMBNAIL
    name = cfg.pipeline if cfg.pipeline != "auto" else ("pad" if thumbnails else "crop")
    if name == "crop":
        return _crop(cfg)
    if cfg.image_size is None and not uniform:
        lo, hi = sizes.min(0).values.tolist(), sizes.max(0).values.tolist()
        raise CnnbenchError(f"data.pipeline=pad squashes every image to one square, and these images differ in size "
                            f"({lo[1]}x{lo[0]} to {hi[1]}x{hi[0]} px): set data.image_size=N, or use "
                            f"data.pipeline=crop (aspect kept)")
    return Pipeline.pad(cfg.image_size or int(sizes[0, 1]), cfg.interpolation)
