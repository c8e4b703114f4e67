"""Structured configs (types) and value checks for a composed run.

Hydra composes YAML from ``conf/``; the dataclasses below give the fixed-shape groups (data, trainer,
scheduler, logger) their types, so ``trainer.epochs=abc`` fails at composition. ``validate`` then checks the
values that types cannot (ranges, devices, names) before any data is loaded.
The open groups (``model``, ``optimizer``) are checked against the code they configure: the model builder's
signature and the optimizer's own constructor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from cnnbench.errors import CnnbenchError

PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}  # torchvision's name: F.pad's


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


# Each scheduler's own keys; besides them every scheduler config has name, interval, warmup_epochs and
# warmup_start_factor. A key outside these is an error, so no value is silently ignored.
SCHEDULER_OPTIONS = {"cosine": {"min_lr"}, "step": {"step_size", "gamma"},
                     "onecycle": {"pct_start", "anneal_strategy", "div_factor", "final_div_factor", "cycle_momentum"},
                     "none": set()}
SCHEDULER_COMMON = {"name", "interval", "warmup_epochs", "warmup_start_factor"}
# Likewise for the transfer strategies (cnnbench/transfer/strategy.py).
TRANSFER_OPTIONS = {"scratch": set(), "finetune": {"layer_decay"}, "freeze_backbone": set(),
                    "gradual_unfreeze": {"head_epochs", "stages", "stage_epochs", "backbone_lr_scale"}}
TRANSFER_COMMON = {"strategy", "checkpoint"}


@dataclass
class AugmentConfig:
    """``data.augment``: what the training loader does to each batch (``cnnbench.data.augment``)."""

    crop_padding: int = 0  # RandomCrop(size, padding=crop_padding); 0 = off
    padding_mode: str = "constant"  # RandomCrop's: constant (zeros) | edge | reflect
    hflip: bool = False  # RandomHorizontalFlip(p=0.5)
    alternate_flip: bool = False  # with hflip: each image mirrored in every other epoch (airbench), not at random
    cutout: int = 0  # side of a zeroed square at a random place; 0 = off


@dataclass
class DataConfig:
    name: str = MISSING  # digits | cifar10 | mnist | fashion_mnist | imagefolder | synthetic
    root: str | None = None
    download: bool = False
    channels: int = MISSING
    image_size: int | None = None  # square side; imagefolder: null keeps the size of the images
    num_classes: int | None = None  # imagefolder: null takes it from the class folders
    class_names: list[str] | None = None
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    batch_size: int = 128
    eval_batch_size: int = 512
    val_fraction: float = 0.1  # held out from train to select the best checkpoint
    split_seed: int = 0  # fixes the train/val (and digits train/test) split, independent of trainer.seed
    num_train: int | None = None  # use only the first N training images (synthetic: how many to make)
    num_test: int | None = None  # likewise for the test split
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: str | None = None  # decoded uint8 tensors are cached here; null = no cache
    max_memory_gb: float = 8.0  # imagefolder: larger (as uint8) stays files, decoded per batch by DataLoader workers
    num_workers: int = 2  # DataLoader worker processes for such streamed image folders


@dataclass
class TrainerConfig:
    epochs: int = 30
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs, benchmarks)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    strategy: str = "single"  # single | ddp (one process per device, launched by torchrun)
    precision: Precision = Precision.auto
    channels_last: bool | None = None  # null = on for conv nets
    compile: bool = False
    seed: int = 0
    deterministic: bool = False
    label_smoothing: float = 0.0
    lookahead_every: int = 0  # lookahead (cnnbench/engine/lookahead.py) every N steps; 0 = off
    lookahead_decay: float = 0.95  # per step; the slow weights' decay grows as (step / steps)^3 to this^N
    tta: int = 0  # test-time augmentation: 0 off, 1 mirror image, 2 mirror + 1-pixel shifts (logits averaged)
    grad_clip: float | None = None  # max global gradient norm
    eval_every: int = 0  # also evaluate the test set every N epochs (a learning curve); 0 = only at the end
    log_every: int = 25  # optimizer steps between loss read-outs (each one syncs with the device)
    checkpoint_every: int = 1  # epochs between writes of checkpoints/last.pt
    checkpoint_every_steps: int = 0  # also write last.pt every N optimizer steps, mid-epoch too; 0 = off
    resume: str | None = None  # a run directory, a checkpoint file, or auto (this run directory's last.pt)
    overwrite: bool = False  # allow a new run in a directory that already holds a completed one


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    progress: bool = True  # rich progress bars on a terminal (plain lines otherwise)
    print_config: bool = True
    image_every: int = 5  # epochs between feature-map and filter images (and at the last epoch); 0 = never
    feature_layers: list[str] | None = None  # module names; null = first conv + last block of each stage
    num_samples: int = 8  # fixed test images whose feature maps are logged
    figures: bool = True  # also write the pictures as PNG files under <run dir>/figures/


@dataclass
class SweepConfig:
    skip_completed: bool = False  # multirun: skip jobs whose results.json says completed with the same overrides


@dataclass
class Config:
    model: Any = MISSING
    data: DataConfig = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING  # open: see SCHEDULER_OPTIONS
    transfer: Any = MISSING
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


def register_configs() -> None:
    """Register the schema that ``conf/config.yaml`` lists first, so every group merges into typed fields."""
    ConfigStore.instance().store(name="cnnbench_schema", node=Config)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise CnnbenchError(message)


def check_device(device: str) -> None:
    """Reject device strings torch does not know, and devices this machine does not have."""
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise CnnbenchError(
            f"trainer.device={device!r} is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda":
        _require(torch.cuda.is_available(), f"trainer.device={device} but CUDA is not available here; "
                 "use trainer.device=auto or cpu")
        _require(dev.index is None or dev.index < torch.cuda.device_count(),
                 f"trainer.device={device} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        _require(torch.backends.mps.is_available(), "trainer.device=mps but MPS is not available here")
    elif dev.type != "cpu":
        raise CnnbenchError(f"trainer.device={device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def _check_keys(group: str, cfg: DictConfig, key: str, options: dict[str, set[str]], common: set[str]) -> None:
    """``cfg[key]`` names an option of ``group``; the config holds exactly that option's keys."""
    choice = cfg.get(key)
    _require(choice in options, f"{group}.{key}={choice!r} is unknown; available: {', '.join(options)}")
    allowed = common | options[choice]
    extra = sorted(set(cfg) - allowed)
    _require(not extra, f"{group}.{extra[0] if extra else ''} is not an option of {group}={choice}; "
             f"it accepts: {', '.join(sorted(allowed))}")
    missing = sorted(allowed - set(cfg))
    _require(not missing, f"{group}={choice} needs {group}.{missing[0] if missing else ''}")


def validate_scheduler(s: DictConfig) -> None:
    """Check a scheduler config's name, keys and values."""
    _check_keys("scheduler", s, "name", SCHEDULER_OPTIONS, SCHEDULER_COMMON)
    _require(s.interval in ("step", "epoch"), f"scheduler.interval must be step or epoch, got {s.interval!r}")
    _require(isinstance(s.warmup_epochs, (int, float)) and s.warmup_epochs >= 0,
             f"scheduler.warmup_epochs must be a number >= 0, got {s.warmup_epochs!r}")
    _require(_positive(s.warmup_start_factor) and s.warmup_start_factor <= 1,
             f"scheduler.warmup_start_factor must be in (0, 1], got {s.warmup_start_factor!r}")
    if s.name == "cosine":
        _require(isinstance(s.min_lr, (int, float)) and s.min_lr >= 0,
                 f"scheduler.min_lr must be a number >= 0, got {s.min_lr!r}")
    if s.name == "step":
        _require(_positive(s.step_size) and _positive(s.gamma), "scheduler.step_size and gamma must be positive")
    if s.name == "onecycle":
        _require(_positive(s.pct_start) and s.pct_start < 1, f"scheduler.pct_start must be in (0, 1), got "
                 f"{s.pct_start!r}")
        _require(s.warmup_epochs == 0,
                 "scheduler=onecycle warms up by itself (scheduler.pct_start); set scheduler.warmup_epochs=0")
        _require(s.anneal_strategy in ("cos", "linear"),
                 f"scheduler.anneal_strategy must be cos or linear, got {s.anneal_strategy!r}")
        _require(_positive(s.div_factor) and _positive(s.final_div_factor),
                 "scheduler.div_factor and final_div_factor must be positive")
        _require(isinstance(s.cycle_momentum, bool), f"scheduler.cycle_momentum must be true or false, got "
                 f"{s.cycle_momentum!r}")


def validate_transfer(tr: DictConfig, weights: str | None) -> None:
    """Check a transfer config's strategy, keys and values, and that it has the weights it needs
    (``weights``: the model's pretrained weights option, if any)."""
    _check_keys("transfer", tr, "strategy", TRANSFER_OPTIONS, TRANSFER_COMMON)
    pretrained = [k for k in TRANSFER_OPTIONS if k != "scratch"]
    if tr.strategy == "scratch":
        given = f"transfer.checkpoint={tr.checkpoint}" if tr.checkpoint else f"model.weights={weights}"
        _require(not (tr.checkpoint or weights), f"{given} needs a transfer strategy (transfer=scratch starts "
                 f"from random weights); use transfer={'|'.join(pretrained)}")
    else:
        _require(bool(tr.checkpoint) != bool(weights),
                 f"transfer={tr.strategy} needs one source of pretrained weights: model.weights=<name> (tv_* "
                 f"models) or transfer.checkpoint=<run dir or .pt>" + (", not both" if tr.checkpoint else ""))
    if tr.strategy == "finetune":
        _require(tr.layer_decay is None or (_positive(tr.layer_decay) and tr.layer_decay <= 1),
                 f"transfer.layer_decay must be null or in (0, 1], got {tr.layer_decay!r}")
    if tr.strategy == "gradual_unfreeze":
        for key, low in (("head_epochs", 0), ("stages", 1), ("stage_epochs", 1)):
            _require(isinstance(tr[key], int) and tr[key] >= low, f"transfer.{key} must be an integer >= {low}, "
                     f"got {tr[key]!r}")
        _require(_positive(tr.backbone_lr_scale), f"transfer.backbone_lr_scale must be positive, got "
                 f"{tr.backbone_lr_scale!r}")


def validate(cfg: DictConfig) -> None:
    """Check the values of a composed config; raise CnnbenchError naming the first bad one."""
    t, d, s = cfg.trainer, cfg.data, cfg.scheduler
    _require(t.epochs > 0, f"trainer.epochs must be a positive integer, got {t.epochs}")
    _require(t.max_steps is None or t.max_steps > 0, f"trainer.max_steps must be positive, got {t.max_steps}")
    _require(0 <= t.label_smoothing < 1, f"trainer.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    _require(t.grad_clip is None or t.grad_clip > 0, f"trainer.grad_clip must be positive, got {t.grad_clip}")
    _require(t.lookahead_every >= 0, f"trainer.lookahead_every must be >= 0, got {t.lookahead_every}")
    _require(0 <= t.lookahead_decay < 1, f"trainer.lookahead_decay must be in [0, 1), got {t.lookahead_decay}")
    _require(t.tta in (0, 1, 2), f"trainer.tta must be 0, 1 or 2, got {t.tta}")
    _require(t.eval_every >= 0, f"trainer.eval_every must be >= 0, got {t.eval_every}")
    _require(t.log_every > 0, f"trainer.log_every must be positive, got {t.log_every}")
    _require(cfg.logger.image_every >= 0, f"logger.image_every must be >= 0, got {cfg.logger.image_every}")
    _require(cfg.logger.num_samples > 0, f"logger.num_samples must be positive, got {cfg.logger.num_samples}")
    _require(t.checkpoint_every > 0, f"trainer.checkpoint_every must be positive, got {t.checkpoint_every}")
    _require(t.checkpoint_every_steps >= 0, f"trainer.checkpoint_every_steps must be >= 0, got "
             f"{t.checkpoint_every_steps}")
    check_device(t.device)
    _require(t.strategy in ("single", "ddp"), f"trainer.strategy must be single or ddp, got {t.strategy!r}")

    _require(d.batch_size > 0, f"data.batch_size must be a positive integer, got {d.batch_size}")
    _require(d.eval_batch_size > 0, f"data.eval_batch_size must be a positive integer, got {d.eval_batch_size}")
    _require(0 <= d.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    _require(d.channels in (1, 3), f"data.channels must be 1 or 3, got {d.channels}")
    _require(d.image_size is None or d.image_size > 0, f"data.image_size must be positive, got {d.image_size}")
    _require(len(d.mean) in (1, d.channels) and len(d.std) == len(d.mean),
             f"data.mean and data.std need 1 or {d.channels} values each, got {list(d.mean)} and {list(d.std)}")
    _require(all(v > 0 for v in d.std), f"data.std values must be positive, got {list(d.std)}")
    for key in ("num_train", "num_test", "num_classes"):
        _require(d[key] is None or d[key] > 0, f"data.{key} must be positive, got {d[key]}")
    _require(d.max_memory_gb > 0 and d.num_workers >= 0, "data.max_memory_gb must be positive and "
             "data.num_workers >= 0")
    a = d.augment
    _require(a.crop_padding >= 0 and a.cutout >= 0, "data.augment.crop_padding and cutout must be >= 0")
    _require(a.padding_mode in PAD_MODES, f"data.augment.padding_mode must be one of {', '.join(PAD_MODES)}, "
             f"got {a.padding_mode!r}")

    validate_scheduler(s)
    validate_transfer(cfg.transfer, cfg.model.get("weights"))

    lr = cfg.optimizer.get("lr")
    _require(_positive(lr),
             f"optimizer.lr must be a positive number, got {lr!r}")
    scale = cfg.optimizer.get("norm_lr_scale", 1.0)
    _require(_positive(scale), f"optimizer.norm_lr_scale must be a positive number, got {scale!r}")
    # Let the optimizer check its own arguments now, on a dummy parameter, instead of after data loading.
    import torch

    from cnnbench.engine.optim import build_optimizer

    build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python containers (for checkpoints and results)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
