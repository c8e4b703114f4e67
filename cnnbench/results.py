"""The end of a run: score the test split once, on the checkpoint that validation chose, and record it all."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cnnbench.assemble import Run
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.evaluate import metrics, predict
from cnnbench.engine.hardware import efficiency, machine_name, peak_tflops
from cnnbench.engine.runtime import Precision
from cnnbench.engine.trainer import Trainer
from cnnbench.fileio import atomic_write_json
from cnnbench.overrides import parse_overrides
from cnnbench.provenance import record
from cnnbench.rundir import own
from cnnbench.tracking import Reporter


def test_and_record(cfg: DictConfig, run: Run, run_dir: Path, precision: Precision, reporter: Reporter,
                    overrides: list[str], info: dict) -> dict:
    """Score the test split on ``best.pt`` (never chosen by test accuracy), write results.json, log the
    test pictures and HParams, and print the summary. ``info``: the run's device, processes and start time."""
    trainer, state = run.trainer, run.trainer.state
    best = run_dir / "checkpoints" / "best.pt"
    test: dict = {"acc": None, "loss": None, "per_class": {}}
    scored_step, scored_weights = None, None  # the step and weights (raw or ema) the test scores belong to
    if best.is_file():  # (absent only when stopped before the first validation: then nothing is scored)
        ckpt = load_checkpoint(best)
        run.model.load_state_dict(ckpt["model"])
        scored_step, scored_weights = ckpt["step"], ckpt.get("weights", "raw")
        net = run.model if run.compiled is None else run.compiled
        scores = predict(net, run.loaders["test"], precision, cfg.trainer.tta)
        test = metrics(scores, run.data.class_names)
        reporter.scalars({"test/acc": test["acc"], "test/loss": test["loss"]}, state.step)
    per_class_acc = {name: m["recall"] for name, m in test["per_class"].items()}
    if run.pictures is not None and scored_step is not None:
        run.pictures.log_test(scores, test["per_class"], lambda i: run.loaders["test"].images(i).cpu(), state.step)
    results = {
        "status": "interrupted" if trainer.interrupted else "completed",
        "model": cfg.model.name,
        "data": cfg.data.name,
        "params": run.params,
        "macs": run.macs,
        "test_acc": test["acc"],
        "test_loss": test["loss"],
        **{f"test_{k}": test[k] for k in ("top5_acc", "balanced_acc", "macro_f1", "ece", "brier") if k in test},
        "best_val_acc": state.best_val_acc,
        "scored_step": scored_step,
        "scored_weights": scored_weights,
        **({"early_stopping": trainer.early_stopping.summary()} if trainer.early_stopping is not None else {}),
        "epochs_completed": state.epoch,
        "steps": state.step,
        "train_time_s": state.train_time_s,
        "train_images_per_s": state.images_seen / max(state.train_time_s, 1e-9),
        "image_logging_s": run.pictures.seconds if run.pictures is not None else 0.0,
        **info,
        "precision": precision.name,
        **speed(run, precision, info["device"], info["processes"]),
        "channels_last": run.channels_last,
        "seed": cfg.trainer.seed,
        "overrides": overrides,
        "provenance": record(["cnnbench", *overrides]),
        "run_dir": str(run_dir),
        "finished_at": time.time(),
        "test_acc_per_class": per_class_acc,
        "test_per_class": test["per_class"],
        "history": state.history,
    }
    own(run_dir, "results.json")
    atomic_write_json(results, run_dir / "results.json")
    train = run.loaders["train"]
    columns = hparams(cfg, overrides, train.sampler.batch_size, run.data.image_size, info.get("swept"))
    reporter.hparams({**columns, "params": run.params, "macs": run.macs}, HPARAMS_METRICS,
                     shown=[*SHOWN, *(k for k in columns if k in (info.get("swept") or ()))])
    reporter.summary(results)
    _notes(trainer, scored_weights, run_dir, reporter)
    return results


def _notes(trainer: Trainer, scored_weights: str | None, run_dir: Path, reporter: Reporter) -> None:
    """What the summary table does not say: an early stop, the EMA weights tested, an interruption."""
    stopped = trainer.early_stopping
    if stopped is not None and stopped.stopped:
        reporter.info(f"early stopping after epoch {stopped.stopped_epoch}: {stopped.monitor} did not improve on "
                      f"{stopped.best:.4g} (epoch {stopped.best_epoch}) by more than {stopped.min_delta} for "
                      f"{stopped.patience} epochs")
    if scored_weights == "ema":
        reporter.info("the test scores the moving average of the weights (trainer.ema_decay), which validated "
                      "better than the trained weights")
    if trainer.interrupted:
        reporter.info(f"interrupted after step {trainer.state.step}; checkpoint in "
                      f"{run_dir / 'checkpoints' / 'last.pt'}")


def speed(run: Run, precision: Precision, device: str, processes: int) -> dict:
    """The machine, and the run's achieved training TFLOP/s against the measured peak (MFU)."""
    state, where = run.trainer.state, torch.device(device)
    images_per_s = state.images_seen / max(state.train_time_s, 1e-9)
    return {"machine": machine_name(where),
            **efficiency(run.macs, images_per_s, peak_tflops(where, precision.name), processes)}


# the scalars HParams compares runs by (their last values): all are curves or results the run logs anyway
HPARAMS_METRICS = ["test/acc", "test/loss", "val/best_acc", "val/acc", "train/loss", "train/images_per_s",
                   "train/time_s"]
SHOWN = ("model", "data", "optimizer.lr", "data.batch_size", "trainer.epochs")  # HParams columns ticked at first
GROUPS = ("model", "data", "optimizer", "scheduler", "transfer", "trainer", "experiment")


def hparams(cfg: DictConfig, overrides: list[str], batch_size: int, image_size: int,
            swept: list[str] | None = None) -> dict[str, str | int | float | bool]:
    """What TensorBoard's HParams tab compares: the same columns for every run, each with a value (the batch
    size and image size as trained), the whole command line as one text column, and in a sweep the keys it varies,
    with the config's value and type (3 as a number: as strings "10" would sort before "3")."""
    values: dict[str, str | int | float | bool] = {
        "model": cfg.model.name, "data": cfg.data.name, "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1],
        "optimizer.lr": cfg.optimizer.lr, "data.batch_size": batch_size, "trainer.epochs": cfg.trainer.epochs,
        "data.image_size": image_size, "scheduler": cfg.scheduler.name, "transfer": cfg.transfer.strategy,
        "trainer.seed": cfg.trainer.seed,
        "overrides": " ".join(o for o in overrides if not o.startswith(("hydra.", "logger."))) or "(defaults)",
    }
    given = parse_overrides(overrides)  # (hydra., logger. and sweep. keys left out)
    for key in swept or []:
        if key in GROUPS or key in values or key not in given:
            continue
        value = OmegaConf.select(cfg, key, default=given[key])
        values[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return values


def objective(results: dict) -> float | None:
    """What a sweeper maximises: validation accuracy (test accuracy only when there is no validation split)."""
    return results["best_val_acc"] if results.get("best_val_acc") is not None else results.get("test_acc")


