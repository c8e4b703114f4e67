"""The ``cnnbench`` command: resolve the config, build the run, fit, test, write the run directory.

A run directory holds ``.hydra/`` (the composed config and overrides), ``tensorboard/`` (event files),
``checkpoints/{last,best}.pt``, ``figures/`` and ``results.json`` (see ``cnnbench.rundir``).
torch and torchvision are imported inside ``run``: ``cnnbench --help`` and config errors need neither.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnbench import rundir
from cnnbench.cli import error_boundary, fail
from cnnbench.config import register_configs, validate
from cnnbench.errors import CnnbenchError
from cnnbench.fileio import atomic_copy, atomic_write_json
from cnnbench.leaderboard import LeaderboardCallback
from cnnbench.overrides import hydra_overrides, parse_overrides
from cnnbench.tracking import Reporter

if TYPE_CHECKING:
    from cnnbench.engine.distributed import DistInfo
    from cnnbench.engine.trainer import Trainer

register_configs()


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train and evaluate one configuration; return the results (also written to results.json).

    With ``trainer.strategy=ddp`` (under torchrun) every process calls this; rank 0 writes the run directory.
    """
    from cnnbench.assemble import build_run
    from cnnbench.engine import distributed
    from cnnbench.engine.runtime import resolve_device, resolve_precision, seed_everything
    from cnnbench.results import test_and_record
    from cnnbench.transfer.build import apply_weights_preprocessing, load_source_checkpoint

    started_at, overrides, t = time.time(), hydra_overrides(), cfg.trainer
    # Every rewrite of the config happens here, before anything is built or recorded: the pretrained weights'
    # preprocessing (then every value is checked), and transfer.checkpoint's model config, which becomes this run's.
    preprocessing = apply_weights_preprocessing(cfg, set(parse_overrides(overrides)))
    validate(cfg)
    source = load_source_checkpoint(cfg)
    dist = distributed.init(t.strategy, resolve_device(t.device))
    try:
        run_dir = distributed.shared_run_dir(run_dir)
        device = distributed.device_for(dist, resolve_device(t.device))
        precision = resolve_precision(t.precision, device)
        seed_everything(t.seed, t.deterministic)
        with Reporter(run_dir, tensorboard=cfg.logger.tensorboard and dist.is_main, progress=cfg.logger.progress,
                      quiet=not dist.is_main) as reporter:
            if cfg.logger.print_config:
                reporter.print_config(OmegaConf.to_yaml(cfg, resolve=True))
            if preprocessing:
                reporter.info(preprocessing)
            built = build_run(cfg, run_dir, device, precision, dist, reporter, source)
            if t.resume:
                resume(built.trainer, cfg, run_dir, reporter, dist)
            built.trainer.fit()
            if not dist.is_main:
                return {"status": "interrupted" if built.trainer.interrupted else "completed", "rank": dist.rank,
                        "best_val_acc": None}
            info = {"device": str(device), "processes": dist.world_size, "started_at": started_at}
            return test_and_record(cfg, built, run_dir, precision, reporter, overrides, info)
    finally:
        distributed.shutdown()


def resume(trainer: Trainer, cfg: DictConfig, run_dir: Path, reporter: Reporter, dist: DistInfo) -> None:
    """Continue the checkpoint that ``trainer.resume`` names, exactly where it stopped."""
    from cnnbench.engine.checkpoint import load_checkpoint

    source = rundir.resume_path(cfg.trainer.resume, run_dir)
    ckpt = load_checkpoint(source)
    rundir.check_same_model(ckpt, cfg)
    trainer.restore(ckpt)
    # The best checkpoint so far stays the reference for selection when continuing in a new directory.
    best_src, best_dst = source.parent / "best.pt", run_dir / "checkpoints" / "best.pt"
    if dist.is_main and best_src.is_file() and best_src.resolve() != best_dst.resolve():
        atomic_copy(best_src, best_dst)
    reporter.info(f"resumed at epoch {ckpt['epoch']}, step {ckpt['step']} from {source}")


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    from cnnbench.results import objective

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    overrides = hydra_overrides()
    prior = rundir.completed_before(run_dir)
    if prior is not None and multirun and cfg.sweep.skip_completed and rundir.same_job(prior, overrides):
        print(f"skipping {run_dir}: completed before ({' '.join(overrides)})")
        return objective(prior)
    if prior is not None and not (cfg.trainer.overwrite or cfg.trainer.resume):
        message = (f"{run_dir} already holds a completed run; choose another hydra.run.dir, or set "
                   f"trainer.overwrite=true (or trainer.resume=auto to continue it)")
        if not multirun:
            fail(message)
        print(f"error: {message}", file=sys.stderr)
        return None
    started = time.time()
    try:
        results = run(cfg, run_dir)
    except Exception as e:
        # In a sweep, one failing job (bad value, out of memory, NaN) is recorded and the others still run.
        user_error = isinstance(e, CnnbenchError)
        if not (user_error or multirun):
            raise  # a bug: keep the traceback
        message = str(e) if user_error else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        atomic_write_json({"status": "failed", "error": message, "model": cfg.model.get("name"),
                           "data": cfg.data.name, "overrides": overrides, "elapsed_s": time.time() - started},
                          run_dir / "results.json")
        if not multirun:
            fail(message)  # (inside the job: an exception would make Hydra log the job's overrides first)
        print(f"error: {message}", file=sys.stderr)
        if not user_error:
            traceback.print_exc()
        return None
    if results["status"] == "interrupted":
        sys.exit(130)
    return objective(results)


def main() -> None:
    """Console entry point of ``cnnbench``: config mistakes and user errors are one line, exit 2."""
    # Ask Hydra to raise instead of printing its multi-line report; the error boundary prints one line for
    # config mistakes and keeps real tracebacks for bugs.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    with error_boundary():
        _hydra_entry()
    if LeaderboardCallback.failed:
        fail(f"{LeaderboardCallback.failed} of {LeaderboardCallback.total} sweep jobs failed "
             f"(see leaderboard.md in the sweep directory)", code=1)


if __name__ == "__main__":
    main()
