"""What a model may ask of the trainer: a data-dependent initialisation and a call before each epoch.

A model that needs either derives from ``TrainingHooks`` (airbench's whitening stem does); the trainer calls
them through ``cnnbench.engine.callbacks.ModelHooks``.
"""

from __future__ import annotations

import torch


class TrainingHooks:
    """Mix-in for ``nn.Module`` models; both hooks do nothing unless overridden."""

    def init_from_data(self, images: torch.Tensor) -> None:
        """Called once before training from scratch with up to 5,000 normalised, un-augmented training images."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each (0-based) epoch, after ``model.train()``."""
