"""An exponential moving average of the weights (Polyak averaging; timm's ModelEmaV3).

After every optimizer step ``ema <- d * ema + (1 - d) * weights`` over the parameters and the floating-point
buffers (BatchNorm's running statistics); integer buffers are copied. With warm-up the decay is
``min(d, (1 + step) / (10 + step))``, so the average does not remember the random start for long. The average
is a second copy of the model, evaluated on the validation split beside the trained weights
(``val_ema/*``); the trainer keeps whichever of the two validates better.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = False) -> None:
        self.decay, self.warmup = decay, warmup
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        """The decay applied after optimizer step ``step`` (1-based)."""
        return min(self.decay, (1 + step) / (10 + step)) if self.warmup else self.decay

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average at ``model``'s weights (training starts after a data-dependent init)."""
        self.module.load_state_dict(model.state_dict())

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """One multi-tensor lerp over the floating-point tensors (timm's ModelEmaV3 does the same): on a GPU,
        hundreds of small kernels per step would cost as much as a small model's step."""
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values(), strict=True))
        floats = [(avg, now.detach()) for avg, now in pairs if avg.is_floating_point()]
        if floats:
            torch._foreach_lerp_([avg for avg, _ in floats], [now for _, now in floats], 1.0 - self.decay_at(step))
        for avg, now in pairs:
            if not avg.is_floating_point():
                avg.copy_(now)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)
