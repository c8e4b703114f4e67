"""An Optuna sweeper whose ``n_trials`` is the study's, not each process's.

hydra-optuna-sweeper runs ``n_trials`` trials per sweeper process. Its recipe for searching on several machines
is several sweeper processes on one storage and study name (hydra#3091); with it, two processes run twice the
trials asked, and a sweep rerun after a kill starts its count again. This sweeper is that one with one change:
before it launches a trial it counts the study's trials, so any number of processes together run ``n_trials``,
and a rerun runs only what the study lacks.

A trial counts from the moment it is asked (running, complete or pruned). Failed trials do not count, and a
running trial whose sweeper process on this host is gone (killed) is marked failed, so it is run again. Asks are
numbered by the storage, so when two processes ask for the last trial at once, the later one gives its trial up
(marked failed, with the reason in its system attributes) and stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

import optuna
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

log = logging.getLogger(__name__)
OWNER = "cnnbench:sweeper"  # a trial's system attribute: the host and process id of the sweeper that asked it
GIVEN_UP = "cnnbench:not_run"  # why a trial was marked failed without running


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
    fail = optuna.trial.TrialState.FAIL
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.system_attrs.get(OWNER)
        if owner and not _alive(owner):
            with contextlib.suppress(RuntimeError):  # (another process may mark it first: then it has finished)
                study._storage.set_trial_system_attr(t._trial_id, GIVEN_UP, f"its sweeper process {owner} was gone")
                study.tell(t.number, state=fail)
    return sorted(t.number for t in study.get_trials(deepcopy=False) if t.state != fail)


class _Done(Exception):
    """The study has its ``n_trials``: this process stops asking."""


class SharedStudyImpl(OptunaSweeperImpl):
    """hydra-optuna-sweeper's sweep loop, run for at most what the study lacks, and stopped (``_Done``) when the
    study has its trials."""

    def sweep(self, arguments: list[str]) -> None:
        self.study_trials = self.n_trials
        study = self._open_study()
        held = len(counted(study))
        self.n_trials = max(self.study_trials - held, 0)  # (at most: other processes may run some)
        log.info(f"Study {study.study_name} holds {held} of its n_trials={self.study_trials} trials: this sweep runs "
                 f"up to {self.n_trials}")
        try:
            super().sweep(arguments)
        except _Done:
            self.n_trials = 0  # the loop's end: the best trial, written to optimization_results.yaml
            super().sweep(arguments)

    def _open_study(self, tries: int = 5) -> optuna.Study:
        """The study, created in its storage if new: sweepers that start together race to create the storage's
        tables, and the losers retry (then the tables are there)."""
        from sqlalchemy.exc import SQLAlchemyError

        def create() -> optuna.Study:
            return optuna.create_study(study_name=self.study_name, storage=self.storage,
                                       directions=self._get_directions(), load_if_exists=True)

        for attempt in range(tries - 1):
            try:
                return create()
            except SQLAlchemyError:
                time.sleep(0.5 * (attempt + 1))
        return create()

    def _configure_trials(self, trials: list, search_space: dict, fixed_params: dict) -> list:
        study = trials[0].study
        owner = f"{socket.gethostname()}:{os.getpid()}"
        for trial in trials:
            trial.set_system_attr(OWNER, owner)
        allowed = set(counted(study)[:self.study_trials])
        run = [t for t in trials if t.number in allowed]  # (a prefix: asks are numbered in order)
        for trial in trials[len(run):]:
            trial.set_system_attr(GIVEN_UP, f"the study had its n_trials={self.study_trials}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if not run:
            raise _Done
        return super()._configure_trials(run, search_space, fixed_params)
