"""The end of a run: score the test split once, on the checkpoint that validation chose, and record it all."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cnnbench.assemble import Run
from cnnbench.cli import continue_command
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.hardware import efficiency, machine_name, peak_tflops, training_tflops
from cnnbench.engine.trainer import Trainer
from cnnbench.evaluation.metrics import metrics
from cnnbench.evaluation.scores import Scores, predict
from cnnbench.fileio import atomic_write_json
from cnnbench.manifest import own
from cnnbench.models.registry import model_label
from cnnbench.overrides import parse_overrides
from cnnbench.precision import Precision
from cnnbench.provenance import record
from cnnbench.tracking import Reporter


@dataclass
class TestScores:
    """The test split scored on ``best.pt``: its metrics, the step and weights (raw or ema) they belong to, and
    the per-image scores; nothing scored (``step`` None) when the run stopped before its first validation."""

    metrics: dict = field(default_factory=lambda: {"acc": None, "loss": None, "per_class": {}})
    step: int | None = None
    weights: str | None = None
    scores: Scores | None = None


def score_test(run: Run, run_dir: Path, precision: Precision, tta: int) -> TestScores:
    """Score the test split once, on the checkpoint validation chose (never chosen by test accuracy)."""
    best = run_dir / "checkpoints" / "best.pt"
    if not best.is_file():
        return TestScores()
    ckpt = load_checkpoint(best)
    run.model.load_state_dict(ckpt["model"])
    scores = predict(run.trainer.eval_net, run.loaders["test"], precision, tta)
    return TestScores(metrics(scores, run.data.class_names), ckpt["step"], ckpt.get("weights", "raw"), scores)


def test_and_record(cfg: DictConfig, run: Run, run_dir: Path, precision: Precision, reporter: Reporter,
                    overrides: list[str], info: dict) -> dict:
    """Score the test split, write results.json, log the test pictures and HParams, and print the summary.
    ``info``: the run's device, processes and start time."""
    test = score_test(run, run_dir, precision, cfg.trainer.tta)
    step = run.trainer.state.step
    if test.step is not None:
        reporter.scalars({"test/acc": test.metrics["acc"], "test/loss": test.metrics["loss"]}, step)
        if run.pictures is not None:
            run.pictures.log_test(test.scores, test.metrics["per_class"],
                                  lambda i: run.loaders["test"].images(i).cpu(), step)
    results = record_results(cfg, run, test, precision, overrides, info, run_dir)
    if cfg.trainer.measure_latency:
        results["latency"] = measure_latency(run, precision, torch.device(info["device"]), cfg.trainer.compile)
        reporter.info("latency at batch 1: " + ", ".join(f"{t['runtime']} {t['p50_ms']:.2f} ms (p95 "
                                                          f"{t['p95_ms']:.2f})" for t in results["latency"]))
    own(run_dir, "results.json")
    atomic_write_json(results, run_dir / "results.json")
    columns = hparams(cfg, overrides, run.loaders["train"].sampler.batch_size, run.data.image_size, info.get("swept"),
                      epochs=(run.trainer.planned_epochs, run.trainer.state.epoch))
    reporter.hparams({**columns, "params": run.params, "macs": run.macs}, HPARAMS_METRICS,
                     shown=[*SHOWN, *(k for k in columns if k in (info.get("swept") or ()))])
    reporter.summary(results)
    _notes(run.trainer, test.weights, run_dir, reporter)
    return results


def record_results(cfg: DictConfig, run: Run, test: TestScores, precision: Precision, overrides: list[str],
                   info: dict, run_dir: Path) -> dict:
    """results.json: what was trained, how fast, on what, and the test scores."""
    trainer, state = run.trainer, run.trainer.state
    m = test.metrics
    images_per_s = state.images_seen / max(state.train_time_s, 1e-9)
    return {
        "status": "interrupted" if trainer.interrupted else trainer.stopped_by or "completed",  # (or pruned)
        "model": cfg.model.name,
        "arch": model_label(cfg.model),
        **({"teacher": trainer.teacher.identity} if trainer.teacher is not None else {}),
        "data": cfg.data.name,
        "params": run.params,
        "macs": run.macs,
        "test_acc": m["acc"],
        "test_loss": m["loss"],
        **{f"test_{k}": m[k] for k in ("top5_acc", "balanced_acc", "macro_f1", "ece", "brier") if k in m},
        "best_val_acc": state.best_val_acc,
        "scored_step": test.step,
        "scored_weights": test.weights,
        **({"early_stopping": trainer.early_stopping.summary()} if trainer.early_stopping is not None else {}),
        "epochs_completed": state.epoch,
        "epochs_planned": trainer.planned_epochs,
        "steps": state.step,
        "train_time_s": state.train_time_s,
        "train_images_per_s": images_per_s,
        "image_logging_s": run.pictures.seconds if run.pictures is not None else 0.0,
        **info,
        "precision": precision.name,
        **speed(run.macs, images_per_s, precision, info["device"], info["processes"]),
        "channels_last": run.channels_last,
        "seed": cfg.trainer.seed,
        "overrides": overrides,
        "provenance": record(["cnnbench", *overrides]),
        "run_dir": str(run_dir),
        "finished_at": time.time(),
        "test_acc_per_class": {name: c["recall"] for name, c in m["per_class"].items()},
        "test_per_class": m["per_class"],
        "history": state.history,
    }


def measure_latency(run: Run, precision: Precision, device: torch.device, compiled: bool) -> list[dict]:
    """Batch-1 latency and batch-64 throughput of the scored model (``trainer.measure_latency``): eager, and
    compiled when the run trained compiled."""
    from cnnbench.evaluation.latency import time_torch

    shape = (run.data.channels, run.data.image_size, run.data.image_size)
    return [time_torch(run.model, shape, device, precision, compiled=c, channels_last=run.channels_last).to_dict()
            for c in ((False, True) if compiled else (False,))]


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
                      f"{run_dir / 'checkpoints' / 'last.pt'}; continue with: {continue_command(run_dir)}")


def speed(macs: int, images_per_s: float, precision: Precision, device: str, processes: int) -> dict:
    """The machine, and the run's achieved training TFLOP/s against the measured peak (MFU)."""
    where = torch.device(device)
    peak = peak_tflops(where, precision.name, achieved=training_tflops(macs, images_per_s) / processes)
    return {"machine": machine_name(where), **efficiency(macs, images_per_s, peak, processes)}


# the scalars HParams compares runs by (their last values): all are curves or results the run logs anyway
HPARAMS_METRICS = ["test/acc", "test/loss", "val/best_acc", "val/acc", "train/loss", "train/images_per_s",
                   "train/time_s"]
SHOWN = ("model", "data", "optimizer.lr", "data.batch_size", "epochs run")  # HParams columns ticked at first
GROUPS = ("model", "data", "optimizer", "scheduler", "transfer", "trainer", "experiment")


HParam = str | int | float | bool


def hparams(cfg: DictConfig, overrides: list[str], batch_size: int, image_size: int,
            swept: list[str] | None = None, epochs: tuple[int, int] | None = None) -> dict[str, HParam]:
    """What TensorBoard's HParams tab compares: the same columns for every run, each with a value (the model by its
    label, the architecture for another library's zoo; the batch size and image size as trained; the epochs planned,
    max_steps included, and run), the whole command line as one text column, and in a sweep the keys it varies,
    with the config's value and type (3 as a number: as strings "10" would sort before "3")."""
    planned, ran = epochs or (cfg.trainer.epochs, cfg.trainer.epochs)
    values: dict[str, HParam] = {
        "model": model_label(cfg.model), "data": cfg.data.name,
        "optimizer": cfg.optimizer._target_.rsplit(".", 1)[-1], "optimizer.lr": cfg.optimizer.lr,
        "data.batch_size": batch_size, "epochs planned": planned, "epochs run": ran,
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


