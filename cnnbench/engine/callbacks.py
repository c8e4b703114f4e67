"""The callback protocol of the trainer, and the callback that runs a model's own training hooks.

A callback is told where training stands (``on_fit_start``, ``on_epoch_start``, ``on_step_end``,
``on_epoch_end``, ``on_fit_end``) and may change the model or the optimizer's parameters there. What it must
carry across an interruption goes through ``state_dict`` / ``load_state_dict``: the trainer stores it in every
checkpoint under the callback's ``state_key``. Options that act during training (lookahead, the transfer
plan's freezing, pictures, a model's data-dependent init) are callbacks, not trainer arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnbench.models.hooks import TrainingHooks

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer


class Callback:
    """Every hook does nothing unless overridden."""

    state_key: str | None = None  # set to keep state_dict() in checkpoints

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step (also when resuming: ``trainer.state.step`` says where)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before the first batch of (0-based) ``epoch``, after ``model.train()``."""

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        """After optimizer step number ``step`` (1-based) and the scheduler's step."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        """After the evaluation of completed epoch number ``epoch`` (1-based), before its checkpoint."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last step, or when stopped."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """``state`` is None when the checkpoint was written without this callback."""


class FitStart(Callback):
    """Calls ``fn()`` when training starts (the command makes the run directory its own there)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def on_fit_start(self, trainer: Trainer) -> None:
        self.fn()


class ModelHooks(Callback):
    """Calls a model's ``TrainingHooks``: ``init_from_data`` before training from scratch (not on resume, where
    the checkpoint holds the result), ``on_epoch_start`` before each epoch."""

    def __init__(self, model: TrainingHooks, init: bool = True, init_images: int = 5000) -> None:
        self.model = model
        self.init = init
        self.init_images = init_images

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.init and trainer.state.step == 0:
            self.model.init_from_data(trainer.loaders["train"].head(self.init_images))

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.model.on_epoch_start(epoch)
