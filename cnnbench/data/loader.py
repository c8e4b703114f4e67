"""Batches drawn from a uint8 tensor that lives on the training device.

The whole split is moved to the device once; every batch is one index, one batched augmentation and one
fused normalisation. This replaces a DataLoader with per-image PIL transforms, which leaves the accelerator
(or the CPU's vector units) waiting on Python. ``cnnbench.data.stream`` serves the same batches from files.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from cnnbench.config.schema import AugmentConfig, crop_range
from cnnbench.data.augment import Augmenter
from cnnbench.data.crops import centre_boxes, crop_resize, resized_crop_boxes
from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.data.mixing import Mixer
from cnnbench.data.pipeline import Pipeline
from cnnbench.data.sampler import BatchSampler
from cnnbench.data.spec import normalizer

Batch = tuple[torch.Tensor, torch.Tensor]  # images float (B, C, H, W) normalised, labels int64 (B,) or, mixed
# (mixup, cutmix), class probabilities float (B, K)


def balanced_weights(labels: torch.Tensor) -> torch.Tensor:
    """Sampling weights that draw every class equally often: each image weighs 1 / its class's size."""
    return 1.0 / torch.bincount(labels).double()[labels]


class DeviceLoader:
    """Iterate normalised batches over an image set; ``train``: shuffled, augmented, partial batch dropped."""

    def __init__(
        self,
        data: ImageSet | FileImageSet,
        batch_size: int,
        device: torch.device,
        mean: list[float],
        std: list[float],
        *,
        train: bool = False,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_classes: int | None = None,
        balanced: bool = False,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.data = data
        self.pipeline = pipeline
        # photo canvases (pipeline crop): each image's (height, width); cropped to the model's square per batch
        self.sizes = None if data.sizes is None else data.sizes.to(device)
        if self.sizes is not None and pipeline is None:
            raise ValueError("images stored as canvases need their pipeline")
        self.crop_scale, self.crop_ratio = crop_range(augment) if augment is not None else (None, None)
        self.num_classes = num_classes
        self.labels = data.labels.to(device)
        self.device = device
        self.train = train
        self.channels_last = channels_last
        self.mean, self.std = list(mean), list(std)
        self.scale, self.shift = normalizer(mean, std, device)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.augmenter = Augmenter(augment, self.generator, len(data)) if train and augment is not None else None
        self.mixer = None
        if self.augmenter is not None and Mixer.enabled(augment):
            if num_classes is None:
                raise ValueError("mixup and cutmix need num_classes")
            self.mixer = Mixer(augment, num_classes, seed)
        weights = balanced_weights(self.labels) if train and balanced else None
        self.sampler = BatchSampler(len(data), batch_size, shuffle=train, generator=self.generator, rank=rank,
                                    world_size=world_size, weights=weights)
        self.world_size = world_size
        self.epoch = 0
        self._images = None if data.streamed else data.take(slice(None)).to(device)

    def __len__(self) -> int:
        return len(self.sampler)

    @property
    def num_images(self) -> int:
        """Images this process sees per pass."""
        return self.sampler.images_per_pass

    def set_epoch(self, epoch: int) -> None:
        """The epoch about to be drawn (0-based; the alternating flip depends on it)."""
        self.epoch = epoch

    def state_dict(self) -> dict:
        """What decides the batches still to come: the random generator (call at an epoch's start)."""
        state = {"generator": self.generator.get_state(), "epoch": self.epoch}
        return state if self.mixer is None else {**state, "mixer": self.mixer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.epoch = state.get("epoch", self.epoch)
        if self.mixer is not None and "mixer" in state:
            self.mixer.load_state_dict(state["mixer"])

    def __iter__(self) -> Iterator[Batch]:
        for idx in self.sampler:
            yield self._finish(self._images[idx], idx)

    def _finish(self, x: torch.Tensor, idx: torch.Tensor | slice, shard: bool = True) -> Batch:
        """Augment (training) the batch, keep this process's share of a global batch (``shard``), normalise."""
        y = self.labels[idx]
        x = self.crop(x, idx, randomly=self.augmenter is not None)
        if self.augmenter is not None:
            x = self.augmenter(x, idx, self.epoch)
        if shard and self.world_size > 1:
            x, y = x[self.sampler.shard], y[self.sampler.shard]
        x = self.normalize(x)
        if self.augmenter is not None:
            x = self.augmenter.after_normalize(x)
        if self.mixer is not None:
            x, y = self.mixer(x, y)
        return x, y

    def crop(self, x: torch.Tensor, idx: torch.Tensor | slice, randomly: bool) -> torch.Tensor:
        """Photo canvases (B, C, S, S) of the images at ``idx`` to the model's square: a random resized crop
        each (``randomly``) or the evaluation centre crop. Images stored at the model's size pass as they are."""
        if self.sizes is None:
            return x
        sizes, p = self.sizes[idx], self.pipeline
        if randomly:
            boxes = resized_crop_boxes(sizes, self.crop_scale, self.crop_ratio, self.generator)
        else:
            boxes = centre_boxes(sizes, p.image_size, p.resize_size)
        return crop_resize(x, boxes, p.image_size, p.interpolation)

    def images(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The images at ``index`` as the model sees them in evaluation: uint8 on the device, not normalised."""
        x = self._images[index] if self._images is not None else self.data.take(index).to(self.device)
        return self.crop(x, index, randomly=False)

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` images, normalised and not augmented (for data-dependent initialisation, pictures)."""
        return self.normalize(self.images(slice(0, n)))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> float, (x / 255 - mean) / std, in the loader's memory format."""
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return torch.addcmul(self.shift, x.float(), self.scale).contiguous(memory_format=memory_format)
