"""The search: ask the study for a batch of trials, launch them as Hydra jobs, tell it their results, until the
study holds ``n_trials``; then write the best to ``optimization_results.yaml`` in the sweep directory.

Each job gets the trial's parameters as overrides, with ``sweep.trial`` and ``sweep.study`` saying which trial it
is: with a pruner, the job reports its validation accuracy after every epoch and ends early when the pruner says
so (it tells the study itself; the trial is then ``pruned``, not failed).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobStatus
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from cnnbench.errors import CnnbenchError
from cnnbench.signals import Terminated
from hydra_plugins.cnnbench_sweeper import study as studies
from hydra_plugins.cnnbench_sweeper.optuna_sweeper import OptunaSweeperConf
from hydra_plugins.cnnbench_sweeper.search_space import as_override, search_space

log = logging.getLogger(__name__)
DIRECTIONS = ("minimize", "maximize")


class StudySweep:
    """One sweeper process's part of a search (``OptunaSweeperConf``)."""

    def __init__(self, conf: OptunaSweeperConf, launcher: Any, config: DictConfig) -> None:
        self.conf = conf
        self.launcher = launcher
        self.config = config
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.name = conf.study_name or self.sweep_dir.name
        self.direction = self._direction()
        self.launched = 0
        self.failed = 0

    def _direction(self) -> str:
        direction = self.conf.direction
        if isinstance(direction, (list, tuple)) or OmegaConf.is_list(direction):
            if len(direction) != 1:
                raise CnnbenchError("hydra.sweeper.direction: a cnnbench job returns one value (its best validation "
                                    "accuracy): give one direction")
            direction = direction[0]
        if str(direction) not in DIRECTIONS:
            raise CnnbenchError(f"hydra.sweeper.direction={direction}: choose minimize or maximize")
        return str(direction)

    def run(self, arguments: list[str]) -> None:
        space, fixed = search_space(OmegaConf.to_container(self.conf.params) if self.conf.params else None,
                                    arguments)
        if not space:
            raise CnnbenchError("the Optuna sweeper has nothing to search: give hydra.sweeper.params or a sweep "
                                "(choice(...), range(...), interval(...)) on the command line")
        self._check_launcher()
        pruner = studies.make_pruner(self.conf.pruner, self.conf.pruner_startup_trials, self.conf.pruner_warmup_epochs)
        study = studies.open_study(self.name, self.conf.storage, self.direction, pruner, self._sampler(space))
        studies.check_study(study, self.direction, space, self.conf.storage or "memory")
        held = len(studies.counted(study))
        log.info(f"Study {self.name} holds {held} of its n_trials={self.conf.n_trials} trials: this sweep runs up "
                 f"to {max(self.conf.n_trials - held, 0)}")
        while self.failed < self.conf.n_trials and Terminated.received is None:  # (a search whose every trial
            # fails stops, said; so does one stopped by a signal)
            batch = self._ask(study, space)
            if not batch:
                break
            self._launch(study, batch, fixed)
        if self.failed >= self.conf.n_trials:
            log.warning(f"{self.failed} trials of this sweep failed: it stops; see the jobs' errors")
        self._write_best(study)

    def _check_launcher(self) -> None:
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        if self.conf.pruner and not self.conf.storage and not isinstance(self.launcher, BasicLauncher):
            raise CnnbenchError(f"hydra.sweeper.pruner={self.conf.pruner} with jobs in other processes needs a "
                                "storage they reach: set hydra.sweeper.storage=sqlite:///study.db or "
                                "journal:///path/study.log")

    def _sampler(self, space: dict) -> optuna.samplers.BaseSampler:
        """The configured sampler, seeded per trial (``studies.SeededPerTrial``); a grid over the space."""
        cfg = OmegaConf.to_container(OmegaConf.create(self.conf.sampler)) if self.conf.sampler else {}
        seed = cfg.pop("seed", None)
        target = cfg.get("_target_", "")
        extra = {}
        if target.endswith("GridSampler"):
            extra["search_space"] = grid(space)
        return studies.SeededPerTrial(lambda s: instantiate({**cfg, **extra, "seed": s}), seed)

    def _ask(self, study: optuna.Study, space: dict) -> list[optuna.Trial]:
        """Up to ``n_jobs`` new trials with their parameters, none beyond what the study lacks: a trial asked by
        two processes at once for the last place is given up by the later one (failed, said in its attributes)."""
        lacking = self.conf.n_trials - len(studies.counted(study))
        trials = []
        for _ in range(max(0, min(self.conf.n_jobs, lacking))):
            trial = study.ask()
            trial.set_user_attr(studies.OWNER, studies.owner())
            for key, dist in space.items():
                suggest(trial, key, dist)
            trials.append(trial)
        allowed = set(studies.counted(study)[:self.conf.n_trials])
        kept = [t for t in trials if t.number in allowed]
        for trial in trials[len(kept):]:
            trial.set_user_attr(studies.GIVEN_UP, f"the study had its n_trials={self.conf.n_trials}")
            study.tell(trial, state=TrialState.FAIL)
        return kept

    def _launch(self, study: optuna.Study, batch: list[optuna.Trial], fixed: list[str]) -> None:
        jobs = [[*fixed, *(as_override(k, v) for k, v in t.params.items()), f"sweep.trial={t.number}",
                 as_override("sweep.study", self.name)] for t in batch]
        returns = self.launcher.launch(jobs, initial_job_idx=self.launched)
        self.launched += len(batch)
        for trial, ret in zip(batch, returns, strict=True):
            value = ret.return_value if ret.status == JobStatus.COMPLETED else None
            state = next(t.state for t in study.get_trials(deepcopy=False) if t.number == trial.number)
            if state != TrialState.RUNNING:  # (the job told it: pruned)
                continue
            if value is None:
                self.failed += 1
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, float(value))

    def _write_best(self, study: optuna.Study) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            log.warning(f"study {self.name} has no complete trial yet")
            return
        best = study.best_trial
        results = {"name": "optuna", "study_name": self.name, "best_trial": best.number,
                   "best_params": dict(best.params), "best_value": best.value}
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info(f"Best trial {best.number} of study {self.name}: value {best.value}, params {dict(best.params)}")


def suggest(trial: optuna.Trial, key: str, dist: Any) -> Any:
    """Draw ``key`` from ``dist`` through the trial's public suggest_* API."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


def grid(space: dict) -> dict[str, list]:
    """The grid sampler's values per key: choices, and ranges with a step."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            out[key] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            out[key] = list(range(dist.low, dist.high + 1, dist.step))
        elif isinstance(dist, FloatDistribution) and dist.step is not None:
            count = round((dist.high - dist.low) / dist.step) + 1
            out[key] = [dist.low + i * dist.step for i in range(count)]
        else:
            raise CnnbenchError(f"hydra/sweeper/sampler=grid needs choice(...) or range(...) for {key}, not an "
                                f"interval")
    return out
