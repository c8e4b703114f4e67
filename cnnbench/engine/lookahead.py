"""Lookahead with a decay that grows over training (airbench, after Zhang et al. 2019, "Lookahead optimizer").

A slow copy of the weights (and float buffers: BatchNorm statistics) follows the trained ones: every ``every``
steps, ``slow <- slow + (1 - d) * (fast - slow)`` and then ``fast <- slow``. The decay ``d = decay**every *
(t / T)**3`` is 0 early (the slow copy just follows) and reaches ``decay**every`` at the end, where it averages
away the noise of the last steps like an EMA would; unlike an EMA the trained weights are pulled back too.
At the end of training the model holds the slow weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnbench.engine.callbacks import Callback

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer


class Lookahead(Callback):
    state_key = "lookahead"

    def __init__(self, model: nn.Module, every: int, decay: float, total_steps: int = 1) -> None:
        self.model = model
        self.every = every
        self.decay = decay
        self.total_steps = max(total_steps, 1)
        self.slow = {k: v.detach().clone() for k, v in self.current().items()}

    def current(self) -> dict[str, torch.Tensor]:
        """The model's floating-point state: parameters and buffers like BatchNorm's running statistics."""
        return {k: v for k, v in self.model.state_dict().items() if v.is_floating_point()}

    def on_fit_start(self, trainer: Trainer) -> None:
        self.total_steps = max(trainer.total_steps, 1)

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        self.step(step)

    @torch.no_grad()
    def step(self, step: int) -> None:
        """Call after optimizer step number ``step`` (1-based); the last step ends on the slow weights."""
        if step % self.every == 0:
            self._sync(self.decay ** self.every * (step / self.total_steps) ** 3)
        if step >= self.total_steps:
            self.finish()

    @torch.no_grad()
    def finish(self) -> None:
        """Load the slow weights into the model (the end of training)."""
        self._sync(1.0)

    def _sync(self, d: float) -> None:
        for name, fast in self.current().items():
            slow = self.slow[name]
            slow.lerp_(fast, 1.0 - d)
            fast.copy_(slow)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.slow

    def load_state_dict(self, state: dict[str, torch.Tensor] | None) -> None:
        """A checkpoint written without lookahead starts the slow copy from the restored weights."""
        for name, value in (state or self.current()).items():
            self.slow[name].copy_(value)
