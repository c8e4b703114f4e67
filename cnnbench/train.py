"""The ``cnnbench`` command: resolve the config, build the run, fit, test, write the run directory.

A run directory holds ``.hydra/`` (the composed config and overrides), ``tensorboard/<run name>/`` (events),
``checkpoints/{last,best}.pt``, ``figures/`` and ``results.json`` (see ``cnnbench.rundir``).
torch and torchvision are imported inside ``run``: ``cnnbench --help`` and config errors need neither.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnbench import rundir
from cnnbench.cli import error_boundary, fail
from cnnbench.config import register_configs, validate
from cnnbench.errors import CnnbenchError, os_error_message
from cnnbench.fileio import atomic_copy, atomic_write_json
from cnnbench.overrides import hydra_overrides, parse_overrides
from cnnbench.sweep import SweepCallback, record_job, swept_keys
from cnnbench.tracking import Reporter, run_name

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer

register_configs()


def run(cfg: DictConfig, run_dir: Path, on_start: Callable[[], None] | None = None) -> dict:
    """Train and evaluate one configuration; return the results (also written to results.json). ``on_start`` is
    called when everything is built and checked, as training starts.

    With ``trainer.strategy=ddp`` (under torchrun) every process calls this; rank 0 writes the run directory.
    """
    from cnnbench.assemble import build_run
    from cnnbench.engine import distributed, placement
    from cnnbench.engine.callbacks import FitStart
    from cnnbench.engine.runtime import resolve_device, resolve_precision, seed_everything
    from cnnbench.results import test_and_record
    from cnnbench.transfer.build import apply_weights_preprocessing, load_source_checkpoint

    started_at = time.time()
    overrides = hydra_overrides()
    t = cfg.trainer
    swept = swept_keys(overrides)
    # Every rewrite of the config happens here, before anything is built or recorded: the pretrained weights'
    # preprocessing (then every value is checked), and transfer.checkpoint's model config, which becomes this run's.
    absolute_paths(cfg)
    preprocessing = apply_weights_preprocessing(cfg, set(parse_overrides(overrides)))
    validate(cfg)
    source = load_source_checkpoint(cfg)
    device = resolve_device(t.device)
    dist = distributed.init(t.strategy, device)
    try:
        run_dir = distributed.shared_run_dir(run_dir)
        device = distributed.device_for(dist, device) if t.strategy == "ddp" else placement.sweep_device(device)
        threads = placement.settle(device, t.threads)
        load = placement.LoadProbe() if device.type == "cpu" and dist.world_size == 1 else None
        precision = resolve_precision(t.precision, device)
        seed_everything(t.seed, t.deterministic)
        with Reporter(run_dir, tensorboard=cfg.logger.tensorboard and dist.is_main, progress=cfg.logger.progress,
                      quiet=not dist.is_main, run_name=run_name(cfg.model.name, parse_overrides(overrides), swept)
                      ) as reporter:
            shown = cfg.logger.print_config.lower()
            if shown != "false":
                reporter.print_config(*config_text(cfg, full=shown in ("full", "true")))
            if preprocessing:
                reporter.info(preprocessing)
            built = build_run(cfg, run_dir, device, precision, dist, reporter, source)
            reporter.info(placement.describe(threads, load))
            best = resume(built.trainer, cfg, run_dir, reporter, built.data.class_names) if t.resume else None

            def start() -> None:  # training starts: the directory becomes this run's
                if on_start is not None:
                    on_start()
                if best is not None and dist.is_main:  # selection goes on from the resumed run's best checkpoint
                    atomic_copy(best, run_dir / "checkpoints" / "best.pt")

            built.trainer.callbacks.insert(0, FitStart(start))  # (the first callback; Ctrl-C stops cleanly there)
            built.trainer.fit()
            if not dist.is_main:
                return {"status": "interrupted" if built.trainer.interrupted else "completed", "rank": dist.rank,
                        "best_val_acc": None}
            info = {"device": str(device), "processes": dist.world_size, "threads": threads[0],
                    "started_at": started_at, "run_name": reporter.log_dir.name, "swept": swept}
            return test_and_record(cfg, built, run_dir, precision, reporter, overrides, info)
    finally:
        distributed.shutdown()


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


CONTINUE_OR_START = "continue_or_start"  # trainer.resume: continue this directory's run if it has one, else start
PATH_KEYS = ("data.root", "data.cache_dir", "transfer.checkpoint", "trainer.resume")


def absolute_paths(cfg: DictConfig) -> None:
    """The paths a run reads, made absolute before they are recorded: a command that reads the run later, from
    another working directory, finds the same files."""
    from cnnbench.models.registry import is_weights_file

    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and value and value not in ("auto", CONTINUE_OR_START):
            OmegaConf.update(cfg, key, os.path.abspath(os.path.expanduser(value)))
    if is_weights_file(cfg.model.get("weights")):  # (a torchvision weights name stays a name)
        cfg.model.weights = os.path.abspath(os.path.expanduser(cfg.model.weights))


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
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CnnbenchError(f"cannot resume from {source}: its saved state does not fit this run "
                            f"({type(e).__name__}: {first}); resume with the config it was trained with") from None
    reporter.info(f"resumed at epoch {ckpt['epoch']}, step {ckpt['step']} from {source}")
    best = source.parent / "best.pt"
    return best if best.is_file() and best.resolve() != (run_dir / "checkpoints" / "best.pt").resolve() else None


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    owner = os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 owns the run directory
    try:
        with rundir.RunDirLock(run_dir) if owner else contextlib.nullcontext():
            return _job(cfg, run_dir, multirun, owner)
    except CnnbenchError as e:  # the directory is another run's, or holds one: touch nothing
        record_job("refused", str(e))
        return _report(str(e), multirun)


def _report(message: str, multirun: bool) -> None:
    """A job's error: the command's one line and exit 2; in a sweep, a line and the next job."""
    if not multirun:
        fail(message)  # (inside the job: an exception would make Hydra log the job's overrides first)
    print(f"error: {message}", file=sys.stderr)


def resume_mode(cfg: DictConfig, run_dir: Path, status: str | None, multirun: bool, overrides: list[str]
                ) -> str | None:
    """What ``trainer.resume`` means for this directory: a resumed sweep continues its interrupted jobs; a
    submitit job (which a cluster may requeue) and ``continue_or_start`` continue this directory's own
    checkpoint when there is one, and otherwise start."""
    from cnnbench.engine.stop import preemption_signal

    resume = cfg.trainer.resume
    if multirun and cfg.sweep.skip_completed and status == "interrupted" and not resume:
        print(f"resuming {run_dir}: interrupted before ({' '.join(overrides)})")
        return "auto"
    if resume is None and preemption_signal() is not None:
        print("a submitit job: trainer.resume=continue_or_start (a requeued job continues its checkpoint)")
        resume = CONTINUE_OR_START
    if resume == CONTINUE_OR_START:  # (every rank of a restarted torchrun reads the same directory)
        return "auto" if rundir.holds_checkpoint(run_dir) else None
    return resume


def _job(cfg: DictConfig, run_dir: Path, multirun: bool, owner: bool) -> float | None:
    """One run in a directory this process owns: the reuse rules, the run, and what a failure records."""
    from cnnbench.engine.stop import StopRequest
    from cnnbench.results import objective

    overrides = hydra_overrides()
    prior = rundir.earlier_results(run_dir) if owner else None
    status = rundir.prior_status(run_dir, prior) if owner else None
    if status == "completed" and multirun and cfg.sweep.skip_completed and rundir.same_job(prior, overrides):
        print(f"skipping {run_dir}: completed before ({' '.join(overrides)})")
        record_job("skipped")
        return objective(prior)
    cfg.trainer.resume = resume_mode(cfg, run_dir, status, multirun, overrides)
    rundir.check_reuse(run_dir, status, cfg.trainer.resume, cfg.trainer.overwrite)
    started_at, started = time.time(), []

    def on_start() -> None:
        """Training starts: the directory becomes this run's (old run removed when overwriting)."""
        if owner:
            if status is not None and cfg.trainer.overwrite:
                kept = rundir.clear(run_dir)
                if kept:
                    print(f"overwrite: removed the earlier run's files; kept {len(kept)} that cnnbench did not "
                          f"write ({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''})")
            rundir.remove_stale_temporaries(run_dir)
            rundir.write_hydra_files(run_dir, cfg, HydraConfig.get(), overrides)
        started.append(True)

    try:
        results = run(cfg, run_dir, on_start=on_start)
    except Exception as e:
        # In a sweep, one failing job (bad value, out of memory, NaN) is recorded and the others still run.
        os_message = os_error_message(e) if isinstance(e, OSError) else None
        user_error = isinstance(e, CnnbenchError) or os_message is not None
        if not (user_error or multirun):
            raise  # a bug: keep the traceback
        message = os_message or (str(e) if isinstance(e, CnnbenchError) else
                                 f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        if owner and (status in (None, "failed") or started):  # an earlier run's results stay until training starts
            with contextlib.suppress(OSError):
                rundir.own(run_dir, "results.json")
                atomic_write_json({"status": "failed", "error": message, "model": cfg.model.get("name"),
                                   "data": cfg.data.name, "overrides": overrides,
                                   "elapsed_s": time.time() - started_at}, run_dir / "results.json")
        record_job("failed", message)
        _report(message, multirun)
        if not user_error:
            traceback.print_exc()
        return None
    record_job(results["status"])
    if results["status"] == "interrupted":
        if StopRequest.preempted is not None:  # checkpointed: now submitit's own handler requeues the job
            os.kill(os.getpid(), StopRequest.preempted)
        sys.exit(130)
    return objective(results)


def main() -> None:
    """Console entry point of ``cnnbench``: config mistakes and user errors are one line, exit 2."""
    # Ask Hydra to raise instead of printing its multi-line report; the error boundary prints one line for
    # config mistakes and keeps real tracebacks for bugs.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    SweepCallback.failed = SweepCallback.total = 0  # (this call's sweep only: main() may run again in a process)
    with error_boundary():
        _hydra_entry()
    if SweepCallback.failed:
        fail(f"{SweepCallback.failed} of {SweepCallback.total} sweep jobs failed or were refused "
             f"(see leaderboard.md in the sweep directory and the errors above)", code=1)


if __name__ == "__main__":
    main()
