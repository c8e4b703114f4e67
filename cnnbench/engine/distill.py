"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): a student learns from a trained teacher's softened
answers as well as from the labels.

The teacher (a finished run, in eval mode) sees every training batch the student sees, augmented and mixed the
same way, brought to its own input (its size, channels and normalisation), in the run's precision. The loss is
``(1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``: the T^2
keeps the soft term's gradients on the scale of the hard one's as T grows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.precision import Precision

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


class Teacher:
    """A trained model that answers the student's batches (``logits``) and scores the student against them
    (``loss``); ``identity`` is what results.json records of it."""

    def __init__(self, model: nn.Module, precision: Precision, student: tuple[list[float], list[float], int],
                 teacher: tuple[list[float], list[float], int, int], temperature: float, alpha: float,
                 identity: dict) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.precision = precision
        self.student_mean, self.student_std, self.student_channels = student
        self.mean, self.std, self.channels, self.size = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.identity = identity

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The student's normalised batch as the teacher takes it: un-normalised, its channels, its size,
        normalised as the teacher was trained."""
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)

        raw = x.float() * column(self.student_std) + column(self.student_mean)  # (B, C, H, W) in [0, 1]
        if self.channels != raw.shape[1]:
            raw = raw.expand(-1, 3, -1, -1) if self.channels == 3 else (raw * column(list(LUMA))).sum(1, True)
        if raw.shape[-1] != self.size:
            raw = F.interpolate(raw, size=(self.size, self.size), mode="bilinear", antialias=True,
                                align_corners=False)
        return ((raw - column(self.mean)) / column(self.std)).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            out = self.model(self.inputs(x))
        return (out[0] if isinstance(out, tuple) else out).float()

    def loss(self, student: torch.Tensor, teacher: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
        """The mix of the labels' loss ``hard`` and the soft loss against ``teacher``'s logits."""
        t = self.temperature
        soft = F.kl_div(F.log_softmax(student.float() / t, 1), F.log_softmax(teacher / t, 1), reduction="batchmean",
                        log_target=True) * t * t
        return (1 - self.alpha) * hard + self.alpha * soft
