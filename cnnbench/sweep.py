"""A sweep (``cnnbench -m``) as a whole: its directory held by one sweep at a time, each job's outcome recorded,
and the leaderboard and exit status of the jobs this sweep ran.

- A sweep starts only in an empty directory, or continues the sweep in it: the same overrides with
  ``sweep.skip_completed=true``. Another sweep's directory, or a folder of other files, is refused before any job
  runs (``multirun.yaml`` and the runs stay as they were), and so is a directory another sweep is running in.
- Every job writes its outcome (completed, skipped, failed, refused, interrupted) to
  ``<sweep dir>/.cnnbench-sweep/jobs/<job number>.json``, also when it was refused before it could touch its run
  directory; at the end the command exits 1 when any job did not complete, and says how many.
- A sweep stopped by SIGTERM (or Ctrl-C) stops its jobs: the sweep's process passes the signal on to the
  processes running a job on this host (each registered in ``.cnnbench-sweep/running/``) and leaves
  ``.cnnbench-sweep/stopped``, so that no job starts after it; the jobs record themselves as interrupted, the
  leaderboard is written, and the command says how to continue the sweep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cnnbench import fileio, signals
from cnnbench.cli import fail
from cnnbench.errors import CnnbenchError
from cnnbench.overrides import parse_overrides
from cnnbench.rundir import RunDirLock, job_overrides
from cnnbench.signals import Terminated

if TYPE_CHECKING:
    from cnnbench.engine.callbacks import Callback as TrainerCallback

MARKER = ".cnnbench-sweep"  # <sweep dir>/.cnnbench-sweep/{sweep.json, jobs/<n>.json, running/<pid>, stopped}
DONE = ("completed", "skipped", "pruned")


def register_plugins() -> None:
    """Register cnnbench's Hydra plugins (the top-level hydra_plugins/, ``hydra_plugins.cnnbench_*``) with
    Hydra's public ``Plugins.register``: its scan lists only folders on ``hydra_plugins.__path__``, which an
    editable install does not extend, and it runs once per process."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.cnnbench_sweeper.optuna_sweeper import OptunaSweeper, register

    plugins = Plugins.instance()  # (its scan first: a hydra-optuna-sweeper installed beside would take the name)
    register()  # hydra/sweeper=optuna is cnnbench's
    plugins.register(OptunaSweeper)


def check_sweep_dir(sweep_dir: Path, overrides: list[str], skip_completed: bool) -> None:
    """Refuse a directory that holds another sweep, or other files, unless this sweep continues it."""
    if not sweep_dir.is_dir() or not any(sweep_dir.iterdir()):
        return
    record = sweep_dir / MARKER / "sweep.json"
    if not record.is_file():
        names = sorted(e.name for e in sweep_dir.iterdir())[:3]
        raise CnnbenchError(f"hydra.sweep.dir={sweep_dir} holds files that are not a cnnbench sweep "
                            f"({', '.join(names)}); choose an empty or new hydra.sweep.dir")
    try:
        earlier = json.loads(fileio.read_regular(record, follow=False)).get("overrides", [])
    except (OSError, ValueError, AttributeError):
        earlier = None
    if not skip_completed or earlier is None or job_overrides(earlier) != job_overrides(overrides):
        said = " ".join(earlier) if earlier is not None else "unreadable"
        raise CnnbenchError(f"hydra.sweep.dir={sweep_dir} already holds a sweep ({said}); choose another "
                            f"hydra.sweep.dir, or continue that sweep with the same overrides and "
                            f"sweep.skip_completed=true")


def swept_keys(overrides: list[str]) -> list[str] | None:
    """The keys this job's sweep varies: those whose value here differs from the sweep's command line (``a=1,2``
    gives ``a=1``) or that only the sweeper sets (Optuna's parameters); None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return None
        record = Path(HydraConfig.get().sweep.dir) / MARKER / "sweep.json"
        sweep = json.loads(fileio.read_regular(record, follow=False))["overrides"]
    except (ValueError, OSError, KeyError, TypeError):
        return None
    given = parse_overrides(sweep)
    return [k for k, v in parse_overrides(overrides).items() if given.get(k) != v]


def record_job(status: str, error: str | None = None) -> None:
    """This job's outcome, in its sweep's record (nothing outside a multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:
        return
    if hc.mode != RunMode.MULTIRUN:
        return
    jobs = Path(hc.sweep.dir) / MARKER / "jobs"
    fileio.atomic_write_json({"status": status, "error": error, "run_dir": hc.runtime.output_dir,
                              "overrides": list(hc.overrides.task)}, jobs / f"{hc.job.num}.json")


def _sweep_dir() -> Path | None:
    """The running sweep's directory (in a job or in the sweep's own process), or None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig

    if SweepCallback.sweep_dir is not None:
        return SweepCallback.sweep_dir
    try:
        return Path(HydraConfig.get().sweep.dir)
    except (ValueError, AttributeError):
        return None


def stopped() -> bool:
    """Whether this sweep was stopped: this process received a stop signal, or the sweep's process did."""
    sweep_dir = _sweep_dir()
    return Terminated.received is not None or (sweep_dir is not None and (sweep_dir / MARKER / "stopped").exists())


@contextmanager
def running_job() -> Iterator[None]:
    """Register this process as running a job of the sweep while the block runs, and turn SIGTERM into
    ``Terminated`` meanwhile (the trainer's loop turns it into a clean stop); afterwards SIGTERM is only noted,
    so that a signal between two jobs starts no other."""
    sweep_dir = _sweep_dir()
    entry = sweep_dir / MARKER / "running" / f"{socket.gethostname()}-{os.getpid()}" if sweep_dir else None
    signals.install(signals.raise_terminated)
    if entry is not None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        entry.touch()
    try:
        yield
    finally:
        if entry is not None:
            entry.unlink(missing_ok=True)
        signals.install(signals.note_terminated)


def stop_sweep(signum: int, frame: object) -> None:  # noqa: ARG001
    """The sweep process's handler of SIGTERM: note it, leave the stop marker (no job starts after it), and pass
    the signal on to this host's processes running a job."""
    Terminated.received = signum
    sweep_dir = _sweep_dir()
    if sweep_dir is None:
        return
    with contextlib.suppress(OSError):
        (sweep_dir / MARKER).mkdir(parents=True, exist_ok=True)
        (sweep_dir / MARKER / "stopped").write_text(f"{signum}\n")
    prefix = f"{socket.gethostname()}-"
    for entry in (sweep_dir / MARKER / "running").glob(f"{prefix}*"):
        pid = entry.name.removeprefix(prefix)
        if pid.isdigit() and int(pid) != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signum)


def trial_report(cfg: DictConfig) -> TrainerCallback | None:
    """In a job of the Optuna sweeper (``sweep.trial``) whose study it can reach: the callback that reports the
    run's validation accuracy to its trial every epoch and ends the run when the pruner says so."""
    from hydra.core.hydra_config import HydraConfig

    if cfg.sweep.trial is None:
        return None
    try:
        sweeper = HydraConfig.get().sweeper
    except ValueError:  # (not under Hydra)
        return None
    from cnnbench.engine.pruning import TrialReport
    from hydra_plugins.cnnbench_sweeper.study import JobTrial, reachable

    if not reachable(cfg.sweep.study, sweeper):
        return None
    return TrialReport(JobTrial(cfg.sweep.trial, cfg.sweep.study, sweeper))


def job_outcomes(sweep_dir: Path) -> list[dict]:
    """The outcomes that this sweep's jobs recorded."""
    outcomes = []
    for path in sorted((sweep_dir / MARKER / "jobs").glob("*.json")):
        try:
            outcomes.append(json.loads(fileio.read_regular(path, follow=False)))
        except (OSError, ValueError):
            outcomes.append({"status": "failed", "error": f"{path.name}: unreadable outcome"})
    return outcomes


class SweepCallback(Callback):
    """Hydra callback: hold and check the sweep directory before the jobs, then write the leaderboard and count
    the jobs that did not complete."""

    failed: int = 0
    total: int = 0
    sweep_dir: Path | None = None  # (in the sweep's own process, while it runs)
    _lock: RunDirLock | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = list(OmegaConf.to_container(config.hydra.overrides.task))
        SweepCallback.release()  # (an earlier sweep of this process that never reached its end)
        try:
            lock = RunDirLock(sweep_dir, key="hydra.sweep.dir")
            lock.__enter__()  # held until the sweep ends (the process's end releases it in any case)
            SweepCallback._lock = lock
            check_sweep_dir(sweep_dir, overrides, bool(OmegaConf.select(config, "sweep.skip_completed")))
        except CnnbenchError as e:
            SweepCallback.release()  # a refused sweep holds nothing (main() may be called again in this process)
            fail(str(e))  # (an exit: Hydra turns a callback's exceptions into warnings and goes on)
        SweepCallback.sweep_dir = sweep_dir
        for stale in ("jobs", "running"):  # (this sweep's jobs only; a stopped sweep's marker goes too)
            shutil.rmtree(sweep_dir / MARKER / stale, ignore_errors=True)
        (sweep_dir / MARKER / "stopped").unlink(missing_ok=True)
        fileio.atomic_write_json({"overrides": overrides}, sweep_dir / MARKER / "sweep.json")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from cnnbench.report_files import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        outcomes = job_outcomes(sweep_dir)
        write_report([sweep_dir], overwrite=True)  # (the sweep's own folder, held by this sweep)
        SweepCallback.total = len(outcomes)
        SweepCallback.failed = sum(1 for o in outcomes if o.get("status") not in DONE)
        SweepCallback.release()

    @staticmethod
    def release() -> None:
        """Let go of the sweep directory's lock, if this process holds one."""
        if SweepCallback._lock is not None:
            SweepCallback._lock.__exit__()
            SweepCallback._lock = None
        SweepCallback.sweep_dir = None
