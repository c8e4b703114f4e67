"""What the training loop is told: its settings (read once from the ``trainer`` section), its plan of optimizer
steps, and the class weights of its loss."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LoopSettings:
    """The ``trainer`` keys the loop reads (``config.schema.TrainerConfig`` documents each); the rest of the
    section (device, precision, seed, lookahead, EMA, early stopping...) is turned into built objects before."""

    epochs: int
    max_steps: int | None
    accumulate_steps: int
    label_smoothing: float
    grad_clip: float | None
    tta: int
    monitor: str
    eval_every: int
    log_every: int
    checkpoint_every: int
    checkpoint_every_steps: int

    @classmethod
    def of(cls, trainer: Any) -> LoopSettings:
        """The settings in a (checked) ``trainer`` config section."""
        return cls(**{f.name: trainer[f.name] for f in dataclasses.fields(cls)})

    def steps_per_epoch(self, batches: int) -> int:
        """Optimizer steps per epoch of ``batches`` batches, ``accumulate_steps`` batches per step (a shorter
        last group still makes a step)."""
        return math.ceil(batches / self.accumulate_steps)

    def planned_steps(self, batches: int) -> int:
        """Optimizer steps of the whole run over epochs of ``batches`` batches: ``epochs`` epochs, cut short by
        ``max_steps``."""
        total = self.epochs * self.steps_per_epoch(batches)
        return min(total, self.max_steps) if self.max_steps is not None else total

    def planned_epochs(self, batches: int) -> int:
        """Epochs the plan reaches into: ``epochs``, fewer when ``max_steps`` ends it sooner."""
        return math.ceil(self.planned_steps(batches) / self.steps_per_epoch(batches))


def class_weight_tensor(setting: Any, labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """``trainer.class_weights`` (checked against the classes: ``config.checks.check_against_data``) as a tensor
    on the labels' device: null (none), balanced (n / (classes x the class's count), scikit-learn's) or one weight
    per class."""
    if setting is None:
        return None
    if setting == "balanced":
        counts = torch.bincount(labels, minlength=num_classes).float()
        return len(labels) / (num_classes * counts.clamp_min(1))
    return torch.tensor(list(setting), dtype=torch.float32, device=labels.device)
