"""A run's data as built: its image sets per split, classes, channels and pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.data.pipeline import Pipeline


@dataclass
class DataBundle:
    train: ImageSet | FileImageSet
    val: ImageSet | FileImageSet | None
    test: ImageSet | FileImageSet
    class_names: list[str]
    channels: int
    pipeline: Pipeline
    notes: tuple[str, ...] = ()  # which split selects and which is reported, where the layout decides it
    dataset_classes: tuple[str, ...] = ()  # as the data set names them (data.class_names may rename them)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        """The model's input side."""
        return self.pipeline.image_size
