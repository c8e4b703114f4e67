"""A trial of a hyperparameter search, told how training goes: after every epoch the run reports its best
validation accuracy so far to its trial, and ends when the search's pruner says the trial falls behind the others
at that epoch (the run's status is then ``pruned``, and so is the trial's).

The trial is any object with ``report(value, epoch)``, ``should_prune()`` and ``prune()``: the Optuna sweeper's
``JobTrial`` (``hydra_plugins/cnnbench_sweeper/study.py``); the engine imports no Optuna.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cnnbench.engine.callbacks import Callback

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer


class TrialReport(Callback):
    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        value = trainer.state.best_val_acc if trainer.state.best_val_acc is not None else metrics.get("val/acc")
        if value is None:  # (no validation split: nothing to compare trials by)
            return
        self.trial.report(value, epoch)
        if not trainer.finished and self.trial.should_prune():
            trainer.stop("pruned")
            self.trial.prune()
            trainer.reporter.info(f"pruned after epoch {epoch}: the search's pruner found this trial behind the "
                                  f"others at that epoch (best validation accuracy {value:.2f}%)")
