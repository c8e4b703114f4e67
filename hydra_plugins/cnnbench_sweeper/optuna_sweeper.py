"""cnnbench's Optuna sweeper: ``hydra/sweeper=optuna``, written on Optuna's ask-and-tell API (Optuna >= 4).

What users write stays hydra-optuna-sweeper's: ``hydra.sweeper.params`` in Hydra's sweep syntax, ``direction``,
``n_trials``, ``n_jobs`` (trials launched together), ``sampler`` (``hydra/sweeper/sampler=tpe|random|grid|cmaes|gp``,
or any ``_target_``), ``storage``, ``study_name``; and ``pruner`` (median, percentile, hyperband,
successive_halving) stops a trial at an epoch where it falls behind. ``n_trials`` is the study's: sweeper processes
sharing a storage and study name run ``n_trials`` together, and a rerun runs what the study lacks. The search loop
lives in ``loop.py``; this module imports no Optuna, so that Hydra's start-up stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.cnnbench_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # (the sampler stays a config: it is made anew, seeded, for every trial)
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    direction: str = "minimize"  # minimize | maximize (a cnnbench job returns its best validation accuracy)
    study_name: str | None = None  # null: named after the sweep directory
    storage: str | None = None  # null (memory) | sqlite:///study.db (any SQLAlchemy URL) | journal:///path/study.log
    n_trials: int = 20  # the study's, over every sweeper process sharing it
    n_jobs: int = 2  # trials launched together (the launcher runs them, one after the other or at once)
    pruner: str | None = None  # null | median | percentile | hyperband | successive_halving
    pruner_startup_trials: int = 3  # median, percentile: trials run to the end before any is pruned
    pruner_warmup_epochs: int = 1  # epochs every trial trains before it may be pruned
    params: dict[str, str] | None = None  # key: sweep (choice(...), range(...), interval(...), tag(log, ...))


SAMPLERS = {"tpe": "optuna.samplers.TPESampler", "random": "optuna.samplers.RandomSampler",
            "grid": "optuna.samplers.GridSampler", "cmaes": "optuna.samplers.CmaEsSampler",
            "gp": "optuna.samplers.GPSampler"}


def register() -> None:
    """``hydra/sweeper=optuna`` and its samplers (``hydra/sweeper/sampler=random``), in Hydra's config store."""
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="cnnbench")
    for name, target in SAMPLERS.items():
        store.store(group="hydra/sweeper/sampler", name=name, node={"_target_": target, "seed": None},
                    provider="cnnbench")


register()


class OptunaSweeper(Sweeper):
    """The Hydra plugin: Hydra builds it from ``hydra.sweeper``; ``loop.StudySweep`` runs the search."""

    def __init__(self, **conf: Any) -> None:
        self.conf = OptunaSweeperConf(**conf)
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        from hydra_plugins.cnnbench_sweeper.loop import StudySweep

        StudySweep(self.conf, self.launcher, self.config).run(arguments)
