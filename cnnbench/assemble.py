"""Build one run from a resolved, validated config: data, model, optimizer, schedule, callbacks, trainer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from cnnbench.anatomy import count_macs
from cnnbench.config import to_container
from cnnbench.config.schema import FROM_SCRATCH, GRAPH_MODES, crop_range
from cnnbench.data import DataBundle, dataset_summary, load_data, make_loaders
from cnnbench.data.build import batch_note, train_batch_size
from cnnbench.data.checks import check_against_data
from cnnbench.data.loader import DeviceLoader
from cnnbench.data.spec import InputSpec
from cnnbench.engine.callbacks import Callback, ModelHooks
from cnnbench.engine.checkpoint import Checkpointer
from cnnbench.engine.distill import Teacher
from cnnbench.engine.distributed import DistInfo
from cnnbench.engine.early_stopping import EarlyStopping
from cnnbench.engine.ema import ModelEma
from cnnbench.engine.lookahead import Lookahead
from cnnbench.engine.loop import LoopSettings, class_weight_tensor
from cnnbench.engine.optim import build_optimizer, build_schedule
from cnnbench.engine.placement import LoadWatch
from cnnbench.engine.profile import Profile
from cnnbench.engine.runtime import has_conv
from cnnbench.engine.trainer import LoopParts, Trainer
from cnnbench.errors import CnnbenchError
from cnnbench.finished_run import load_finished_run
from cnnbench.models.hooks import TrainingHooks
from cnnbench.models.registry import model_label
from cnnbench.overrides import hydra_overrides
from cnnbench.pictures import Pictures, snapshot_epochs
from cnnbench.precision import Precision
from cnnbench.provenance import record
from cnnbench.sweep import trial_report
from cnnbench.tracking import Reporter
from cnnbench.transfer.build import build_start_model
from cnnbench.transfer.strategy import TransferPlan


@dataclass
class Run:
    """Everything a run is made of, built once; ``trainer.fit()`` trains it."""

    data: DataBundle
    model: nn.Module
    compiled: nn.Module | None
    loaders: dict[str, DeviceLoader]
    trainer: Trainer
    pictures: Pictures | None
    params: int
    macs: int
    channels_last: bool


def place_model(model: nn.Module, t: DictConfig, device: torch.device) -> tuple[nn.Module, bool]:
    """Move the model to ``device``, in channels_last memory format for conv nets (``trainer.channels_last``:
    null = on for conv nets on CPUs and CUDA)."""
    channels_last = t.channels_last if t.channels_last is not None else (
        has_conv(model) and device.type in ("cpu", "cuda"))
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format), \
        channels_last


def build_run(cfg: DictConfig, run_dir: Path, device: torch.device, precision: Precision, dist: DistInfo,
              reporter: Reporter, source: dict | None = None) -> Run:
    """Load the data, build the model (from ``source``, a checkpoint to transfer from, if any), and wire the
    trainer with its callbacks."""
    t = cfg.trainer
    data = load_data(cfg.data)
    check_against_data(cfg, data, train_batch_size(cfg.data, len(data.train), dist.world_size))
    for note in data_notes(cfg.data, data):
        reporter.info(f"data: {note}")
    model, notes = build_start_model(cfg, data.num_classes, data.channels, data.image_size, source, data.class_names)
    for note in notes:
        reporter.info(note)
    model, channels_last = place_model(model, t, device)
    params = sum(p.numel() for p in model.parameters())
    macs = count_macs(model, (data.channels, data.image_size, data.image_size))
    compiled, graphs = compile_model(model, t, device)
    how = f", compiled ({t.compile_mode}{', CUDA graphs' if graphs else ''})" if compiled is not None else ""
    reporter.info(f"model: {cfg.model.name}, {params:,} parameters; device {device}, precision {precision.name}"
                  f"{', channels_last' if channels_last else ''}{how}")

    loaders = make_loaders(data, cfg.data, device, seed=t.seed, channels_last=channels_last, rank=dist.rank,
                           world_size=dist.world_size)
    reporter.info(f"data: {batch_note(cfg.data, loaders['train'], len(data.train))}")
    if dist.world_size > 1:
        reporter.info(f"data parallel: {dist.world_size} processes x batch {loaders['train'].sampler.batch_size}")
    plan = TransferPlan(model, cfg.transfer) if cfg.transfer.strategy not in FROM_SCRATCH else None
    optimizer = build_optimizer(cfg.optimizer, plan.param_groups(cfg.optimizer.lr) if plan else model.parameters(),
                                model)
    loop, batches = LoopSettings.of(t), len(loaders["train"])
    schedule = build_schedule(optimizer, cfg.scheduler, loop.steps_per_epoch(batches), loop.planned_steps(batches))

    pictures = _pictures(cfg, run_dir, model, data, loaders["test"], reporter) if dist.is_main else None
    callbacks = _callbacks(cfg, model, plan, pictures, run_dir, device, dist, reporter)
    spec = InputSpec(data.channels, data.pipeline, tuple(loaders["test"].mean), tuple(loaders["test"].std),
                     tuple(data.class_names))
    payload = {"config": to_container(cfg), "provenance": record(["cnnbench", *hydra_overrides()]),
               "meta": spec.to_dict()}
    parts = loop_parts(t, model, loaders["train"].labels, data.num_classes, dist, compiled, graphs,
                       teacher_for(cfg, data, loaders["test"], device, precision))
    if parts.teacher is not None:
        reporter.info(f"distilling from {parts.teacher.identity['model']} ({parts.teacher.identity['checkpoint']}, "
                      f"step {parts.teacher.identity['step']}): temperature {cfg.transfer.temperature}, "
                      f"alpha {cfg.transfer.alpha}")
    trainer = Trainer(loop, model, optimizer, schedule, loaders, precision=precision, reporter=reporter,
                      checkpointer=Checkpointer(run_dir, payload, enabled=dist.is_main), callbacks=callbacks,
                      parts=parts)
    return Run(data, model, compiled, loaders, trainer, pictures, params, macs, channels_last)


def compile_model(model: nn.Module, t: DictConfig, device: torch.device) -> tuple[nn.Module | None, bool]:
    """``torch.compile(model)`` in ``trainer.compile_mode`` (None without ``trainer.compile``), and whether it
    replays CUDA graphs."""
    if not t.compile:
        return None, False
    torch.compiler.reset()  # from a clean slate: what earlier runs in this process compiled would change the kernels
    return torch.compile(model, mode=t.compile_mode), device.type == "cuda" and t.compile_mode in GRAPH_MODES


def loop_parts(t: DictConfig, model: nn.Module, labels: torch.Tensor, num_classes: int, dist: DistInfo,
               compiled: nn.Module | None, graphs: bool, teacher: Teacher | None = None) -> LoopParts:
    """The loop's optional parts: the processes, the compiled model, a teacher, and what the ``trainer`` section
    asks for: the loss's class weights (over the training ``labels``), a moving average of the weights, early
    stopping."""
    es = t.early_stopping
    return LoopParts(dist=dist, compiled=compiled, cuda_graphs=graphs,
                     class_weights=class_weight_tensor(t.class_weights, labels, num_classes),
                     ema=ModelEma(model, t.ema_decay, t.ema_warmup) if t.ema_decay else None,
                     early_stopping=EarlyStopping(es.monitor, es.patience, es.min_delta) if es.patience else None,
                     teacher=teacher)


def teacher_for(cfg: DictConfig, data: DataBundle, test: DeviceLoader, device: torch.device,
                precision: Precision) -> Teacher | None:
    """With ``transfer=distill``: the teacher, a finished run trained on the same classes, on ``device``."""
    tr = cfg.transfer
    if tr.strategy != "distill":
        return None
    trained = load_finished_run(Path(tr.teacher), tr.allow_unfinished)
    if trained.class_names != list(data.class_names):
        raise CnnbenchError(f"transfer.teacher={tr.teacher} was trained on {len(trained.class_names)} classes "
                            f"({', '.join(trained.class_names[:4])}, ...), the data has {data.num_classes}: a "
                            f"teacher answers for the same classes, in the same order")
    spec = trained.spec
    identity = {"run": str(trained.run_dir), "checkpoint": str(trained.checkpoint), "step": trained.step,
                "model": model_label(trained.cfg.model), "test_acc": trained.results().get("test_acc")}
    model = trained.model.to(device, memory_format=torch.channels_last)
    return Teacher(model, precision, (list(test.mean), list(test.std), data.channels),
                   (list(spec.mean), list(spec.std), spec.channels, spec.image_size), tr.temperature, tr.alpha,
                   identity)


def data_notes(cfg: DictConfig, data: DataBundle) -> list[str]:
    """The console's lines on the data: splits and classes, what loading noticed, the pipeline's sizes."""
    notes = [f"{cfg.name}, {dataset_summary(data)}", *data.notes]
    if data.pipeline.name == "crop":
        notes.append(data.pipeline.describe(*crop_range(cfg.augment)))
    elif cfg.resize_size or cfg.store_size:
        notes.append(f"{data.pipeline.describe()}; data.resize_size and store_size apply to data.pipeline=crop "
                     f"(photos) only")
    return notes


def _callbacks(cfg: DictConfig, model: nn.Module, plan: TransferPlan | None, pictures: Pictures | None,
               run_dir: Path, device: torch.device, dist: DistInfo, reporter: Reporter) -> list[Callback]:
    """What the loop calls besides training, in order: transfer stages, the model's own hooks, lookahead, the
    CPU load watch, the profiler, pictures, and in a search's trial its report to the study (with pruning)."""
    t = cfg.trainer
    callbacks: list[Callback] = [plan] if plan is not None else []
    if isinstance(model, TrainingHooks):
        callbacks.append(ModelHooks(model, init=cfg.transfer.strategy in FROM_SCRATCH))
    if t.lookahead_every:
        callbacks.append(Lookahead(model, t.lookahead_every, t.lookahead_decay))
    if device.type == "cpu" and dist.world_size == 1:
        callbacks.append(LoadWatch(reporter))
    if t.profile and dist.is_main:
        callbacks.append(Profile(run_dir / "profile", reporter, device))
    if pictures is not None:
        callbacks.append(pictures)
    report = trial_report(cfg) if dist.world_size == 1 else None
    if report is not None:
        callbacks.append(report)
    return callbacks


def _pictures(cfg: DictConfig, run_dir: Path, model: nn.Module, data: DataBundle, test: DeviceLoader,
              reporter: Reporter) -> Pictures | None:
    """The pictures callback, when they have somewhere to go (PNG figures or TensorBoard): with neither, drawing
    them would be time spent for nothing."""
    log = cfg.logger
    if not (log.figures or log.tensorboard):
        return None
    samples = test.head(log.num_samples)
    names = [data.class_names[i] for i in data.test.labels[:len(samples)].tolist()]
    return Pictures(reporter, run_dir, model, samples, names, test.mean, test.std,
                    list(log.feature_layers) if log.feature_layers else None, data.class_names,
                    epochs=snapshot_epochs(cfg.trainer.epochs, log.snapshots), figures=log.figures,
                    explain=log.explain, embedding_images=log.embedding_images, normalize=test.normalize)
