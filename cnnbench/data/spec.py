"""What a trained model takes as input, in one record: channels, the pipeline's sizes and interpolation, the
normalisation and the class names. Every checkpoint (``meta``) and export card carries it; ``transforms()``
gives the evaluation preprocessing of one image file in one call, as torchvision's ``weights.transforms()``
does, and every command after training reads images through it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnbench.config.checks import MAX_SIDE
from cnnbench.config.schema import INTERPOLATIONS
from cnnbench.data.decode import read_image
from cnnbench.data.pipeline import Pipeline


@dataclass(frozen=True)
class InputSpec:
    channels: int
    pipeline: Pipeline  # pad or crop, the model's input side, resize size and interpolation
    mean: tuple[float, ...]  # per channel, of x / 255
    std: tuple[float, ...]
    class_names: tuple[str, ...]

    @property
    def image_size(self) -> int:
        return self.pipeline.image_size

    def to_dict(self) -> dict:
        """Plain containers, for checkpoints (loadable with ``weights_only=True``) and JSON cards."""
        return {"channels": self.channels, "image_size": self.image_size, "pipeline": dataclasses.asdict(self.pipeline),
                "mean": list(self.mean), "std": list(self.std), "class_names": list(self.class_names)}

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        """The spec ``to_dict`` wrote; TypeError, KeyError or ValueError for a record that is not one."""
        names = d["class_names"]
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise TypeError("class_names is not a list of names")
        spec = cls(int(d["channels"]), Pipeline(**d["pipeline"]), tuple(map(float, d["mean"])),
                   tuple(map(float, d["std"])), tuple(names))
        spec.check()
        return spec

    def check(self) -> None:
        """ValueError unless the record could have come from a run: 1 or 3 channels, sizes in [1, MAX_SIDE] with
        the stored and resized sides no smaller than the input, a known pipeline and interpolation, one finite
        mean and one positive finite std per channel, distinct class names."""
        p = self.pipeline
        sizes = (p.image_size, p.store_size, p.resize_size)
        if self.channels not in (1, 3) or p.name not in ("pad", "crop") or p.interpolation not in INTERPOLATIONS:
            raise ValueError(f"channels {self.channels}, pipeline {p.name!r} or interpolation {p.interpolation!r}")
        if not all(isinstance(v, int) and 0 < v <= MAX_SIDE for v in sizes) or min(sizes[1:]) < p.image_size:
            raise ValueError(f"image sizes {sizes} out of range")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} values")
        if not all(math.isfinite(v) for v in self.mean + self.std) or min(self.std) <= 0:
            raise ValueError(f"mean {self.mean} and std {self.std} must be finite, std positive")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("the class names repeat")

    def read(self, path: str | Path) -> torch.Tensor:
        """One image file as the uint8 (C, size, size) the model is evaluated on (decoded, resized, cropped)."""
        return read_image(path, self.channels, self.pipeline.eval_resize)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float, (x / 255 - mean) / std, on ``x``'s device (as the data loaders do)."""
        scale, shift = normalizer(self.mean, self.std, x.device)
        return torch.addcmul(shift, x.float(), scale)

    def transforms(self) -> Callable[[str | Path], torch.Tensor]:
        """Path -> the normalised float (C, size, size) tensor the model takes."""
        return lambda path: self.normalize(self.read(path)[None])[0]

    def describe(self) -> str:
        """The preprocessing in words, for export cards."""
        p = self.pipeline
        resize = (f"shorter side resized to {p.resize_size} ({p.interpolation}), centre {p.image_size} x "
                  f"{p.image_size} crop (torchvision's Resize + CenterCrop)" if p.name == "crop"
                  else f"resized to {p.image_size} x {p.image_size} (bilinear)")
        return f"RGB (or grey) decoded, {resize}, divided by 255, minus mean, divided by std"


def normalizer(mean: list[float] | tuple[float, ...], std: list[float] | tuple[float, ...], device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale`` and ``shift`` of (x / 255 - mean) / std = x * scale + shift: one fused op per batch."""
    std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * std_t), -torch.tensor(mean, device=device).view(1, -1, 1, 1) / std_t
