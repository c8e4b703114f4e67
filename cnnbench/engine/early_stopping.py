"""Early stopping: end a run whose monitored metric has stopped improving (``trainer.early_stopping``).

After each epoch the monitored value (``val/acc``, ``val/loss``, ``val_ema/*`` or ``train/loss``; accuracies
must rise, losses fall) is compared with the best so far: a change of more than ``min_delta`` in the right
direction is an improvement; ``patience`` epochs in a row without one stop the run. The run then ends as a
completed one (tested on its best checkpoint), and ``results.json`` says when and why. The state is part of
every checkpoint, so a resumed run counts on from where it was, and a run that stopped stays stopped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    monitor: str
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_epoch: int | None = None  # the epoch after which the run stopped

    @property
    def higher_is_better(self) -> bool:
        return self.monitor.endswith("/acc")

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch is not None

    def update(self, epoch: int, metrics: dict[str, float], last: bool = False) -> bool:
        """Record completed epoch ``epoch`` (1-based); true when the run should stop after it (never after
        the ``last`` epoch, which ends the run anyway: only a run cut short counts as stopped)."""
        if self.stopped:
            return True
        value = metrics[self.monitor]
        gain = (value - self.best if self.higher_is_better else self.best - value) if self.best is not None \
            else float("inf")
        if gain > self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience and not last:
                self.stopped_epoch = epoch
        return self.stopped

    def summary(self) -> dict:
        """For results.json: the settings, the best value and its epoch, and whether and when it stopped."""
        return {**asdict(self), "stopped": self.stopped}

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict | None) -> None:
        for key, value in (state or {}).items():
            if key in ("best", "best_epoch", "bad_epochs", "stopped_epoch"):
                setattr(self, key, value)
