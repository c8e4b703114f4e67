"""The training loop: train_one_epoch, evaluate, and fit (epochs, checkpoints, best-on-validation)."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.data import DeviceLoader
from cnnbench.engine.checkpoint import atomic_save
from cnnbench.engine.distributed import DistInfo, all_reduce_sum, any_rank
from cnnbench.engine.lookahead import Lookahead
from cnnbench.engine.runtime import Precision, host_rng_state, set_host_rng_state
from cnnbench.errors import CnnbenchError
from cnnbench.tracking import Reporter
from cnnbench.visuals import Visualizer


def tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits with test-time augmentation: 0 none, 1 the mean over the image and its mirror image, 2 also over
    1-pixel translations up-left and down-right (airbench's levels: half weight untranslated, a quarter each)."""
    def mirror(inputs: torch.Tensor) -> torch.Tensor:
        return (model(inputs) + model(inputs.flip(3))) / 2

    if level == 0:
        return model(x)
    logits = mirror(x)
    if level >= 2:
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = (mirror(padded[..., :h, :w]) + mirror(padded[..., 2:, 2:])) / 2
        logits = (logits + shifted) / 2
    return logits


@torch.no_grad()
def predict(model: nn.Module, loader: DeviceLoader, precision: Precision, tta: int = 0
            ) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy of ``model`` over ``loader`` and its predicted class for every image (on the CPU),
    with test-time augmentation level ``tta`` (see ``tta_logits``)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    preds = []
    for x, y in loader:
        with precision.autocast():
            logits = tta_logits(model, x, tta)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        preds.append(logits.argmax(1))
    model.train(was_training)
    return loss_sum.item() / loader.num_images, torch.cat(preds).cpu()


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of predictions equal to the labels."""
    return 100.0 * (preds == labels).float().mean().item()


def evaluate(model: nn.Module, loader: DeviceLoader, precision: Precision, tta: int = 0
             ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (percent) of ``model`` over ``loader``."""
    loss, preds = predict(model, loader, precision, tta)
    return loss, accuracy(preds, loader.labels.cpu())


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loop checks after each step; a second SIGINT stops at once.

    With several processes, ``stopping`` turns true on all of them at the same step (see ``agree``)."""

    def __init__(self, distributed: bool = False) -> None:
        self.requested = False
        self.distributed = distributed
        self.agreed = False
        self._previous: dict[int, object] = {}

    @property
    def stopping(self) -> bool:
        return self.agreed if self.distributed else self.requested

    def agree(self, device: torch.device) -> None:
        """Data parallel: stop everywhere once any process was asked to (one tiny all-reduce)."""
        if self.distributed:
            self.agreed = any_rank(self.requested, device)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    train_time_s: float = 0.0
    images_seen: int = 0
    image_logging_s: float = 0.0  # time spent drawing feature maps and filters (reported against train time)
    history: list[dict] = field(default_factory=list)


class Trainer:
    """Fits a model with the loaders, optimizer and schedule it is given, writing checkpoints to run_dir."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        loaders: dict[str, DeviceLoader],
        precision: Precision,
        reporter: Reporter,
        run_dir: Path,
        *,
        epochs: int,
        total_steps: int,
        scheduler_per_step: bool,
        label_smoothing: float = 0.0,
        tta: int = 0,
        grad_clip: float | None = None,
        eval_every: int = 0,
        log_every: int = 25,
        checkpoint_every: int = 1,
        checkpoint_every_steps: int = 0,
        config: dict | None = None,
        compiled: nn.Module | None = None,
        visualizer: Visualizer | None = None,
        image_every: int = 0,
        meta: dict | None = None,
        epoch_start: Callable[[int, int], None] | None = None,
        dist: DistInfo | None = None,
        lookahead: Lookahead | None = None,
    ) -> None:
        self.model = model  # the module whose state is saved
        self.net = compiled or model  # the callable that runs (torch.compile'd or not)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.loaders, self.precision, self.reporter = loaders, precision, reporter
        self.ckpt_dir = run_dir / "checkpoints"
        self.epochs, self.total_steps = epochs, total_steps
        self.scheduler_per_step = scheduler_per_step
        self.label_smoothing, self.grad_clip, self.tta = label_smoothing, grad_clip, tta
        self.eval_every, self.log_every, self.checkpoint_every = eval_every, log_every, checkpoint_every
        self.checkpoint_every_steps = checkpoint_every_steps
        self.config = config or {}
        self.visualizer, self.image_every = visualizer, image_every
        self.meta = meta or {}  # what rebuilding the model needs besides the config: class names, input shape
        self.epoch_start = epoch_start  # called with (epoch, step) after model.train(): freezing
        self.dist = dist or DistInfo()
        self.lookahead = lookahead
        self._ddp: nn.Module | None = None
        self._ddp_params: tuple[int, ...] = ()
        self.scaler = torch.amp.GradScaler(precision.device_type) if precision.needs_scaler else None
        self.state = TrainState()
        self.interrupted = False
        self.batches_done = 0  # batches of the current epoch already trained on
        self._skip_batches = 0  # set by restore() when resuming mid-epoch
        self._loader_rng = loaders["train"].generator.get_state()

    def _train_net(self) -> nn.Module:
        """What the training step calls: the model, or (data parallel) a DDP wrapper over the parameters that
        train now; rebuilt when a transfer strategy unfreezes some, since DDP syncs a fixed set."""
        if self.dist.world_size == 1:
            return self.net
        trainable = tuple(i for i, p in enumerate(self.model.parameters()) if p.requires_grad)
        if self._ddp is None or trainable != self._ddp_params:
            from torch.nn.parallel import DistributedDataParallel

            device = self.loaders["train"].device
            self._ddp = DistributedDataParallel(self.net, device_ids=[device] if device.type == "cuda" else None)
            self._ddp_params = trainable
        return self._ddp

    # -- one epoch -------------------------------------------------------------------------------------------------
    def train_one_epoch(self, stop: StopRequest) -> dict[str, float]:
        loader, state = self.loaders["train"], self.state
        self.net.train()
        if self.epoch_start is not None:
            self.epoch_start(state.epoch, state.step)
        model = self._train_net()
        device = loader.device
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        loader.set_epoch(state.epoch)
        self._loader_rng = loader.generator.get_state()  # a mid-epoch checkpoint restarts the epoch's draws here
        skip, self._skip_batches = self._skip_batches, 0
        self.reporter.start_epoch(state.epoch + 1, self.epochs, len(loader))
        start = time.perf_counter()
        self.batches_done = 0
        for i, (x, y) in enumerate(loader, start=1):
            if i <= skip:  # resuming mid-epoch: replay the data draws of the batches already trained on
                self.batches_done = i
                continue
            with self.precision.autocast():
                out = model(x)
                # Models with auxiliary heads (GoogLeNet) return (logits, *aux) in training: aux losses weigh 0.3.
                logits, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
                loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
                for a in aux:
                    loss = loss + 0.3 * F.cross_entropy(a, y, label_smoothing=self.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self._backward_and_step(loss)
            if self.scheduler_per_step:
                self.scheduler.step()
            state.step += 1
            if self.lookahead is not None:
                self.lookahead.step(state.step)
            self.batches_done = i
            seen += len(y)
            # Accumulate on the device; read back only every log_every steps (each read is a sync).
            loss_sum += loss.detach().float() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            if state.step % self.log_every == 0:
                self._log_running(loss_sum, correct, seen, i, len(loader))
                stop.agree(device)  # several processes stop at the same step (checked at read-outs only)
            if state.step >= self.total_steps or stop.stopping:
                break
            if self.checkpoint_every_steps and state.step % self.checkpoint_every_steps == 0 and i < len(loader):
                self.save("last.pt", mid_epoch=True)  # (the epoch's last step is saved after its evaluation)
        # Sums over the processes (one in a single process); .item() syncs the device.
        totals = all_reduce_sum(torch.stack([loss_sum.float(), correct.float(),
                                             torch.tensor(float(seen), device=device)]))
        seen = max(int(totals[2].item()), 1)
        loss_value, acc_value = totals[0].item() / seen, 100.0 * totals[1].item() / seen
        elapsed = time.perf_counter() - start
        state.train_time_s += elapsed
        state.images_seen += seen
        if not math.isfinite(loss_value):
            raise CnnbenchError(f"training loss became {loss_value} by step {state.step}; lower optimizer.lr, "
                                f"set trainer.grad_clip, or use trainer.precision=fp32")
        return {"train/loss": loss_value, "train/acc": acc_value, "train/images_per_s": seen / elapsed,
                "lr": self.optimizer.param_groups[0]["lr"]}

    def _backward_and_step(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()

    def _log_running(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int, i: int, n: int) -> None:
        loss, acc = loss_sum.item() / seen, 100.0 * correct.item() / seen
        lr = self.optimizer.param_groups[0]["lr"]
        self.reporter.scalars({"train/loss_running": loss, "lr": lr}, self.state.step)
        self.reporter.advance(i, f"loss {loss:.4f}  acc {acc:.2f}%  lr {lr:.3g}")

    # -- the whole run ---------------------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        state = self.state
        main = self.dist.is_main
        with StopRequest(distributed=self.dist.world_size > 1) as stop:
            while state.epoch < self.epochs and state.step < self.total_steps:
                metrics = self.train_one_epoch(stop)
                stop.agree(self.loaders["train"].device)
                if stop.stopping and self.batches_done < len(self.loaders["train"]) \
                        and state.step < self.total_steps:
                    self.save("last.pt", mid_epoch=True)  # resumable from this very step
                    self.interrupted = True
                    break
                state.epoch += 1
                self._loader_rng = self.loaders["train"].generator.get_state()
                if not self.scheduler_per_step:
                    self.scheduler.step()
                if "val" in self.loaders and main:  # rank 0 evaluates (with its copy of the BN statistics)
                    metrics["val/loss"], metrics["val/acc"] = evaluate(self.net, self.loaders["val"], self.precision,
                                                                       self.tta)
                if self.eval_every and state.epoch % self.eval_every == 0 and main:
                    metrics["test/loss"], metrics["test/acc"] = evaluate(self.net, self.loaders["test"],
                                                                         self.precision, self.tta)
                self.reporter.scalars(metrics, state.step)
                self.reporter.end_epoch(state.epoch, self.epochs, metrics)
                state.history.append({"epoch": state.epoch, "step": state.step, **metrics})
                if "val/acc" in metrics and self._improves(metrics["val/acc"], metrics["val/loss"]):
                    state.best_val_acc, state.best_val_loss = metrics["val/acc"], metrics["val/loss"]
                    self.save("best.pt")
                done = state.epoch >= self.epochs or state.step >= self.total_steps or stop.stopping
                if self.visualizer is not None and self.image_every and (done or state.epoch % self.image_every == 0):
                    t0 = time.perf_counter()
                    self.visualizer.log_images(state.step)
                    state.image_logging_s += time.perf_counter() - t0
                if done or state.epoch % self.checkpoint_every == 0:
                    self.save("last.pt")
                if stop.stopping:
                    self.interrupted = True
                    break
        if "val" not in self.loaders:  # no validation split: the final model is the one we keep
            self.save("best.pt")
        return state

    def _improves(self, acc: float, loss: float) -> bool:
        """Higher validation accuracy wins; a tie (common on small validation sets) goes to the lower loss."""
        best_acc, best_loss = self.state.best_val_acc, self.state.best_val_loss
        return best_acc is None or acc > best_acc or (acc == best_acc and loss < best_loss)

    def checkpoint(self, mid_epoch: bool = False) -> dict:
        s = self.state
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
            "epoch": s.epoch,
            "step": s.step,
            "best_val_acc": s.best_val_acc,
            "best_val_loss": s.best_val_loss,
            "batch_in_epoch": self.batches_done if mid_epoch else 0,
            "history": s.history,
            "train_time_s": s.train_time_s,
            "images_seen": s.images_seen,
            "image_logging_s": s.image_logging_s,
            # the loader's generator as of the start of the epoch in progress (= now, between epochs)
            "rng": {"torch": torch.get_rng_state(), "loader": self._loader_rng, **host_rng_state()},
            "config": self.config,
            "meta": self.meta,
        }

    def save(self, name: str, mid_epoch: bool = False) -> None:
        if self.dist.is_main:  # the processes hold the same weights: one writes them
            atomic_save(self.checkpoint(mid_epoch), self.ckpt_dir / name)

    def restore(self, ckpt: dict) -> None:
        """Continue exactly where ``ckpt`` left off: weights, optimizer, schedule, counters and random streams."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.lookahead is not None:  # (a checkpoint saved without lookahead: the slow copy starts here)
            self.lookahead.load_state_dict(ckpt.get("lookahead") or self.lookahead.current())
        s = self.state
        s.epoch, s.step = ckpt["epoch"], ckpt["step"]
        s.best_val_acc, s.best_val_loss = ckpt.get("best_val_acc"), ckpt.get("best_val_loss")
        s.history = list(ckpt.get("history", []))
        s.train_time_s, s.images_seen = ckpt.get("train_time_s", 0.0), ckpt.get("images_seen", 0)
        s.image_logging_s = ckpt.get("image_logging_s", 0.0)
        torch.set_rng_state(ckpt["rng"]["torch"])
        set_host_rng_state(ckpt["rng"])
        self.loaders["train"].generator.set_state(ckpt["rng"]["loader"])
        self._loader_rng = ckpt["rng"]["loader"]
        self._skip_batches = ckpt.get("batch_in_epoch", 0)
