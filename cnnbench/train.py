"""The ``cnnbench`` command, in phases: plan the run directory's reuse, resolve the config (then read-only),
settle the runtime (device, processes, threads, precision, seed), build, fit, test and record.

A run directory holds ``.hydra/`` (the composed config and overrides), ``tensorboard/<run name>/`` (events),
``checkpoints/{last,best}.pt``, ``figures/`` and ``results.json`` (see ``cnnbench.rundir``).
torch and torchvision are imported inside ``run``: ``cnnbench --help`` and config errors need neither.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnbench import manifest, rundir, signals
from cnnbench.cli import continue_command, error_boundary, fail, out_of_memory
from cnnbench.config import register_configs
from cnnbench.config.keys import explain_override_error
from cnnbench.errors import CnnbenchError, ConfigError, first_line, os_error_message
from cnnbench.fileio import atomic_copy, atomic_write_json
from cnnbench.overrides import hydra_overrides, parse_overrides
from cnnbench.signals import Terminated
from cnnbench.sweep import SweepCallback, record_job, register_plugins, running_job, stop_sweep, stopped, swept_keys
from cnnbench.tracking import Reporter, run_name

if TYPE_CHECKING:
    from cnnbench.assemble import Run
    from cnnbench.engine.runtime import Runtime
    from cnnbench.engine.trainer import Trainer

register_configs()


def run(cfg: DictConfig, run_dir: Path, on_start: Callable[[DictConfig], None] | None = None) -> dict:
    """Train and evaluate one configuration; return the results (also written to results.json). ``on_start``
    receives the resolved config when everything is built and checked, as training starts.

    With ``trainer.strategy=ddp`` (under torchrun) every process calls this; rank 0 writes the run directory.
    """
    from cnnbench.assemble import build_run
    from cnnbench.engine import distributed
    from cnnbench.engine.runtime import settle
    from cnnbench.models.registry import model_label
    from cnnbench.resolve import resolve
    from cnnbench.results import test_and_record

    started_at = time.time()
    overrides = hydra_overrides()
    swept = swept_keys(overrides)
    try:
        resolved = resolve(cfg, overrides, run_dir)
    except CnnbenchError as e:
        raise ConfigError(str(e)) from None
    cfg = resolved.cfg
    try:
        rt = settle(cfg.trainer, run_dir)
        with _reporter(cfg, rt, run_name(model_label(cfg.model), parse_overrides(overrides), swept)) as reporter:
            _announce(cfg, resolved.notes, reporter)
            built = build_run(cfg, rt.run_dir, rt.device, rt.precision, rt.dist, reporter, resolved.source)
            reporter.info(rt.describe())
            fit(built, cfg, rt, reporter, on_start)
            if not rt.dist.is_main:
                return {"status": "interrupted" if built.trainer.interrupted else "completed", "rank": rt.dist.rank,
                        "best_val_acc": None}
            info = {"device": str(rt.device), "processes": rt.dist.world_size, "threads": rt.threads[0],
                    "started_at": started_at, "run_name": reporter.log_dir.name, "swept": swept,
                    **({"input_from_source": resolved.inherited} if resolved.inherited else {})}  # (or resume)
            return test_and_record(cfg, built, rt.run_dir, rt.precision, reporter, overrides, info)
    finally:
        distributed.shutdown()


def _reporter(cfg: DictConfig, rt: Runtime, name: str) -> Reporter:
    """The console and TensorBoard of the run ``name`` (rank 0's: the other ranks stay quiet)."""
    return Reporter(rt.run_dir, tensorboard=cfg.logger.tensorboard and rt.dist.is_main, progress=cfg.logger.progress,
                    quiet=not rt.dist.is_main, run_name=name)


def _announce(cfg: DictConfig, notes: list[str], reporter: Reporter) -> None:
    """The config (``logger.print_config``) and what resolving it decided."""
    shown = cfg.logger.print_config.lower()
    if shown != "false":
        reporter.print_config(*config_text(cfg, full=shown in ("full", "true")))
    for note in notes:
        reporter.info(note)


def fit(built: Run, cfg: DictConfig, rt: Runtime, reporter: Reporter,
        on_start: Callable[[DictConfig], None] | None) -> None:
    """Train, continuing the checkpoint ``trainer.resume`` names; ``on_start`` when training starts."""
    from cnnbench.engine.callbacks import FitStart

    best = resume(built.trainer, cfg, rt.run_dir, reporter, built.data.class_names) if cfg.trainer.resume else None

    def start() -> None:  # training starts: the directory becomes this run's
        if on_start is not None:
            on_start(cfg)
        if best is not None and rt.dist.is_main:  # selection goes on from the resumed run's best checkpoint
            manifest.own(rt.run_dir, "checkpoints/best.pt")
            atomic_copy(best, rt.run_dir / "checkpoints" / "best.pt")

    built.trainer.callbacks.insert(0, FitStart(start))  # (the first callback; Ctrl-C stops cleanly there)
    built.trainer.fit()


def config_text(cfg: DictConfig, full: bool) -> tuple[str, str]:
    """The config to print and its title: all of it, or only what differs from ``cnnbench`` without arguments
    (the whole config is in ``.hydra/config.yaml`` either way)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    ours = OmegaConf.to_container(cfg, resolve=True)
    if full or not GlobalHydra.instance().is_initialized():
        return OmegaConf.to_yaml(ours), "config"
    default = OmegaConf.to_container(compose(config_name="config"), resolve=True)

    def differ(a: dict, b: dict) -> dict:
        out = {}
        for key, value in a.items():
            if isinstance(value, dict) and isinstance(b.get(key), dict):
                if sub := differ(value, b[key]):
                    out[key] = sub
            elif key not in b or b[key] != value:
                out[key] = value
        return out

    changed = differ(ours, default)
    title = "config: what differs from the defaults (all: logger.print_config=full)"
    return (OmegaConf.to_yaml(changed) if changed else "{}  # the defaults\n"), title


def resume(trainer: Trainer, cfg: DictConfig, run_dir: Path, reporter: Reporter, class_names: list[str]
           ) -> Path | None:
    """Continue the checkpoint that ``trainer.resume`` names, exactly where it stopped; return the best
    checkpoint to carry into this run directory when it continues another one's."""
    from cnnbench.engine.checkpoint import load_checkpoint

    source = rundir.resume_path(cfg.trainer.resume, run_dir)
    ckpt = load_checkpoint(source)
    rundir.check_same_run(ckpt, cfg, class_names)
    try:
        trainer.restore(ckpt)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:  # a state that does not fit what was built
        first = first_line(e, 200)
        raise CnnbenchError(f"cannot resume from {source}: its saved state does not fit this run "
                            f"({type(e).__name__}: {first}); resume with the config it was trained with") from None
    reporter.info(f"resumed at epoch {ckpt['epoch']}, step {ckpt['step']} from {source}")
    best = source.parent / "best.pt"
    return best if best.is_file() and best.resolve() != (run_dir / "checkpoints" / "best.pt").resolve() else None


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    owner = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 owns the run directory
    run_dir = Path(hydra_cfg.runtime.output_dir)
    lock = rundir.RunDirLock(run_dir) if owner else contextlib.nullcontext()
    try:
        if not multirun and "WORLD_SIZE" not in os.environ and rundir.default_run_dir(run_dir,
                                                                                       hydra_cfg.overrides.hydra):
            lock = rundir.lock_free_run_dir(run_dir)  # (two runs started in the same second: the second gets -2)
            run_dir = lock.path
        with lock, running_job() if multirun else contextlib.nullcontext():
            return _job(cfg, run_dir, multirun, owner)
    except CnnbenchError as e:  # the directory is another run's, or holds one: touch nothing
        record_job("refused", str(e))
        return _report(str(e), multirun)
    finally:
        if owner:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # (only when empty: a refused or failed start leaves no empty folder)


def _report(message: str, multirun: bool) -> None:
    """A job's error: the command's one line and exit 2; in a sweep, a line and the next job."""
    if not multirun:
        fail(message)  # (inside the job: an exception would make Hydra log the job's overrides first)
    print(f"error: {message}", file=sys.stderr)


def _job(cfg: DictConfig, run_dir: Path, multirun: bool, owner: bool) -> float | None:
    """One run in a directory this process owns: the reuse plan, the run, and what a failure records."""
    from cnnbench.engine.stop import preemption_signal
    from cnnbench.results import objective

    overrides = hydra_overrides()
    if multirun and stopped():
        record_job("interrupted", "not started: the sweep was stopped")
        return None
    plan = rundir.plan_reuse(run_dir, cfg.trainer, overrides, multirun, cfg.sweep.skip_completed, owner,
                             requeueable=preemption_signal() is not None)
    if plan.action == "refuse":
        raise CnnbenchError(plan.reason)
    if plan.reason:
        print(plan.reason)
    if plan.action == "skip":
        record_job("skipped")
        return objective(plan.prior)
    takeover = Takeover(run_dir, plan, overrides, owner)
    try:
        results = run(OmegaConf.merge(cfg, {"trainer": {"resume": plan.resume}}), run_dir, on_start=takeover)
    except Terminated as e:
        return _terminated(e, cfg, takeover, multirun)
    except Exception as e:
        return _failed(e, cfg, takeover, multirun)
    return _finished(results, multirun)


class Takeover:
    """Called when training starts: the directory becomes this run's (an earlier run's files removed when it
    replaces one; its config and overrides written)."""

    def __init__(self, run_dir: Path, plan: rundir.ReusePlan, overrides: list[str], owner: bool) -> None:
        self.run_dir = run_dir
        self.plan = plan
        self.overrides = overrides
        self.owner = owner
        self.started = False
        self.started_at = time.time()

    def __call__(self, cfg: DictConfig) -> None:
        if self.owner:
            if self.plan.action == "replace":
                kept = manifest.clear(self.run_dir)
                if kept:
                    print(f"overwrite: removed the earlier run's files; kept {len(kept)} that cnnbench did not "
                          f"write ({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''})")
            rundir.remove_stale_temporaries(self.run_dir)
            rundir.write_hydra_files(self.run_dir, cfg, HydraConfig.get(), self.overrides)
        self.started = True


def _failed(e: Exception, cfg: DictConfig, takeover: Takeover, multirun: bool) -> None:
    """A run that raised: a user's mistake is one line (and a failed results.json); a bug keeps its traceback.
    In a sweep, one failing job (bad value, out of memory, NaN) is recorded and the others still run."""
    os_message = os_error_message(e) if isinstance(e, OSError) else None
    if out_of_memory(e):
        os_message = f"out of memory: {first_line(e)}; lower data.batch_size, data.eval_batch_size or data.image_size"
    user_error = isinstance(e, CnnbenchError) or os_message is not None
    if not (user_error or multirun):
        raise e
    message = os_message or (str(e) if isinstance(e, CnnbenchError) else f"{type(e).__name__}: {first_line(e)}")
    # an earlier run's results stay until training starts; a config that fails its checks leaves nothing (a sweep
    # records the job's failure, for its leaderboard)
    written = takeover.plan.status in (None, "failed") or takeover.started
    if takeover.owner and written and (multirun or not isinstance(e, ConfigError)):
        with contextlib.suppress(OSError):
            manifest.own(takeover.run_dir, "results.json")
            atomic_write_json({"status": "failed", "error": message, "model": cfg.model.get("name"),
                               "data": cfg.data.name, "overrides": takeover.overrides,
                               "elapsed_s": time.time() - takeover.started_at}, takeover.run_dir / "results.json")
    record_job("failed", message)
    _report(message, multirun)
    if not user_error:
        traceback.print_exc()
    return None


def _terminated(e: Terminated, cfg: DictConfig, takeover: Takeover, multirun: bool) -> None:
    """SIGTERM outside the training loop: say where the run stopped and how to go on; once training has
    started, results.json says interrupted (its checkpoints stay, and ``trainer.resume=auto`` continues)."""
    if takeover.started:
        where = "after training started, outside its loop (building the run's pictures, or scoring the test split)"
        how = ("continue the sweep with sweep.skip_completed=true" if multirun else
               f"continue with: {continue_command(takeover.run_dir)}")
        if takeover.owner:
            with contextlib.suppress(OSError):
                manifest.own(takeover.run_dir, "results.json")
                atomic_write_json({"status": "interrupted", "error": f"{e} {where}", "model": cfg.model.get("name"),
                                   "data": cfg.data.name, "overrides": takeover.overrides},
                                  takeover.run_dir / "results.json")
    else:
        where, how = "before training started (reading the data or building the model)", "nothing was written; " \
            "run the command again"
    message = f"{e} {where}; {how}"
    record_job("interrupted", message)
    if multirun:
        print(f"error: {message}", file=sys.stderr)
        return None
    fail(message, code=128 + e.signum)


def _finished(results: dict, multirun: bool) -> float | None:
    """A run that returned: its objective for the sweeper. An interrupted single run exits 130 (143 after
    SIGTERM), or, preempted by submitit, hands the signal back so that submitit requeues it; an interrupted
    sweep job returns, and the sweep starts no other (``cnnbench.sweep.stopped``)."""
    from cnnbench.engine.stop import StopRequest
    from cnnbench.results import objective

    record_job(results["status"])
    if results["status"] == "interrupted":
        if StopRequest.preempted is not None:  # checkpointed: now submitit's own handler requeues the job
            os.kill(os.getpid(), StopRequest.preempted)
        if not multirun:
            sys.exit(128 + (Terminated.received or signal.SIGINT))
        return None
    return objective(results)


def main() -> None:
    """Console entry point of ``cnnbench``: config mistakes and user errors are one line, exit 2."""
    # Ask Hydra to raise instead of printing its multi-line report; the error boundary prints one line for
    # config mistakes and keeps real tracebacks for bugs.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    SweepCallback.failed = SweepCallback.total = 0  # (this call's sweep only: main() may run again in a process)
    Terminated.received = None
    multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    signals.install(stop_sweep if multirun else signals.raise_terminated)
    register_plugins()
    with error_boundary():
        try:
            _hydra_entry()
        except HydraException as e:  # a misspelt key: the closest known one, not Hydra's hint to append it
            explained = explain_override_error(e, sys.argv[1:])
            if explained is None:
                raise
            raise explained from None
    if multirun and Terminated.received is not None:
        fail(f"stopped by {signal.Signals(Terminated.received).name}: {SweepCallback.failed} of "
             f"{SweepCallback.total} sweep jobs did not complete (interrupted, or not started); continue the sweep "
             f"with the same command and sweep.skip_completed=true", code=128 + Terminated.received)
    if SweepCallback.failed:
        fail(f"{SweepCallback.failed} of {SweepCallback.total} sweep jobs failed or were refused "
             f"(see leaderboard.md in the sweep directory and the errors above)", code=1)


if __name__ == "__main__":
    main()
