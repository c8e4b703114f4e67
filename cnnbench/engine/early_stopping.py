"""Early stopping: end a run whose monitored metric has stopped improving (``trainer.early_stopping``).

After each epoch the monitored value (``val/acc``, ``val/loss``, ``val_ema/*`` or ``train/loss``; accuracies
must rise, losses fall) is compared with the best so far: a change of more than ``min_delta`` in the right
direction is an improvement; ``patience`` epochs in a row without one stop the run. The run then ends as a
completed one (tested on its best checkpoint), and ``results.json`` says when and why. The state is part of
every checkpoint, so a resumed run counts on from where it was, and a run that stopped stays stopped; resumed
with other settings, the new settings are applied to the run's history (``resume``).
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
            self.best = value
            self.best_epoch = epoch
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience and not last:
                self.stopped_epoch = epoch
        return self.stopped

    def summary(self) -> dict:
        """For results.json: the settings, the best value and its epoch, and whether and when it stopped."""
        return {**asdict(self), "stopped": self.stopped}

    def resume(self, saved: dict | None, history: list[dict], epochs: int) -> str | None:
        """Take the saved state when the settings are the same; otherwise the state these settings give over the
        run's ``history`` (its epochs' metrics; ``epochs``: the planned number), so that a stop and its message
        always match the history. Returns what to say when the settings changed."""
        settings = {"monitor": self.monitor, "patience": self.patience, "min_delta": self.min_delta}
        if saved is not None and all(saved.get(k) == v for k, v in settings.items()):
            self.load_state_dict(saved)
            return None
        for entry in history:
            if self.monitor in entry:
                self.update(entry["epoch"], entry, last=entry["epoch"] >= epochs)
        if saved is None:
            return None
        changed = ", ".join(f"{k} {saved.get(k)} -> {v}" for k, v in settings.items() if saved.get(k) != v)
        now = f"stops after epoch {self.stopped_epoch}" if self.stopped else "has not stopped: training goes on"
        return f"early stopping settings changed ({changed}): over the run's {len(history)} epochs the run {now}"

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict | None) -> None:
        for key, value in (state or {}).items():
            if key in ("best", "best_epoch", "bad_epochs", "stopped_epoch"):
                setattr(self, key, value)
