"""A search's Optuna study, shared by its sweeper processes and its jobs: storage, checks, samplers, pruners,
and which trials count toward ``n_trials``.

Storage: none (this process's memory), any SQLAlchemy URL (``sqlite:///study.db``, ``postgresql://...``), or
``journal:///path/study.log``: Optuna's journal on a file, which processes on several nodes of a shared file
system may append to together (its lock is a symbolic link, atomic on NFS). Jobs in other processes open the
study from the same storage.

A trial counts from the moment it is asked (running, complete or pruned). Failed trials do not count, and a
running trial whose sweeper process on this host is gone (killed) is marked failed, so it is run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, distribution_to_json
from optuna.trial import TrialState

from cnnbench.errors import CnnbenchError

OWNER = "cnnbench:sweeper"  # a trial's user attribute: the host and process id of the sweeper that asked it
GIVEN_UP = "cnnbench:not_run"  # why a trial was marked failed without running
SPACE = "cnnbench:search_space"  # the study's user attribute: its search space, as JSON
PRUNERS = ("median", "percentile", "hyperband", "successive_halving", "none")
LIVE: dict[str, optuna.Study] = {}  # studies in this process's memory (no storage), by name: for in-process jobs

optuna.logging.set_verbosity(optuna.logging.WARNING)  # (one line per trial otherwise; cnnbench says what counts)


def storage_of(url: str | None) -> optuna.storages.BaseStorage:
    """The storage ``hydra.sweeper.storage`` names: None (this process's memory), journal:///<file>, or a
    SQLAlchemy URL."""
    if not url:
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal://"):
        path = Path(url.removeprefix("journal://")).expanduser().absolute()
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(url)


def make_pruner(name: str | None, startup_trials: int, warmup_epochs: int) -> optuna.pruners.BasePruner:
    """``hydra.sweeper.pruner``: median (Optuna's MedianPruner), percentile (the 25th), hyperband,
    successive_halving, or none."""
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name not in PRUNERS:
        raise CnnbenchError(f"hydra.sweeper.pruner={name}: choose one of {', '.join(PRUNERS)}")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup_epochs))
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup_epochs))


def open_study(name: str, storage: str | None, direction: str, pruner: optuna.pruners.BasePruner,
               sampler: optuna.samplers.BaseSampler | None = None, tries: int = 5) -> optuna.Study:
    """The study, created in its storage if new; sweepers that start together race to create the storage's
    tables, and the losers retry (then the tables are there)."""
    if not storage and name in LIVE:
        study = LIVE[name]
        study.sampler, study.pruner = sampler or study.sampler, pruner
        return study
    for attempt in range(tries):
        try:
            study = optuna.create_study(study_name=name, storage=storage_of(storage), direction=direction,
                                        pruner=pruner, sampler=sampler, load_if_exists=True)
            break
        except Exception:  # (SQLAlchemy's OperationalError: a table another process is creating)
            if attempt == tries - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    if not storage:
        LIVE[name] = study
    return study


def set_attr(study: optuna.Study, number: int, key: str, value: Any) -> None:
    """A user attribute on trial ``number`` of ``study``, whichever process asked it."""
    storage = study._storage  # (Optuna keeps a study's storage private; its storage API is public)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                               number)
    storage.set_trial_user_attr(trial_id, key, value)


def check_study(study: optuna.Study, direction: str, space: dict[str, BaseDistribution], where: str) -> None:
    """Refuse, before any trial is asked, a study that optimises in another direction or over another search
    space than this sweep's; a new study records its space."""
    theirs = [d.name.lower() for d in study.directions]
    if theirs != [direction]:
        raise CnnbenchError(f"study {study.study_name} in {where} {theirs[0]}s, this sweep's hydra.sweeper.direction "
                            f"is {direction}: give another hydra.sweeper.study_name, or the same direction")
    ours = {key: json.loads(distribution_to_json(d)) for key, d in space.items()}
    recorded = study.user_attrs.get(SPACE)
    if recorded is None:
        recorded = next(({k: json.loads(distribution_to_json(d)) for k, d in t.distributions.items()}
                         for t in reversed(study.get_trials(deepcopy=False)) if t.distributions), None)
    if recorded is not None and recorded != ours:
        differ = sorted(k for k in set(recorded) | set(ours) if recorded.get(k) != ours.get(k))
        raise CnnbenchError(f"study {study.study_name} in {where} searches another space ({', '.join(differ[:4])} "
                            f"differ): give another hydra.sweeper.study_name, or the same hydra.sweeper.params")
    if SPACE not in study.user_attrs:
        study.set_user_attr(SPACE, ours)


def _alive(owner: str) -> bool:
    """Whether the sweeper process ``host:pid`` may still run (any process on another host may)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (a process of another user)
        return True
    return True


def counted(study: optuna.Study) -> list[int]:
    """The numbers of the study's trials that count toward ``n_trials``, in order; running trials of a gone
    sweeper process on this host are first marked failed."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get(OWNER)
        if owner and not _alive(owner):
            with contextlib.suppress(RuntimeError, ValueError):  # (another process may mark it first)
                set_attr(study, t.number, GIVEN_UP, f"its sweeper process {owner} was gone")
                study.tell(t.number, state=TrialState.FAIL)
    return sorted(t.number for t in study.get_trials(deepcopy=False) if t.state != TrialState.FAIL)


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number`` in a search seeded ``seed``: the same trial gets the same seed in any
    process, different trials (of one process or several, of a first run or a rerun) different ones."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{number}".encode()).digest()[:4], "little")


class SeededPerTrial(optuna.samplers.BaseSampler):
    """The configured sampler, made anew for each trial with a seed of the search's seed and the trial's number
    (``trial_seed``): processes sharing a study, and a rerun after a crash, never draw the same points from the
    same seed, and a search from scratch repeats exactly. Without a seed, the sampler as it is."""

    def __init__(self, make: Callable[[int | None], optuna.samplers.BaseSampler], seed: int | None) -> None:
        self._make = make
        self._seed = seed
        self._inner = make(seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if self._seed is not None:
            self._inner = self._make(trial_seed(self._seed, trial.number))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> dict:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, search_space: dict) -> dict:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: TrialState,
                    values: list[float] | None) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


class JobTrial:
    """A job's view of its trial (``sweep.trial`` of study ``sweep.study``), opened from the sweep's storage in
    the job's own process: it reports, asks the pruner, and tells the study when it is pruned."""

    def __init__(self, number: int, name: str, sweeper: Any) -> None:
        pruner = make_pruner(sweeper.get("pruner"), sweeper.get("pruner_startup_trials", 3),
                             sweeper.get("pruner_warmup_epochs", 1))
        direction = sweeper.get("direction", "minimize")
        if not isinstance(direction, str):  # (a list of one)
            direction = direction[0]
        study = open_study(name, sweeper.get("storage"), str(direction), pruner)
        frozen = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
        if frozen is None:
            raise CnnbenchError(f"sweep.trial={number}: study {name} has no such trial")
        self.number = number
        self.study = study
        self.trial = optuna.Trial(study, frozen._trial_id)  # (the trial the sweeper asked, in this process)

    def report(self, value: float, epoch: int) -> None:
        self.trial.report(value, epoch)

    def should_prune(self) -> bool:
        return self.trial.should_prune()

    def prune(self) -> None:
        self.study.tell(self.number, state=TrialState.PRUNED)


def reachable(name: str, sweeper: Any) -> bool:
    """Whether a job in this process can open study ``name``: from a storage, or in this process's memory."""
    return bool(sweeper.get("storage")) or name in LIVE
