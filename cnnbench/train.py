"""The ``cnnbench`` command: compose a config with Hydra, train, evaluate, and write the run directory.

A run directory holds ``.hydra/`` (the composed config and overrides), ``tensorboard/`` (event files),
``checkpoints/{last,best}.pt`` and ``results.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from cnnbench.analysis import count_macs
from cnnbench.config import register_configs, to_container, validate
from cnnbench.data import dataset_summary, load_data, make_loaders
from cnnbench.engine import distributed
from cnnbench.engine.checkpoint import atomic_copy, atomic_write_json, checkpoint_in, load_checkpoint
from cnnbench.engine.lookahead import Lookahead
from cnnbench.engine.optim import build_optimizer, build_scheduler
from cnnbench.engine.runtime import has_conv, resolve_device, resolve_precision, seed_everything
from cnnbench.engine.trainer import Trainer, accuracy, predict
from cnnbench.errors import CnnbenchError
from cnnbench.report import LeaderboardCallback, parse_overrides
from cnnbench.tracking import Reporter
from cnnbench.transfer.build import apply_weights_preprocessing, build_start_model
from cnnbench.transfer.strategy import TransferPlan
from cnnbench.visuals import Visualizer

register_configs()


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train and evaluate one configuration; return the results (also written to results.json).

    With ``trainer.strategy=ddp`` (under torchrun) every process calls this; rank 0 writes the run directory.
    """
    started_at = time.time()
    validate(cfg)
    device = resolve_device(cfg.trainer.device)
    dist = distributed.init(cfg.trainer.strategy, device)
    try:
        return _run(cfg, _shared_run_dir(run_dir, dist), distributed.device_for(dist, device), dist, started_at)
    finally:
        distributed.shutdown()


def _shared_run_dir(run_dir: Path, dist: distributed.DistInfo) -> Path:
    """Rank 0's run directory, on every process. Hydra made one per process (each with its own time stamp):
    another rank's, holding nothing but Hydra's config copy, is removed."""
    shared = Path(distributed.broadcast(str(run_dir)))
    if shared != run_dir and {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir)
    return shared


def _run(cfg: DictConfig, run_dir: Path, device: torch.device, dist: distributed.DistInfo,
         started_at: float) -> dict:
    t = cfg.trainer
    precision = resolve_precision(t.precision, device)
    seed_everything(t.seed, t.deterministic)

    reporter = Reporter(run_dir, tensorboard=cfg.logger.tensorboard and dist.is_main,
                        progress=cfg.logger.progress, quiet=not dist.is_main)
    try:
        if cfg.logger.print_config:
            reporter.print_config(OmegaConf.to_yaml(cfg, resolve=True))
        preprocessing = apply_weights_preprocessing(cfg, set(parse_overrides(_overrides())))
        if preprocessing:
            reporter.info(preprocessing)
        data = load_data(cfg.data)
        reporter.info(f"data: {cfg.data.name}, {dataset_summary(data)}")

        model, model_cfg, notes = build_start_model(cfg, data.num_classes, data.channels, data.image_size)
        cfg.model = model_cfg  # with transfer.checkpoint: the earlier run's model, recorded as this run's
        for note in notes:
            reporter.info(note)
        channels_last = t.channels_last if t.channels_last is not None else (
            has_conv(model) and device.type in ("cpu", "cuda"))
        model = model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
        params = sum(p.numel() for p in model.parameters())
        macs = count_macs(model, (data.channels, data.image_size, data.image_size))
        compiled = torch.compile(model) if t.compile else None
        reporter.info(f"model: {cfg.model.name}, {params:,} parameters; device {device}, precision {precision.name}"
                      f"{', channels_last' if channels_last else ''}{', compiled' if compiled else ''}")

        loaders = make_loaders(data, cfg.data, device, seed=t.seed, channels_last=channels_last, rank=dist.rank,
                               world_size=dist.world_size)
        if hasattr(model, "init_from_data") and cfg.transfer.strategy == "scratch":
            # data-dependent initialisation (airbench's whitening stem): up to 5,000 un-augmented training images
            model.init_from_data(loaders["train"].normalize(data.train.images[:5000].to(device)))
        if dist.world_size > 1:
            reporter.info(f"data parallel: {dist.world_size} processes x batch {cfg.data.batch_size}")
        steps_per_epoch = len(loaders["train"])
        total_steps = t.epochs * steps_per_epoch
        if t.max_steps is not None:
            total_steps = min(total_steps, t.max_steps)
        plan = TransferPlan(model, cfg.transfer, reporter) if cfg.transfer.strategy != "scratch" else None
        groups = plan.param_groups(cfg.optimizer.lr) if plan else list(model.parameters())
        optimizer = build_optimizer(cfg.optimizer, groups, model)
        scheduler = build_scheduler(optimizer, cfg.scheduler, steps_per_epoch, total_steps)

        visualizer = None
        log = cfg.logger
        if dist.is_main and (log.image_every or log.figures or reporter.writer is not None):
            samples = loaders["test"].transform(data.test.images[:log.num_samples].to(device))
            visualizer = Visualizer(reporter.writer, run_dir, model, samples, loaders["test"].mean,
                                    loaders["test"].std, list(log.feature_layers) if log.feature_layers else None,
                                    data.class_names, figures=log.figures)

        trainer = Trainer(
            model, optimizer, scheduler, loaders, precision, reporter, run_dir,
            epochs=t.epochs, total_steps=total_steps, scheduler_per_step=cfg.scheduler.interval == "step",
            label_smoothing=t.label_smoothing, tta=t.tta, grad_clip=t.grad_clip, eval_every=t.eval_every,
            log_every=t.log_every, checkpoint_every=t.checkpoint_every,
            checkpoint_every_steps=t.checkpoint_every_steps, config=to_container(cfg), compiled=compiled,
            visualizer=visualizer, image_every=log.image_every, epoch_start=_epoch_hooks(plan, model),
            meta={"class_names": data.class_names, "channels": data.channels, "image_size": data.image_size},
            dist=dist, lookahead=Lookahead(model, t.lookahead_every, t.lookahead_decay, total_steps)
            if t.lookahead_every else None,
        )
        if t.resume:
            source = resume_path(t.resume, run_dir)
            ckpt = load_checkpoint(source)
            check_same_model(ckpt, cfg)
            trainer.restore(ckpt)
            # The best checkpoint so far stays the reference for selection when continuing in a new directory.
            best_src, best_dst = source.parent / "best.pt", run_dir / "checkpoints" / "best.pt"
            if dist.is_main and best_src.is_file() and best_src.resolve() != best_dst.resolve():
                atomic_copy(best_src, best_dst)
            reporter.info(f"resumed at epoch {ckpt['epoch']}, step {ckpt['step']} from {source}")
        state = trainer.fit()
        status = "interrupted" if trainer.interrupted else "completed"
        if not dist.is_main:
            return {"status": status, "rank": dist.rank, "best_val_acc": None}

        # The test set is scored once, on the checkpoint chosen by validation accuracy (never by test accuracy).
        model.load_state_dict(load_checkpoint(run_dir / "checkpoints" / "best.pt")["model"])
        test_loss, preds = predict(compiled or model, loaders["test"], precision, t.tta)
        test_acc = accuracy(preds, data.test.labels)
        reporter.scalars({"test/acc": test_acc, "test/loss": test_loss}, state.step)
        per_class = visualizer.log_test(preds, data.test.labels, data.test.images, state.step) if visualizer else {}
        results = {
            "status": status,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "params": params,
            "macs": macs,
            "test_acc": test_acc,
            "test_loss": test_loss,
            "best_val_acc": state.best_val_acc,
            "epochs_completed": state.epoch,
            "steps": state.step,
            "train_time_s": state.train_time_s,
            "train_images_per_s": state.images_seen / max(state.train_time_s, 1e-9),
            "image_logging_s": state.image_logging_s,
            "device": str(device),
            "processes": dist.world_size,
            "precision": precision.name,
            "channels_last": channels_last,
            "seed": t.seed,
            "overrides": _overrides(),
            "run_dir": str(run_dir),
            "started_at": started_at,
            "finished_at": time.time(),
            "test_acc_per_class": per_class,
            "history": state.history,
        }
        atomic_write_json(results, run_dir / "results.json")
        reporter.hparams(_hparams(cfg), {"hparam/test_acc": test_acc, "hparam/best_val_acc": state.best_val_acc})
        reporter.summary(results)
        if trainer.interrupted:
            reporter.info(f"interrupted after step {state.step}; checkpoint in {run_dir / 'checkpoints' / 'last.pt'}")
        return results
    finally:
        reporter.close()


def _epoch_hooks(plan: TransferPlan | None, model: torch.nn.Module) -> Callable[[int, int], None] | None:
    """What runs before each epoch: the transfer strategy's freezing, then the model's own hook (airbench
    freezes its stem's bias after a few epochs)."""
    hooks = [h for h in (plan.on_epoch_start if plan else None, getattr(model, "on_epoch_start", None)) if h]
    if not hooks:
        return None

    def run(epoch: int, step: int) -> None:
        for hook in hooks:
            hook(epoch, step)
    return run


def resume_path(resume: str, run_dir: Path) -> Path:
    """The checkpoint that ``trainer.resume`` names: a .pt file, a run directory's last.pt, or ``auto``."""
    path = checkpoint_in(run_dir if resume == "auto" else resume, "last.pt")
    if not path.is_file():
        where = "this run directory (pass hydra.run.dir=<the run to continue>)" if resume == "auto" else resume
        raise CnnbenchError(f"trainer.resume={resume}: no checkpoint at {path}; give a run directory, a .pt file, "
                            f"or auto with {where}")
    return path


def check_same_model(ckpt: dict, cfg: DictConfig) -> None:
    """Refuse a checkpoint trained with another architecture (or other model options)."""
    theirs = (ckpt.get("config") or {}).get("model")
    ours = OmegaConf.to_container(cfg.model, resolve=True)
    if theirs != ours:
        raise CnnbenchError(f"the checkpoint was trained with model {theirs}, not {ours}; resume with the same model")


def _hparams(cfg: DictConfig) -> dict[str, str | int | float | bool]:
    """What TensorBoard's HParams tab compares: the main choices plus every command-line override."""
    values: dict[str, str | int | float | bool] = {
        "model": cfg.model.name, "data": cfg.data.name, "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        "lr": cfg.optimizer.lr, "batch_size": cfg.data.batch_size, "epochs": cfg.trainer.epochs,
        "scheduler": cfg.scheduler.name, "transfer": cfg.transfer.strategy, "seed": cfg.trainer.seed,
    }
    for key, value in parse_overrides(_overrides()).items():
        values.setdefault(key, value)
    return values


def _overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not running under Hydra (called from Python)
        return []


def _is_multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


def _objective(results: dict) -> float | None:
    """What a sweeper maximises: validation accuracy (test accuracy only when there is no validation split)."""
    return results["best_val_acc"] if results.get("best_val_acc") is not None else results.get("test_acc")


def _completed_before(run_dir: Path) -> dict | None:
    """The results.json of an earlier completed run in this directory, if any."""
    try:
        prior = json.loads((run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return prior if prior.get("status") == "completed" else None


def _same_job(prior: dict) -> bool:
    """Whether earlier results came from the same overrides (sweep.* switches aside)."""
    def job(overrides: list[str]) -> list[str]:
        return [o for o in overrides if not o.startswith("sweep.")]

    return job(prior.get("overrides", [])) == job(_overrides())


@hydra.main(version_base="1.3", config_path="pkg://cnnbench.conf", config_name="config")
def _hydra_entry(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _is_multirun()
    prior = _completed_before(run_dir)
    if prior is not None and multirun and cfg.sweep.skip_completed and _same_job(prior):
        print(f"skipping {run_dir}: completed before ({' '.join(_overrides())})")
        return _objective(prior)
    started = time.time()
    if prior is not None and not (cfg.trainer.overwrite or cfg.trainer.resume):
        print(f"error: {run_dir} already holds a completed run; choose another hydra.run.dir, or set "
              f"trainer.overwrite=true (or trainer.resume=auto to continue it)", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        return None
    try:
        results = run(cfg, run_dir)
    except Exception as e:
        # In a sweep, one failing job (bad value, out of memory, NaN) is recorded and the others still run.
        user_error = isinstance(e, CnnbenchError)
        if not (user_error or multirun):
            raise  # a bug: keep the traceback
        message = str(e) if user_error else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        atomic_write_json({"status": "failed", "error": message, "model": cfg.model.get("name"),
                           "data": cfg.data.name, "overrides": _overrides(), "elapsed_s": time.time() - started},
                          run_dir / "results.json")
        print(f"error: {message}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        if not user_error:
            traceback.print_exc()
        return None
    if results["status"] == "interrupted":
        sys.exit(130)
    return _objective(results)


def one_line(error: BaseException) -> str:
    """Fold a Hydra/OmegaConf error (several lines with key dumps) into one readable line."""
    parts: list[str] = []
    for exc in (error, error.__cause__):
        if exc is None:
            continue
        text = str(exc)
        head, _, options = text.partition("Available options in")
        for line in head.splitlines():
            line = line.strip()
            if line and not line.startswith(("full_key:", "reference_type=", "object_type=", "Config search path")):
                parts.append(line.rstrip(".:"))
        if options:  # Hydra lists a group's options one per line: make it "available ...: a, b, c"
            group, *names = options.split("\n")
            parts.append(f"available options in{group.rstrip(':')}: "
                         + ", ".join(n.strip() for n in names if n.strip() and "search path" not in n.lower()
                                     and not n.strip().startswith("provider=")))
    return "; ".join(dict.fromkeys(parts)) or type(error).__name__


def main() -> None:
    """Console entry point of ``cnnbench``: Hydra's own config errors become one line, like ours."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    # Ask Hydra to raise instead of printing its multi-line report; we print one line for config mistakes
    # and keep real tracebacks for bugs.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_entry()
    except (HydraException, OmegaConfBaseException) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    if LeaderboardCallback.failed:
        print(f"error: {LeaderboardCallback.failed} of {LeaderboardCallback.total} sweep jobs failed "
              f"(see leaderboard.md in the sweep directory)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
