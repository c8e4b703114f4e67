"""The checks of a run's config before anything is loaded: ``check_values`` what types cannot say (ranges, finite
numbers, combinations), for a config from the command line or read back from an artefact alike;
``check_machine`` what this machine must have (the devices asked for); ``validate`` both. Wrong types and unknown
keys are refused earlier, by the schema (``cnnbench.config.schema``), when Hydra composes the config; keys added
with ``+`` are checked against it here. What only the loaded data can settle is ``cnnbench.data.checks``. The
code that builds a run assumes a checked config. Nothing here imports torch."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cnnbench.config.keys import check_keys
from cnnbench.config.schema import (
    AUTO_POLICIES,
    COMPILE_MODES,
    FILE_SETS,
    INTERPOLATIONS,
    LIBRARY_SETS,
    PAD_MODES,
    PHOTO_SETS,
    PIPELINES,
    SOURCE_KEYS,
    crop_range,
)
from cnnbench.errors import CnnbenchError
from cnnbench.errors import require as _require

PRINT_CONFIG = ("diff", "full", "true", "false")  # (true: full; a bool on the command line arrives as text)
DEVICES = r"auto|cpu|cuda(:\d+)?|mps"  # trainer.device
MAX_SEED = 2**32 - 1  # trainer.seed, data.split_seed: NumPy's seeds are 32-bit (so are Lightning's)
MAX_SIDE = 4096  # pixels: data.image_size, store_size, resize_size (a 4096 px RGB image is 50 MB as uint8)
FLOAT32_MAX = 3.4028234663852886e38  # every number reaches torch as a float32 at last


def check_device(device: str) -> None:
    """Reject device strings that are not auto, cpu, cuda, cuda:N or mps."""
    _require(re.fullmatch(DEVICES, str(device)) is not None,
             f"trainer.device={device!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


def check_machine(cfg: DictConfig) -> None:
    """What this machine must have for ``cfg``: the GPU (or MPS) that ``trainer.device`` or
    ``data.decode_device`` asks for, and a cache folder apart from the data."""
    import torch

    check_cache_dir(cfg.data)
    device = cfg.trainer.device
    if device.startswith("cuda"):
        _require(torch.version.cuda is not None or torch.version.hip is not None, f"trainer.device={device} but "
                 f"this torch ({torch.__version__}) is a CPU-only build; for a GPU install a CUDA build: pip install "
                 f"--force-reinstall torch torchvision --index-url https://download.pytorch.org/whl/cu128")
        _require(torch.cuda.is_available(), f"trainer.device={device} but CUDA is not available here; "
                 "use trainer.device=auto or cpu")
        index = torch.device(device).index
        _require(index is None or index < torch.cuda.device_count(),
                 f"trainer.device={device} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device == "mps":
        _require(torch.backends.mps.is_available(), "trainer.device=mps but MPS is not available here")
    decode = cfg.data.decode_device
    _require(decode == "cpu" or torch.cuda.is_available(),
             f"data.decode_device={decode} needs a CUDA GPU and none is visible; use data.decode_device=cpu")


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def check_schema_keys(cfg: DictConfig) -> None:
    """Keys added with ``+group.key=...`` bypass the schema when Hydra composes: refuse any key that the option's
    schema does not have, naming the option, then any other group's (``keys.check_keys``; the optimizer's extra
    keywords are left to its constructor, which checks them)."""
    for group, choice in (("model", "name"), ("scheduler", "name"), ("transfer", "strategy")):
        node = cfg[group]
        schema = OmegaConf.get_type(node)
        if not dataclasses.is_dataclass(schema):
            continue
        allowed = [f.name for f in dataclasses.fields(schema)]
        extra = [k for k in node if k not in allowed]
        close = difflib.get_close_matches(extra[0], allowed, n=1) if extra else []
        _require(not extra, f"{group}.{extra[0] if extra else ''} is not an option of {group}={node[choice]}; "
                 + (f"did you mean {group}.{close[0]}? " if close else "")
                 + f"it accepts: {', '.join(k for k in allowed if k != choice) or 'none'}")
    check_keys(cfg)


def check_augment(a: DictConfig, size: int | None) -> None:
    """Augmentation values against the image side ``size`` (when known): a crop padding or cutout as large as
    the image would blank or replace it (and reflect padding cannot exceed the image)."""
    _require((a.crop_padding or 0) >= 0 and a.cutout >= 0, "data.augment.crop_padding and cutout must be >= 0")
    scale, ratio = map(list, crop_range(a))
    _require(len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1, f"data.augment.crop_scale must be [low, high] with "
             f"0 < low <= high <= 1 (fractions of the image's area), got {scale}")
    _require(len(ratio) == 2 and 0 < ratio[0] <= ratio[1], f"data.augment.crop_ratio must be [low, high] with "
             f"0 < low <= high (width / height), got {ratio}")
    _require(a.padding_mode in PAD_MODES, f"data.augment.padding_mode must be one of {', '.join(PAD_MODES)}, "
             f"got {a.padding_mode!r}")
    _require(a.auto is None or a.auto in AUTO_POLICIES, f"data.augment.auto must be null or one of "
             f"{', '.join(AUTO_POLICIES)}, got {a.auto!r}")
    _require(a.auto_bins >= 2 and 0 <= a.auto_magnitude < a.auto_bins and a.auto_num_ops >= 1,
             f"data.augment.auto_bins must be >= 2, auto_magnitude in [0, auto_bins) and auto_num_ops >= 1, got "
             f"{a.auto_bins}, {a.auto_magnitude} and {a.auto_num_ops}")
    _require(0 <= a.erasing_prob <= 1, f"data.augment.erasing_prob must be in [0, 1], got {a.erasing_prob}")
    _require(a.brightness >= 0 and 0 <= a.contrast < 1, f"data.augment.brightness must be >= 0 and contrast in "
             f"[0, 1) (0 = off; a scale of 1 - contrast must stay positive), got {a.brightness} and {a.contrast}")
    _require(a.mixup_alpha >= 0 and a.cutmix_alpha >= 0, f"data.augment.mixup_alpha and cutmix_alpha must be >= 0 "
             f"(0 = off), got {a.mixup_alpha} and {a.cutmix_alpha}")
    for key in ("mix_prob", "mix_switch_prob"):
        _require(0 <= a[key] <= 1, f"data.augment.{key} must be in [0, 1], got {a[key]}")
    if size:
        _require((a.crop_padding or 0) < size, f"data.augment.crop_padding={a.crop_padding} must be smaller than the "
                 f"image side ({size})")
        _require(a.cutout < size, f"data.augment.cutout={a.cutout} must be smaller than the image side ({size}): "
                 f"a larger square blanks whole images")


SELECTORS = ("val/acc", "val/balanced_acc", "val/macro_f1", "val/loss")  # trainer.monitor
MONITORS = (*SELECTORS, *(m.replace("val/", "val_ema/") for m in SELECTORS), "train/loss")  # early stopping


def check_early_stopping(t: DictConfig) -> None:
    es = t.early_stopping
    _require(es.patience >= 0, f"trainer.early_stopping.patience must be >= 0 (0 = off), got {es.patience}")
    _require(es.min_delta >= 0, f"trainer.early_stopping.min_delta must be >= 0, got {es.min_delta}")
    _require(es.monitor in MONITORS, f"trainer.early_stopping.monitor must be one of {', '.join(MONITORS)}, "
             f"got {es.monitor!r}")
    _require(not (es.patience and es.monitor.startswith("val_ema/") and not t.ema_decay),
             f"trainer.early_stopping.monitor={es.monitor} needs trainer.ema_decay > 0")


def check_class_weights(weights: Any) -> None:
    ok = weights is None or weights == "balanced" or (
        OmegaConf.is_list(weights) and len(weights) > 0 and all(_positive(w) for w in weights))
    _require(ok, f"trainer.class_weights must be null, balanced or a list of positive numbers (one per class), "
             f"got {weights!r}")


def check_scheduler(s: DictConfig) -> None:
    """Check a scheduler config's values."""
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
    if s.name == "linear":
        _require(isinstance(s.end_factor, int | float) and 0 <= s.end_factor <= 1,
                 f"scheduler.end_factor must be in [0, 1], got {s.end_factor!r}")
    if s.name == "onecycle":
        _require(_positive(s.pct_start) and s.pct_start < 1, f"scheduler.pct_start must be in (0, 1), got "
                 f"{s.pct_start!r}")
        _require(s.warmup_epochs == 0,
                 "scheduler=onecycle warms up by itself (scheduler.pct_start); set scheduler.warmup_epochs=0")
        _require(s.anneal_strategy in ("cos", "linear"),
                 f"scheduler.anneal_strategy must be cos or linear, got {s.anneal_strategy!r}")
        _require(_positive(s.div_factor) and _positive(s.final_div_factor),
                 "scheduler.div_factor and final_div_factor must be positive")


def check_transfer(tr: DictConfig, weights: str | None) -> None:
    """Check a transfer config's strategy, keys and values, and that it has the weights it needs
    (``weights``: the model's pretrained weights option, if any)."""
    pretrained = ["finetune", "freeze_backbone", "gradual_unfreeze"]
    if tr.strategy in ("scratch", "distill"):
        given = f"transfer.checkpoint={tr.checkpoint}" if tr.checkpoint else f"model.weights={weights}"
        _require(not (tr.checkpoint or weights), f"{given} needs a transfer strategy (transfer={tr.strategy} starts "
                 f"from random weights); use transfer={'|'.join(pretrained)}")
    else:
        _require(bool(tr.checkpoint) != bool(weights),
                 f"transfer={tr.strategy} needs one source of pretrained weights: model.weights=<file, or a "
                 f"torchvision weights name for tv_* models> or transfer.checkpoint=<run dir or .pt>"
                 + (", not both" if tr.checkpoint else ""))
    if tr.strategy == "distill":
        _require(bool(tr.teacher), "transfer=distill needs transfer.teacher=<a finished run's directory or its .pt>")
        _require(_positive(tr.temperature), f"transfer.temperature must be positive, got {tr.temperature!r}")
        _require(0 <= tr.alpha <= 1, f"transfer.alpha must be in [0, 1] (the teacher's term's weight), got "
                 f"{tr.alpha!r}")
    if tr.strategy == "finetune":
        _require(tr.layer_decay is None or (_positive(tr.layer_decay) and tr.layer_decay <= 1),
                 f"transfer.layer_decay must be null or in (0, 1], got {tr.layer_decay!r}")
    if tr.strategy == "gradual_unfreeze":
        for key, low in (("head_epochs", 0), ("stages", 1), ("stage_epochs", 1)):
            _require(tr[key] >= low, f"transfer.{key} must be an integer >= {low}, got {tr[key]!r}")
        _require(_positive(tr.backbone_lr_scale), f"transfer.backbone_lr_scale must be positive, got "
                 f"{tr.backbone_lr_scale!r}")


def check_data(d: DictConfig) -> None:
    """The ``data`` group's values."""
    _require(d.name in LIBRARY_SETS + PHOTO_SETS, f"unknown data set {d.name!r}; available: "
             f"{', '.join(sorted(LIBRARY_SETS + PHOTO_SETS))}")
    _require(d.batch_size > 0, f"data.batch_size must be a positive integer, got {d.batch_size}")
    _require(d.min_steps_per_epoch >= 0, f"data.min_steps_per_epoch must be 0 (off) or more, got "
                                          f"{d.min_steps_per_epoch}")
    _require(d.eval_batch_size > 0, f"data.eval_batch_size must be a positive integer, got {d.eval_batch_size}")
    _require(0 <= d.val_fraction < 1, f"data.val_fraction must be in [0, 1), got {d.val_fraction}")
    _require(0 < d.test_fraction < 1, f"data.test_fraction must be in (0, 1), got {d.test_fraction}")
    _require(d.sampler in ("shuffle", "balanced"), f"data.sampler must be shuffle or balanced, got {d.sampler!r}")
    _require(d.channels in (1, 3), f"data.channels must be 1 or 3, got {d.channels}")
    _require(re.fullmatch(r"cpu|cuda(:\d+)?", d.decode_device) is not None,
             f"data.decode_device must be cpu, cuda or cuda:N, got {d.decode_device!r}")
    _require(d.decode_device == "cpu" or d.name in FILE_SETS, f"data.decode_device={d.decode_device} decodes image "
             f"files (data={' or '.join(FILE_SETS)}); data={d.name} is not decoded from files on the GPU")
    for key, owner in SOURCE_KEYS.items():
        default = {"label_key": "cls", "shuffle_buffer": 1000,
                   "split_map": dict.fromkeys(("train", "val", "test"))}.get(key)
        _require(d[key] == default or d.name == owner, f"data.{key} is for data={owner}; data={d.name} does not "
                 f"read it")
    _require(d.shuffle_buffer >= 1, f"data.shuffle_buffer must be >= 1, got {d.shuffle_buffer}")
    _require(d.name != "webdataset" or d.sampler == "shuffle", "data.sampler=balanced draws images at random "
             "places; data=webdataset streams its shards front to back: use data.sampler=shuffle")
    _require(d.label_key in ("cls", "json"), f"data.label_key must be cls or json, got {d.label_key!r}")
    check_sizes(d)
    counts = "1 value each" if d.channels == 1 else f"1 or {d.channels} values each"
    _require(len(d.mean) in (1, d.channels) and len(d.std) == len(d.mean),
             f"data.mean and data.std need {counts}, got {list(d.mean)} and {list(d.std)}")
    _require(all(v > 0 for v in d.std), f"data.std values must be positive, got {list(d.std)}")
    for key in ("num_train", "num_test", "num_classes"):
        _require(d[key] is None or d[key] > 0, f"data.{key} must be positive, got {d[key]}")
    _require(d.max_memory_gb > 0, f"data.max_memory_gb must be positive, got {d.max_memory_gb}")
    _require(d.num_workers >= 0, f"data.num_workers must be 0 (load in this process) or more, got {d.num_workers}")
    _require(0 <= d.split_seed <= MAX_SEED, f"data.split_seed must be in [0, {MAX_SEED}], got {d.split_seed}")
    _require(d.pipeline in PIPELINES, f"data.pipeline must be one of {', '.join(PIPELINES)}, got {d.pipeline!r}")
    _require(d.interpolation in INTERPOLATIONS, f"data.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
             f"got {d.interpolation!r}")
    _require(d.pipeline != "crop" or d.name in PHOTO_SETS, f"data.pipeline=crop is for photos of any size "
             f"(data={' or '.join(PHOTO_SETS)}); data={d.name} is a set of small squares: use data.pipeline=pad or "
             f"auto")
    _require(d.decode_workers is None or d.decode_workers > 0, f"data.decode_workers must be positive (or null), "
             f"got {d.decode_workers}")
    check_augment(d.augment, d.image_size)


def check_sizes(d: DictConfig) -> None:
    """``data.image_size``, ``store_size`` and ``resize_size``: positive, at most MAX_SIDE, and the sizes images
    are stored or resized to no smaller than the model's input (smaller would train on upsampled crops of a few
    pixels, or evaluate on images padded with black)."""
    for key in ("image_size", "store_size", "resize_size"):
        value = d[key]
        _require(value is None or 0 < value <= MAX_SIDE, f"data.{key} must be a whole number in [1, {MAX_SIDE}] "
                 f"(pixels; or null), got {value}")
    size = d.image_size
    for key, what in (("store_size", "training photos' longer side as stored"),
                      ("resize_size", "the side evaluation resizes to before its centre crop")):
        _require(d[key] is None or size is None or d[key] >= size, f"data.{key}={d[key]} ({what}) must be at least "
                 f"data.image_size={size}; raise it or leave it null")


def check_cache_dir(d: DictConfig) -> None:
    """The decoded-image cache may not lie inside ``data.root``: each cache file would change the root's
    fingerprint, so every run would miss the cache and write another."""
    if not d.cache_dir or not d.root:
        return
    cache, root = (os.path.realpath(os.path.expanduser(p)) for p in (d.cache_dir, d.root))
    _require(cache != root and not cache.startswith(root + os.sep), f"data.cache_dir={d.cache_dir} lies inside "
             f"data.root={d.root}; its files would change the data's fingerprint on every run: choose a cache "
             f"folder outside it")


def validate(cfg: DictConfig) -> None:
    """Check a composed config's values and this machine (``check_values``, ``check_machine``); raise
    CnnbenchError naming the first bad one."""
    check_values(cfg)
    check_machine(cfg)


def check_values(cfg: DictConfig) -> None:
    """Check the values of a config (composed, or read back from an artefact); raise CnnbenchError naming the
    first bad one."""
    check_numbers(cfg)
    check_trainer(cfg.trainer)
    check_logger(cfg.logger)
    check_data(cfg.data)
    check_schema_keys(cfg)
    drop_path = cfg.model.get("drop_path")
    _require(drop_path is None or 0 <= drop_path < 1, f"model.drop_path must be in [0, 1) (0 = off), got {drop_path}")
    check_scheduler(cfg.scheduler)
    check_transfer(cfg.transfer, cfg.model.get("weights"))
    check_optimizer(cfg.optimizer)


def check_numbers(cfg: DictConfig, prefix: str = "") -> None:
    """Every number of ``cfg`` finite and within float32's range (torch's at last): ``inf``, ``nan`` or 1e308
    would surface much later as divergence or a traceback."""
    for key, value in (cfg.items() if isinstance(cfg, DictConfig) else enumerate(cfg)):
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (DictConfig, list)) or OmegaConf.is_list(value):
            check_numbers(value, name)
        elif isinstance(value, float) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise CnnbenchError(f"{name}={value} is not a finite number within float32's range (|x| <= 3.4e38)")


def check_trainer(t: DictConfig) -> None:
    _require(t.epochs > 0, f"trainer.epochs must be a positive integer, got {t.epochs}")
    _require(t.max_steps is None or t.max_steps > 0, f"trainer.max_steps must be positive, got {t.max_steps}")
    _require(0 <= t.label_smoothing < 1, f"trainer.label_smoothing must be in [0, 1), got {t.label_smoothing}")
    _require(t.grad_clip is None or t.grad_clip > 0, f"trainer.grad_clip must be positive, got {t.grad_clip}")
    _require(t.lookahead_every >= 0, f"trainer.lookahead_every must be >= 0, got {t.lookahead_every}")
    _require(0 <= t.lookahead_decay < 1, f"trainer.lookahead_decay must be in [0, 1), got {t.lookahead_decay}")
    _require(t.tta in (0, 1, 2), f"trainer.tta must be 0, 1 or 2, got {t.tta}")
    _require(t.accumulate_steps >= 1, f"trainer.accumulate_steps must be an integer >= 1, got {t.accumulate_steps}")
    _require(0 <= t.ema_decay < 1, f"trainer.ema_decay must be in [0, 1) (0 = off; e.g. 0.999), got {t.ema_decay}")
    check_early_stopping(t)
    _require(t.monitor in SELECTORS, f"trainer.monitor must be one of {', '.join(SELECTORS)}, got {t.monitor!r}")
    check_class_weights(t.class_weights)
    _require(t.eval_every >= 0, f"trainer.eval_every must be >= 0, got {t.eval_every}")
    _require(t.log_every > 0, f"trainer.log_every must be positive, got {t.log_every}")
    _require(t.threads is None or t.threads > 0, f"trainer.threads must be >= 1 (or null: the cores / processes), "
             f"got {t.threads}")
    _require(t.checkpoint_every > 0, f"trainer.checkpoint_every must be positive, got {t.checkpoint_every}")
    _require(t.checkpoint_every_steps >= 0, f"trainer.checkpoint_every_steps must be >= 0, got "
             f"{t.checkpoint_every_steps}")
    _require(0 <= t.seed <= MAX_SEED, f"trainer.seed must be in [0, {MAX_SEED}], got {t.seed}")
    check_device(t.device)
    _require(t.strategy in ("single", "ddp"), f"trainer.strategy must be single or ddp, got {t.strategy!r}")
    _require(t.compile_mode in COMPILE_MODES, f"trainer.compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                                              f"got {t.compile_mode!r}")
    _require(t.compile or t.compile_mode == "default", f"trainer.compile_mode={t.compile_mode} needs "
                                                       "trainer.compile=true")


def check_logger(log: DictConfig) -> None:
    _require(log.print_config.lower() in PRINT_CONFIG, f"logger.print_config must be diff, full or false, "
                                                       f"got {log.print_config}")
    _require(log.snapshots >= 0, f"logger.snapshots must be >= 0, got {log.snapshots}")
    _require(log.num_samples > 0, f"logger.num_samples must be positive, got {log.num_samples}")
    _require(log.embedding_images >= 0, f"logger.embedding_images must be >= 0 (0 = none), got "
                                        f"{log.embedding_images}")


def check_optimizer(opt: DictConfig) -> None:
    lr = opt.get("lr")
    _require(_positive(lr), f"optimizer.lr must be a positive number, got {lr!r}")
    scale = opt.get("norm_lr_scale", 1.0)
    _require(_positive(scale), f"optimizer.norm_lr_scale must be a positive number, got {scale!r}")


def to_container(cfg: DictConfig) -> dict:
    """The resolved config as plain Python containers (for checkpoints and results)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
