"""The config schema: a dataclass for every group and every option, so that a wrong type or a misspelt key is
refused when Hydra composes the config, and every default is written once.

The fixed-shape groups (data, trainer, logger) are fields of the root ``Config``. Groups whose keys depend on
the option (scheduler, transfer, optimizer, model) register one schema per option; each option's YAML file in
``conf/`` starts from its schema (``defaults: [/<schema name>@_here_]``) and sets only what differs. Model
schemas come from the builders' signatures (``cnnbench.config.model_options``). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PAD_MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}  # torchvision's name: F.pad's
AUTO_POLICIES = ("trivialaugment", "randaugment")  # data.augment.auto (cnnbench.data.autoaugment)
PIPELINES = ("auto", "pad", "crop")  # data.pipeline (cnnbench.data.pipeline)
FILE_SETS = ("imagefolder", "filelist")  # users' images as files (nvJPEG can decode them: data.decode_device)
PHOTO_SETS = (*FILE_SETS, "hf", "webdataset")  # users' images of any size; the others are library sets
SOURCE_KEYS = {"path": "hf", "split_map": "hf", "image_column": "hf", "label_column": "hf", "shards": "webdataset",
               "val_shards": "webdataset", "test_shards": "webdataset", "label_key": "webdataset",
               "shuffle_buffer": "webdataset"}  # data keys of one data set only
LIBRARY_SETS = ("digits", "cifar10", "cifar100", "mnist", "fashion_mnist", "svhn", "stl10", "synthetic")
CROP_SCALE = [0.08, 1.0]  # data.augment.crop_scale null, pipeline crop: torchvision's RandomResizedCrop defaults
CROP_RATIO = [3 / 4, 4 / 3]
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # trainer.compile_mode
GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the compile modes that replay CUDA graphs on a GPU
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")  # data.interpolation: torchvision's InterpolationMode values


@dataclass
class AugmentConfig:
    """``data.augment``: what the training loader does to each batch (``cnnbench.data.augment``)."""

    crop_padding: int | None = 0  # RandomCrop(size, padding=crop_padding); 0 = off; null: 4 with data.pipeline=pad
    crop_scale: list[float] | None = None  # pipeline crop: RandomResizedCrop's scale; null: [0.08, 1]
    crop_ratio: list[float] | None = None  # and its ratio (width / height) range; null: [3/4, 4/3]
    padding_mode: str = "constant"  # RandomCrop's: constant (zeros) | edge | reflect
    hflip: bool = False  # RandomHorizontalFlip(p=0.5)
    alternate_flip: bool = False  # with hflip: each image mirrored in every other epoch (airbench), not at random
    auto: str | None = None  # trivialaugment (TrivialAugmentWide) | randaugment, per image after crop and flip
    auto_bins: int = 31  # magnitude bins (torchvision's num_magnitude_bins)
    auto_magnitude: int = 9  # randaugment: the bin every op uses
    auto_num_ops: int = 2  # randaugment: ops applied in turn to each image
    cutout: int = 0  # side of a zeroed square at a random place; 0 = off
    erasing_prob: float = 0.0  # RandomErasing(p) after normalisation: a random rectangle set to the mean colour
    brightness: float = 0.0  # after normalisation: each image shifted by U(-b, b) (in units of the channels' std)
    contrast: float = 0.0  # after normalisation: each image then scaled by U(1 - c, 1 + c) about the mean colour
    mixup_alpha: float = 0.0  # mixup: each batch blended with its reverse, weight ~ Beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.0  # cutmix: a box of the reversed batch pasted in, area ~ Beta(alpha, alpha); 0 = off
    mix_prob: float = 1.0  # probability that a batch is mixed at all (with mixup or cutmix on)
    mix_switch_prob: float = 0.5  # with both on: probability that a mixed batch uses cutmix rather than mixup


def crop_range(augment: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``data.augment``'s random-resized-crop scale and ratio ranges, null meaning CROP_SCALE and CROP_RATIO."""
    return tuple(augment.crop_scale or CROP_SCALE), tuple(augment.crop_ratio or CROP_RATIO)


class PrecisionChoice(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


@dataclass
class DataConfig:
    name: str = MISSING  # one of LIBRARY_SETS (cnnbench.data.sources) or PHOTO_SETS (cnnbench.data.folders)
    root: str | None = None
    download: bool = False
    channels: int = MISSING
    image_size: int | None = None  # the model's input side; null: the images' own (library sets, pad), 224 (crop)
    pipeline: str = "auto"  # pad (CIFAR-style) | crop (photos: aspect kept) | auto (cnnbench/data/pipeline.py)
    store_size: int | None = None  # crop: training photos' longer side as stored; null: 1.5 x image_size
    resize_size: int | None = None  # crop: evaluation's Resize before CenterCrop(image_size); null: image_size / 0.875
    interpolation: str = "bilinear"  # crop: bilinear | bicubic | nearest (model.weights: the weights' own)
    decode_workers: int | None = None  # processes decoding image files; null: every core
    decode_device: str = "cpu"  # cpu (Pillow, every core) | cuda | cuda:N (JPEGs in batches by nvJPEG: batch_decode)
    num_classes: int | None = None  # imagefolder: null takes it from the class folders
    class_names: list[str] | None = None
    mean: list[float] = field(default_factory=lambda: [0.5])
    std: list[float] = field(default_factory=lambda: [0.5])
    batch_size: int = 128
    min_steps_per_epoch: int = 8  # a small training set caps batch_size so an epoch has this many steps; 0 = off
    eval_batch_size: int = 512
    val_fraction: float = 0.1  # held out from train to select the best checkpoint (imagefolder: per class)
    test_fraction: float = 0.2  # imagefolder with a train/ folder alone: held out per class as the test split
    split_seed: int = 0  # fixes the train/val (and digits train/test) split, independent of trainer.seed
    num_train: int | None = None  # use only the first N training images (synthetic: how many to make)
    num_test: int | None = None  # likewise for the test split
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    cache_dir: str | None = None  # decoded uint8 tensors are cached here; null = no cache
    max_memory_gb: float = 8.0  # imagefolder: larger (as uint8) stays files, decoded per batch by DataLoader workers
    num_workers: int = 2  # DataLoader worker processes for such streamed image folders
    sampler: str = "shuffle"  # shuffle (each image once per epoch) | balanced (classes drawn equally, replacement)
    # data=hf (cnnbench.data.hf): a Hub name or a folder (save_to_disk, Parquet, Arrow); splits mapped by name
    path: str | None = None
    split_map: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(("train", "val", "test")))
    # ^ the dataset's split for each of cnnbench's (data.split_map.val=dev); null: found by its usual names
    image_column: str | None = None  # null: the one Image feature
    label_column: str | None = None  # null: the one ClassLabel feature
    # data=webdataset (cnnbench.data.shards): tar shards, brace-expanded; null val/test shards: carved from train
    shards: str | None = None  # e.g. /data/train-{000000..000099}.tar
    val_shards: str | None = None
    test_shards: str | None = None
    label_key: str = "cls"  # cls (the label as text) | json (a .json member's "label"); images jpg|png|webp
    shuffle_buffer: int = 1000  # training samples shuffled together as they stream (shards are shuffled too)


@dataclass
class EarlyStoppingConfig:
    """``trainer.early_stopping``: end the run when ``monitor`` has not improved by ``min_delta`` for
    ``patience`` epochs (``cnnbench.engine.early_stopping``)."""

    patience: int = 0  # epochs without improvement before stopping; 0 = off
    min_delta: float = 0.0  # the least change that counts as an improvement (percent points for accuracies)
    monitor: str = "val/acc"  # val/{acc,loss,balanced_acc,macro_f1} | val_ema/{...} | train/loss


@dataclass
class TrainerConfig:
    epochs: int = 30
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs, benchmarks)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    strategy: str = "single"  # single | ddp (one process per device, launched by torchrun)
    precision: PrecisionChoice = PrecisionChoice.auto
    channels_last: bool | None = None  # null = on for conv nets
    compile: bool = False
    # torch.compile's mode: default | reduce-overhead | max-autotune (both replay CUDA graphs on a GPU: for small
    # batches whose steps are bound by kernel launches) | max-autotune-no-cudagraphs
    compile_mode: str = "default"
    threads: int | None = None  # CPU threads; null = the cores / processes on this machine (OMP_NUM_THREADS if set)
    # glibc keeps freed memory for the next step instead of returning it to the OS (engine/host_memory.py): no page
    # faults per step, ~20% faster CPU steps at large batches; false returns it (a lower resident size)
    keep_host_memory: bool = True
    profile: bool = False  # torch.profiler over a few steps: <run dir>/profile/{ops.txt,trace.json}
    measure_latency: bool = False  # after testing: batch-1 latency and throughput of best.pt (results.json latency)
    seed: int = 0
    deterministic: bool = False
    label_smoothing: float = 0.0
    lookahead_every: int = 0  # lookahead (cnnbench/engine/lookahead.py) every N steps; 0 = off
    lookahead_decay: float = 0.95  # per step; the slow weights' decay grows as (step / steps)^3 to this^N
    tta: int = 0  # test-time augmentation: 0 off, 1 mirror image, 2 mirror + 1-pixel shifts (logits averaged)
    grad_clip: float | None = None  # max global gradient norm
    accumulate_steps: int = 1  # micro-batches of data.batch_size per optimizer step (gradients summed)
    ema_decay: float = 0.0  # exponential moving average of the weights, e.g. 0.999 (per optimizer step); 0 = off
    ema_warmup: bool = False  # decay min(ema_decay, (1 + step) / (10 + step)): the average forgets the start
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    monitor: str = "val/acc"  # what selects best.pt: val/acc | val/balanced_acc | val/macro_f1 | val/loss
    class_weights: Any = None  # null | balanced (n / (classes x count)) | [w1, ..., wK]: weighted cross-entropy
    eval_every: int = 0  # also evaluate the test set every N epochs (a learning curve); 0 = only at the end
    log_every: int = 25  # optimizer steps between loss read-outs (each one syncs with the device)
    checkpoint_every: int = 1  # epochs between writes of checkpoints/last.pt
    checkpoint_every_steps: int = 0  # also write last.pt every N optimizer steps, mid-epoch too; 0 = off
    resume: str | None = None  # a run directory, a checkpoint file, auto (this run directory's last.pt), or
    # continue_or_start (auto when this run directory holds a checkpoint of its own, else a new run: requeues)
    overwrite: bool = False  # allow a new run in a directory that already holds a completed one


@dataclass
class LoggerConfig:
    tensorboard: bool = True
    progress: bool = True  # rich progress bars on a terminal (plain lines otherwise)
    print_config: str = "diff"  # diff (what differs from `cnnbench` alone) | full | false
    snapshots: int = 4  # epochs with feature-map and filter images, spread over the run (first, last and
    # between; every epoch of a shorter run); 0 = none
    feature_layers: list[str] | None = None  # module names; null = first activation + last block of each stage
    num_samples: int = 8  # fixed test images whose feature maps are logged
    figures: bool = True  # also write the pictures as PNG files under <run dir>/figures/
    explain: bool = True  # Grad-CAM of the fixed images at each snapshot and of the test mistakes; receptive
    # fields (theoretical boxes, effective heat maps) at the start and the end
    embedding_images: int = 256  # test images whose penultimate features go to TensorBoard's projector; 0 = none


@dataclass
class SweepConfig:
    skip_completed: bool = False  # multirun: skip jobs whose results.json says completed with the same overrides
    trial: int | None = None  # set by the Optuna sweeper: the number of the trial this job runs
    study: str | None = None  # and its study's name


@dataclass
class Config:
    model: Any = MISSING
    data: DataConfig = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING  # one of the SCHEDULERS, chosen by the scheduler group
    transfer: Any = MISSING  # one of the TRANSFERS
    trainer: TrainerConfig = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


# -- scheduler: cnnbench.engine.optim.build_scheduler -----------------------------------------------------------
@dataclass
class SchedulerConfig:
    name: str = MISSING
    interval: str = "step"  # update every optimizer step (or every epoch)
    warmup_epochs: float = 0.0  # linear warm-up from lr * warmup_start_factor; 0 = none
    warmup_start_factor: float = 0.1


@dataclass
class CosineConfig(SchedulerConfig):
    name: str = "cosine"
    min_lr: float = 0.0


@dataclass
class StepConfig(SchedulerConfig):
    name: str = "step"
    interval: str = "epoch"
    step_size: float = 30  # epochs
    gamma: float = 0.1


@dataclass
class OneCycleConfig(SchedulerConfig):
    """torch.optim.lr_scheduler.OneCycleLR's arguments and defaults."""

    name: str = "onecycle"
    pct_start: float = 0.25
    anneal_strategy: str = "cos"  # cos | linear (linear up and down: airbench's triangle)
    div_factor: float = 25.0
    final_div_factor: float = 10000.0
    cycle_momentum: bool = True  # momentum goes 0.95 -> 0.85 -> 0.95 against the lr (overrides SGD's momentum)


@dataclass
class LinearConfig(SchedulerConfig):
    """torch.optim.lr_scheduler.LinearLR from the full rate down to lr x end_factor at the last step."""

    name: str = "linear"
    end_factor: float = 0.0


@dataclass
class ConstantConfig(SchedulerConfig):
    name: str = "none"


SCHEDULERS = {"cosine": CosineConfig, "step": StepConfig, "onecycle": OneCycleConfig, "linear": LinearConfig,
              "none": ConstantConfig}


# -- transfer: cnnbench.transfer ---------------------------------------------------------------------------------
@dataclass
class TransferConfig:
    strategy: str = MISSING
    checkpoint: str | None = None  # a run directory (its best.pt) or a .pt file of an earlier cnnbench run
    allow_unfinished: bool = False  # also start from a run that is still training or did not complete


@dataclass
class ScratchConfig(TransferConfig):
    strategy: str = "scratch"


@dataclass
class FinetuneConfig(TransferConfig):
    strategy: str = "finetune"
    layer_decay: float | None = None  # e.g. 0.7: each backbone unit trains at 0.7x the lr of the one above


@dataclass
class FreezeBackboneConfig(TransferConfig):
    strategy: str = "freeze_backbone"


@dataclass
class GradualUnfreezeConfig(TransferConfig):
    strategy: str = "gradual_unfreeze"
    head_epochs: int = 5  # the new head trains alone this many epochs
    stages: int = 1  # then the backbone unfreezes from the top in this many steps (1 = all at once)
    stage_epochs: int = 1  # epochs between two steps
    backbone_lr_scale: float = 0.1  # unfrozen units train at lr x this


@dataclass
class DistillConfig(TransferConfig):
    """Knowledge distillation (``cnnbench.engine.distill``): the model trains from scratch on the labels and on a
    finished run's softened answers."""

    strategy: str = "distill"
    teacher: str | None = None  # the teacher: a finished cnnbench run (its best.pt) or a checkpoint, any model
    temperature: float = 4.0  # T: both sides' logits divided by it before the softmax
    alpha: float = 0.5  # the soft loss's weight; the labels' weighs 1 - alpha


TRANSFERS = {"scratch": ScratchConfig, "finetune": FinetuneConfig, "freeze_backbone": FreezeBackboneConfig,
             "gradual_unfreeze": GradualUnfreezeConfig, "distill": DistillConfig}
FROM_SCRATCH = ("scratch", "distill")  # strategies whose model starts from random weights


# -- optimizer: torch.optim classes through Hydra's _target_ (cnnbench.engine.optim), with torch's defaults -------
@dataclass
class OptimizerConfig:
    _target_: str = MISSING
    lr: float = MISSING
    weight_decay: float = 0.0
    maximize: bool = False
    foreach: bool | None = True  # multi-tensor update kernels; torch's default (null) uses them on CUDA only, and
    # on the CPU they make the optimizer step 2.4-3x faster (docs/speed.md)
    norm_lr_scale: float = 1.0  # cnnbench's own key: normalisation layers train at lr x this (weight decay / this)
    decay_norm_bias: bool = True  # cnnbench's own key: false = no weight decay on normalisation layers and biases


@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False


@dataclass
class AdamConfig(OptimizerConfig):
    _target_: str = "torch.optim.Adam"
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    amsgrad: bool = False


@dataclass
class AdamWConfig(AdamConfig):
    _target_: str = "torch.optim.AdamW"
    weight_decay: float = 0.01


@dataclass
class MuonConfig(OptimizerConfig):
    """cnnbench.engine.muon.Muon: orthogonalised momentum for conv filters and weight matrices, SGD for the rest."""

    _target_: str = "cnnbench.engine.muon.Muon"
    lr: float = 0.02
    momentum: float = 0.95
    nesterov: bool = True
    ns_steps: int = 5  # Newton-Schulz iterations per step
    normalize_weights: bool = False  # rescale each filter bank to norm sqrt(out_channels) before its step
    normalize_every: int = 1  # with normalize_weights: every N steps only (hiverge's record: periodically)
    other_lr_scale: float = 1.0  # biases, normalisation layers and the classifier: SGD at lr x this
    other_momentum: float = 0.9


OPTIMIZERS = {"sgd": SGDConfig, "adam": AdamConfig, "adamw": AdamWConfig, "muon": MuonConfig}


# -- model: cnnbench.models (one schema per registered builder) ---------------------------------------------------
_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list[int]": list[int], "list[float]": list[float],
          "dict": dict[str, Any]}


def _field_type(annotation: str) -> Any:
    """A builder's annotation (``int``, ``float | None``, ``list[int]``) as a type OmegaConf checks."""
    base, optional = annotation.removesuffix(" | None"), annotation.endswith(" | None")
    kind = _TYPES.get(base, Any)
    return Optional[kind] if optional and kind is not Any else kind  # noqa: UP045 (a type built at run time)


def model_schema(name: str, options: dict[str, tuple[str, Any]]) -> type:
    """A dataclass for ``model=<name>``: ``name`` plus each builder option with its type and default."""
    fields = [("name", str, field(default=name))]
    for key, (annotation, default) in options.items():
        value = field(default_factory=lambda d=default: list(d)) if isinstance(default, list) else field(
            default=default)
        fields.append((key, _field_type(annotation), value))
    if "weights" not in options:  # every model can start from a weights file (cnnbench.transfer.weights_file)
        fields.append(("weights", Optional[str], field(default=None)))  # noqa: UP045
    return make_dataclass(f"{name}_config", fields)


def register_configs() -> None:
    """Register the root schema (``conf/config.yaml`` lists it first) and one schema per option of the open
    groups, named ``<group>_<option>`` (e.g. ``scheduler_cosine``), which the option's YAML file starts from.
    They are not config groups, so ``--help`` lists only the options themselves."""
    from cnnbench.config.model_options import MODEL_OPTIONS

    store = ConfigStore.instance()
    store.store(name="cnnbench_schema", node=Config)
    for group, options in (("scheduler", SCHEDULERS), ("transfer", TRANSFERS), ("optimizer", OPTIMIZERS)):
        for option, schema in options.items():
            store.store(name=f"{group}_{option}", node=schema)
    for name, options in MODEL_OPTIONS.items():
        store.store(name=f"model_{name}", node=model_schema(name, options))


