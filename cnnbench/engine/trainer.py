"""The training loop: epochs of steps, validation, best-on-validation and resumable checkpoints.

The trainer is driven by its settings (``cnnbench.engine.loop.LoopSettings``, read from the ``trainer`` section)
and a short list of callbacks (``cnnbench.engine.callbacks``); everything else it is given is a built object:
model, optimizer, schedule, loaders, reporter, checkpointer, and its optional parts in one ``LoopParts`` (data
parallelism, a compiled model, class weights, a weight average, early stopping, a teacher to distil from).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.engine.callbacks import Callback
from cnnbench.engine.checkpoint import Checkpointer
from cnnbench.engine.distill import Teacher
from cnnbench.engine.distributed import DistInfo, all_reduce_sum
from cnnbench.engine.early_stopping import EarlyStopping
from cnnbench.engine.ema import ModelEma
from cnnbench.engine.loop import LoopSettings
from cnnbench.engine.optim import Schedule
from cnnbench.engine.runtime import host_rng_state, set_host_rng_state
from cnnbench.engine.stop import StopRequest
from cnnbench.errors import CnnbenchError
from cnnbench.evaluation.metrics import metrics as score_metrics
from cnnbench.evaluation.scores import predict
from cnnbench.precision import Precision
from cnnbench.tracking import Reporter

if TYPE_CHECKING:  # the engine needs only what loaders do, not the data package
    from cnnbench.data.loader import DeviceLoader


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    best_weights: str = "raw"  # which weights best.pt holds: raw (trained) or ema (their moving average)
    best_score: tuple[float, float] | None = None  # (trainer.monitor, tie-breaker), higher better, of best.pt
    train_time_s: float = 0.0
    images_seen: int = 0
    history: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class LoopParts:
    """The loop's optional parts, each None (or off) unless the ``trainer`` section asks for it: adding one adds
    a field here, never a trainer argument."""

    dist: DistInfo = field(default_factory=DistInfo)  # this process among the data-parallel ones
    compiled: nn.Module | None = None  # the torch.compile'd model that trains
    cuda_graphs: bool = False  # whether ``compiled`` replays CUDA graphs
    class_weights: torch.Tensor | None = None  # the loss's weight per class
    ema: ModelEma | None = None  # a moving average of the weights, validated beside them
    early_stopping: EarlyStopping | None = None  # ends the run when the monitored metric stops improving
    teacher: Teacher | None = None  # distillation: a trained model whose softened answers the loss adds


class Trainer:
    """Fits ``model`` with what it is given."""

    def __init__(self, settings: LoopSettings, model: nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: Schedule, loaders: dict[str, DeviceLoader], *, precision: Precision, reporter: Reporter,
                 checkpointer: Checkpointer, callbacks: Sequence[Callback] = (),
                 parts: LoopParts = LoopParts()) -> None:
        self.settings = settings
        self.model = model  # the module whose state is saved
        self.net = model if parts.compiled is None else parts.compiled  # the callable that trains
        # ``compiled`` replays CUDA graphs: each replay overwrites the last one's outputs, so every training step
        # is marked as a new one, and evaluation (test-time augmentation averages several passes) runs the model
        self.cuda_graphs = parts.cuda_graphs
        self.eval_net = model if parts.cuda_graphs else self.net
        self.optimizer = optimizer
        self.schedule = schedule
        self.loaders = loaders
        self.precision = precision
        self.reporter = reporter
        self.checkpointer = checkpointer
        self.callbacks = list(callbacks)
        self.dist = parts.dist
        self.class_weights = parts.class_weights
        self.ema = parts.ema
        self.early_stopping = parts.early_stopping
        self.teacher = parts.teacher
        self.total_steps = settings.planned_steps(len(loaders["train"]))  # optimizer steps
        self.planned_epochs = settings.planned_epochs(len(loaders["train"]))  # (max_steps may end it sooner)
        self.scaler = torch.amp.GradScaler(precision.device_type) if precision.needs_scaler else None
        self.state = TrainState()
        self.interrupted = False
        self.stopped_by: str | None = None  # a callback that ended the run early (``stop``), by name
        self.last_epoch = False  # true while the callbacks see the run's last epoch end
        self.batches_done = 0  # batches of the current epoch already trained on
        self._skip_batches = 0  # set by restore() when resuming mid-epoch
        self._loader_state = loaders["train"].state_dict()  # as of the start of the epoch in progress
        self._ddp: nn.Module | None = None
        self._ddp_params: tuple[int, ...] = ()
        train = loaders["train"]
        self.num_classes = train.num_classes or int(train.labels.max()) + 1

    def stop(self, reason: str) -> None:
        """End the run after the current epoch (a callback's decision: ``reason`` names it, e.g. pruned)."""
        self.stopped_by = reason

    def _call(self, hook: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _train_net(self) -> nn.Module:
        """What the training step calls: the model, or (data parallel) a DDP wrapper over the parameters that
        train now; rebuilt when a callback unfreezes some, since DDP syncs a fixed set."""
        if self.dist.world_size == 1:
            return self.net
        trainable = tuple(i for i, p in enumerate(self.model.parameters()) if p.requires_grad)
        if self._ddp is None or trainable != self._ddp_params:
            from torch.nn.parallel import DistributedDataParallel

            device = self.loaders["train"].device
            self._ddp = DistributedDataParallel(self.net, device_ids=[device] if device.type == "cuda" else None)
            self._ddp_params = trainable
        return self._ddp

    # -- one step, one epoch ---------------------------------------------------------------------------------------
    def _loss(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and logits of a batch; ``y`` is class indices (B,) or, mixed, class probabilities (B, K).
        Models with auxiliary heads (GoogLeNet) return (logits, *aux) in training: their losses weigh 0.3."""
        smoothing, weight = self.settings.label_smoothing, self.class_weights
        if self.cuda_graphs:  # a new step: the graphs' outputs of the last one are consumed
            torch.compiler.cudagraph_mark_step_begin()
        with self.precision.autocast():
            out = net(x)
            logits, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
            loss = F.cross_entropy(logits, y, weight=weight, label_smoothing=smoothing)
            if self.teacher is not None:  # (the auxiliary heads keep the labels alone)
                loss = self.teacher.loss(logits, self.teacher.logits(x), loss)
            for a in aux:
                loss = loss + 0.3 * F.cross_entropy(a, y, weight=weight, label_smoothing=smoothing)
        return loss, logits

    def _backward(self, loss: torch.Tensor) -> None:
        """Add this (micro-)batch's gradients to those already accumulated."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def _step(self) -> None:
        """The optimizer step on the accumulated gradients (clipped if configured), which it then clears."""
        clip = self.settings.grad_clip
        if self.scaler is not None:
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train_one_epoch(self, stop: StopRequest) -> dict[str, float]:
        loader = self.loaders["train"]
        state, loop = self.state, self.settings
        self.net.train()
        loader.set_epoch(state.epoch)
        self._loader_state = loader.state_dict()  # a mid-epoch checkpoint restarts the epoch's draws here
        self._call("on_epoch_start", state.epoch)
        net = self._train_net()
        loss_sum = torch.zeros((), device=loader.device)
        correct = torch.zeros((), device=loader.device, dtype=torch.long)
        seen = 0
        skip, self._skip_batches = self._skip_batches, 0
        self.reporter.start_epoch(state.epoch + 1, self.planned_epochs, len(loader))
        start = time.perf_counter()
        self.batches_done = 0
        k, batches = loop.accumulate_steps, len(loader)
        self.optimizer.zero_grad(set_to_none=True)
        for i, (x, y) in enumerate(loader, start=1):
            self.batches_done = i
            if i <= skip:  # resuming mid-epoch: replay the data draws of the batches already trained on
                continue
            # k micro-batches per optimizer step: each loss weighs 1 / (batches in its group), so the step is
            # that of the mean loss over the group; data parallel syncs gradients on the group's last only.
            group = k if i <= batches - batches % k else batches % k
            last_of_group = i % k == 0 or i == batches
            with contextlib.nullcontext() if last_of_group or not hasattr(net, "no_sync") else net.no_sync():
                loss, logits = self._loss(net, x, y)
                self._backward(loss / group if group > 1 else loss)
            seen += len(y)
            # Accumulate on the device; read back only every log_every steps (each read is a sync). Mixed
            # targets (mixup, cutmix) count a prediction right when it is the label with the larger weight.
            loss_sum += loss.detach().float() * len(y)
            correct += (logits.detach().argmax(1) == (y.argmax(1) if y.ndim == 2 else y)).sum()
            if not last_of_group:
                continue
            self._step()
            self.schedule.after_step()
            state.step += 1
            self._call("on_step_end", state.step)
            if self.ema is not None:
                self.ema.update(self.model, state.step)
            if state.step % loop.log_every == 0:
                self._log_running(loss_sum, correct, seen, i)
                stop.agree(loader.device)  # several processes stop at the same step (checked at read-outs only)
            if state.step >= self.total_steps or stop.stopping:
                break
            if loop.checkpoint_every_steps and state.step % loop.checkpoint_every_steps == 0 and i < len(loader):
                self.save("last.pt", mid_epoch=True)  # (the epoch's last step is saved after its evaluation)
        return self._epoch_metrics(loss_sum, correct, seen, time.perf_counter() - start)

    def _epoch_metrics(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, elapsed: float
                       ) -> dict[str, float]:
        """The epoch's loss, accuracy and speed summed over the processes (.item() syncs); a non-finite loss ends."""
        state = self.state
        totals = all_reduce_sum(torch.stack([loss_sum.float(), correct.float(),
                                             torch.tensor(float(seen), device=loss_sum.device)]))
        seen = max(int(totals[2].item()), 1)
        loss_value, acc_value = totals[0].item() / seen, 100.0 * totals[1].item() / seen
        state.train_time_s += elapsed
        state.images_seen += seen
        if not math.isfinite(loss_value):
            raise CnnbenchError(f"training loss became {loss_value} by step {state.step}; lower optimizer.lr, "
                                f"set trainer.grad_clip, or use trainer.precision=fp32")
        return {"train/loss": loss_value, "train/acc": acc_value, "train/images_per_s": seen / elapsed,
                "lr": self.optimizer.param_groups[0]["lr"]}

    def _log_running(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, i: int) -> None:
        loss, acc = loss_sum.item() / seen, 100.0 * correct.item() / seen
        lr = self.optimizer.param_groups[0]["lr"]
        self.reporter.scalars({"train/loss_running": loss, "lr": lr}, self.state.step)
        self.reporter.advance(i, f"loss {loss:.4f}  acc {acc:.2f}%  lr {lr:.3g}")

    # -- the whole run ---------------------------------------------------------------------------------------------
    @property
    def planned_end(self) -> bool:
        """Whether the planned epochs (or trainer.max_steps) are done."""
        return self.state.epoch >= self.settings.epochs or self.state.step >= self.total_steps

    @property
    def finished(self) -> bool:
        return self.planned_end or self.stopped_by is not None or (
            self.early_stopping is not None and self.early_stopping.stopped)

    def fit(self) -> TrainState:
        train = self.loaders["train"]
        with StopRequest(distributed=self.dist.world_size > 1) as stop:  # (a Ctrl-C from here on stops cleanly)
            self._call("on_fit_start")
            if self.ema is not None and self.state.step == 0:
                self.ema.reset(self.model)  # (after a data-dependent init, which on_fit_start runs)
            while not self.finished:
                metrics = self.train_one_epoch(stop)
                stop.agree(train.device)
                if stop.stopping and self.batches_done < len(train) and not self.finished:
                    self.save("last.pt", mid_epoch=True)  # resumable from this very step
                    self.interrupted = True
                    break
                self._end_epoch(metrics, stopping=stop.stopping)
                if stop.stopping:
                    self.interrupted = True
                    break
        if "val" not in self.loaders:  # no validation split: the final model (its average, with EMA) is kept
            self.state.best_weights = "raw" if self.ema is None else "ema"
            self.save("best.pt")
        self._call("on_fit_end")
        return self.state

    def _end_epoch(self, metrics: dict[str, float], stopping: bool) -> None:
        """Evaluate the epoch just trained, record it, keep the best and the last checkpoint."""
        state = self.state
        loop = self.settings
        state.epoch += 1
        self._loader_state = self.loaders["train"].state_dict()
        self.schedule.after_epoch()
        if "val" in self.loaders and self.dist.is_main:  # rank 0 evaluates (with its copy of the BN statistics)
            metrics.update({f"val/{k}": v for k, v in self.evaluate("val").items()})
            if self.ema is not None:
                metrics.update({f"val_ema/{k}": v for k, v in self.evaluate("val", self.ema.module).items()})
        if loop.eval_every and state.epoch % loop.eval_every == 0 and self.dist.is_main:
            test = self.evaluate("test")
            metrics["test/loss"], metrics["test/acc"] = test["loss"], test["acc"]
        self.reporter.scalars(metrics, state.step)
        self.reporter.end_epoch(state.epoch, self.planned_epochs, metrics)
        state.history.append({"epoch": state.epoch, "step": state.step, **metrics})
        if "val/acc" in metrics:  # keep the weights (trained, or their average) that validate best
            prefixes = ("val", "val_ema") if "val_ema/acc" in metrics else ("val",)
            prefix = max(prefixes, key=lambda p: self.score(metrics, p))  # (a tie keeps the trained weights)
            score = self.score(metrics, prefix)
            if state.best_score is None or score > tuple(state.best_score):
                state.best_score, state.best_weights = score, "ema" if prefix == "val_ema" else "raw"
                state.best_val_acc, state.best_val_loss = metrics[f"{prefix}/acc"], metrics[f"{prefix}/loss"]
                self.save("best.pt")
        if self.early_stopping is not None and self.early_stopping.monitor in metrics:
            self.early_stopping.update(state.epoch, metrics, last=self.planned_end)
        extra = {"train/time_s": state.train_time_s}  # (the HParams tab compares runs by these curves' last values)
        if state.best_val_acc is not None:
            extra["val/best_acc"] = state.best_val_acc
        self.reporter.scalars(extra, state.step)
        self.last_epoch = self.finished or stopping
        self._call("on_epoch_end", state.epoch, metrics)
        if self.last_epoch or state.epoch % loop.checkpoint_every == 0:
            self.save("last.pt")

    def evaluate(self, split: str, net: nn.Module | None = None) -> dict[str, float]:
        """Mean cross-entropy, accuracy, balanced accuracy and macro-F1 (percent) of ``net`` (the trained model)
        on ``split``, with the configured test-time augmentation."""
        scores = predict(self.eval_net if net is None else net, self.loaders[split], self.precision, self.settings.tta)
        m = score_metrics(scores, [str(c) for c in range(self.num_classes)])
        return {k: m[k] for k in ("loss", "acc", "balanced_acc", "macro_f1")}

    def score(self, metrics: dict[str, float], prefix: str = "val") -> tuple[float, float]:
        """How good the ``prefix`` (val or val_ema) metrics are by ``trainer.monitor``, higher better: the
        monitored value, then, on a tie (common on small validation sets), the loss (or for the loss, accuracy)."""
        key = self.settings.monitor.split("/", 1)[1]
        loss, acc = metrics[f"{prefix}/loss"], metrics[f"{prefix}/acc"]
        return (-loss, acc) if key == "loss" else (metrics[f"{prefix}/{key}"], -loss)

    # -- checkpoints -----------------------------------------------------------------------------------------------
    def checkpoint(self, mid_epoch: bool = False) -> dict:
        s = self.state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "epoch": s.epoch,
            "step": s.step,
            "best_val_acc": s.best_val_acc,
            "best_val_loss": s.best_val_loss,
            "best_weights": s.best_weights,
            "best_score": list(s.best_score) if s.best_score is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping is not None else None,
            "batch_in_epoch": self.batches_done if mid_epoch else 0,
            "history": s.history,
            "planned_steps": self.total_steps,
            "train_time_s": s.train_time_s,
            "images_seen": s.images_seen,
            # the loader as of the start of the epoch in progress (= now, between epochs)
            "rng": {"torch": torch.get_rng_state(), "loader": self._loader_state, **host_rng_state()},
            "callbacks": {cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key},
        }

    def save(self, name: str, mid_epoch: bool = False) -> None:
        ckpt = self.checkpoint(mid_epoch)
        if name == "best.pt":  # the weights that validated best, which the test scores
            ckpt["weights"] = self.state.best_weights
            if self.state.best_weights == "ema":
                ckpt["model"] = self.ema.state_dict()
        self.checkpointer.save(name, ckpt)

    def restore(self, ckpt: dict) -> None:
        """Continue exactly where ``ckpt`` left off: weights, optimizer, schedule, counters, random streams and
        the callbacks' states. A changed plan (trainer.epochs or max_steps) rescales the schedule to it; changed
        early-stopping settings are applied to the run's history."""
        fresh = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        planned = ckpt.get("planned_steps", self.total_steps)
        if planned == self.total_steps:
            self.schedule.load_state_dict(ckpt["scheduler"])
        else:  # the schedule of a run planned this long, at the step reached (timm's way on a longer resume)
            for group, hyper in zip(self.optimizer.param_groups, fresh, strict=True):
                group.update(hyper)
            self.schedule.fast_forward(ckpt["step"], ckpt["epoch"])
            where = "past its new end: nothing more to train" if ckpt["step"] >= self.total_steps else (
                f"the learning rate follows the new plan from step {ckpt['step']} "
                f"(now {self.optimizer.param_groups[0]['lr']:.3g})")
            self.reporter.info(f"the plan changed from {planned} to {self.total_steps} optimizer steps "
                               f"(trainer.epochs / max_steps): {where}")
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        s = self.state
        s.epoch, s.step = ckpt["epoch"], ckpt["step"]
        s.best_val_acc, s.best_val_loss = ckpt.get("best_val_acc"), ckpt.get("best_val_loss")
        s.best_weights = ckpt.get("best_weights", "raw")
        s.best_score = tuple(ckpt["best_score"]) if ckpt["best_score"] is not None else None
        if self.ema is not None:  # (a checkpoint without an average starts one from the restored weights)
            self.ema.load_state_dict(ckpt.get("ema") or ckpt["model"])
        s.history = list(ckpt.get("history", []))
        if self.early_stopping is not None:
            note = self.early_stopping.resume(ckpt.get("early_stopping"), s.history, self.settings.epochs)
            if note:
                self.reporter.info(note)
        s.train_time_s, s.images_seen = ckpt.get("train_time_s", 0.0), ckpt.get("images_seen", 0)
        torch.set_rng_state(ckpt["rng"]["torch"])
        set_host_rng_state(ckpt["rng"])
        self._loader_state = ckpt["rng"]["loader"]
        self.loaders["train"].load_state_dict(self._loader_state)
        self._skip_batches = ckpt.get("batch_in_epoch", 0)
        saved = ckpt.get("callbacks") or {}
        for cb in self.callbacks:
            if cb.state_key:
                cb.load_state_dict(saved.get(cb.state_key))
