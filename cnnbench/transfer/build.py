"""The model a run starts from: random weights (``transfer=scratch``), a weights file (``model.weights=<path>``),
torchvision's pretrained weights (``model.weights=<name>``) or the best checkpoint of an earlier cnnbench run
(``transfer.checkpoint=...``)."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench.config.artefact import recorded_config
from cnnbench.config.schema import FROM_SCRATCH, PHOTO_SETS
from cnnbench.data.spec import InputSpec
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.errors import CnnbenchError
from cnnbench.models import build_from_config
from cnnbench.models.registry import is_weights_file
from cnnbench.models.surgery import replace_heads, set_input_channels
from cnnbench.models.torchvision_zoo import resolve_weights
from cnnbench.rundir import locate_checkpoint
from cnnbench.transfer.pretrained import load_weights, torchvision_state_dict
from cnnbench.transfer.weights_file import read_state_dict, source_shape


def weights_preprocessing(cfg: DictConfig) -> tuple[str, dict, str] | None:
    """What the chosen pretrained weights want of the data (image_size, resize_size, interpolation, mean, std),
    whose weights they are, and how they resize; None without such weights (a weights file has no say)."""
    m = cfg.model
    if cfg.transfer.get("checkpoint"):
        return None
    if m.get("name") == "timm" and m.get("pretrained"):
        from cnnbench.models.timm_zoo import check_arch, pretrained_preprocessing

        wanted = pretrained_preprocessing(check_arch(m.arch))
        return f"timm's {m.arch}", wanted, (f"timm resizes to {wanted['resize_size']} then crops "
                                            f"{wanted['image_size']}")
    if m.get("name") != "tv_model" or not m.get("weights") or is_weights_file(m.weights):
        return None
    t = resolve_weights(m.arch, m.weights).transforms()
    wanted = {"image_size": t.crop_size[0], "mean": list(t.mean), "std": list(t.std),
              "resize_size": t.resize_size[0], "interpolation": t.interpolation.value}
    return f"{m.arch} {m.weights}", wanted, f"torchvision resizes to {t.resize_size[0]} then crops {t.crop_size[0]}"


def apply_weights_preprocessing(cfg: DictConfig, explicit: set[str]) -> str | None:
    """Set data.image_size/resize_size/interpolation/mean/std to those of the chosen pretrained weights
    (torchvision's or timm's) unless given on the command line (``explicit``, which wins and is said); return
    what was set, for the console."""
    found = weights_preprocessing(cfg)
    if found is None:
        return None
    whose, wanted, how = found
    if cfg.data.channels == 1:  # gray input feeds all three pretrained colour channels (see adapt_input_conv)
        wanted = {**wanted, "mean": [sum(wanted["mean"]) / 3], "std": [sum(wanted["std"]) / 3]}
    applied = {k: v for k, v in wanted.items() if f"data.{k}" not in explicit}
    kept = sorted(k for k in wanted if f"data.{k}" in explicit)
    for key, value in applied.items():
        cfg.data[key] = value
    if not applied:
        return None
    return (f"preprocessing of {whose}: "
            + ", ".join(f"{k}={[round(x, 3) for x in v] if isinstance(v, list) else v}" for k, v in applied.items())
            + f" ({how}: so does data.pipeline=crop, for photos; data.pipeline=pad squashes to "
              f"{wanted['image_size']})" + (f"; yours kept: data.{', data.'.join(kept)}" if kept else ""))


def apply_source_spec(cfg: DictConfig, source: dict, explicit: set[str]) -> tuple[dict, str | None]:
    """Make the input that the source run (``transfer.checkpoint``, or the checkpoint ``trainer.resume``
    continues: ``source`` holds its ``spec`` and ``path``) trained on this run's default: its channels, image size,
    pipeline (with its sizes and interpolation, where this data takes it) and normalisation, each unless the
    command sets ``data.<key>`` (``explicit``). Returns what was set and the console's line."""
    spec = source["spec"]
    p = spec.pipeline
    wanted = {"channels": spec.channels, "image_size": p.image_size, "mean": list(spec.mean), "std": list(spec.std)}
    if p.name == "crop" and cfg.data.name in PHOTO_SETS:  # (a library set of small squares takes pad only)
        wanted.update(pipeline="crop", store_size=p.store_size, resize_size=p.resize_size,
                      interpolation=p.interpolation)
    elif p.name == "pad":
        wanted["pipeline"] = "pad"
    if "data.channels" in explicit and cfg.data.channels != spec.channels:  # (one value serves every channel)
        wanted.update(mean=[sum(spec.mean) / len(spec.mean)], std=[sum(spec.std) / len(spec.std)])
    same = _per_channel(cfg.data.mean, spec.channels) == wanted["mean"] and \
        _per_channel(cfg.data.std, spec.channels) == wanted["std"]  # (one value for three: the same normalisation)
    applied = {k: v for k, v in wanted.items() if f"data.{k}" not in explicit and cfg.data[k] != v
               and not (same and k in ("mean", "std"))}
    for key, value in applied.items():
        cfg.data[key] = value
    kept = sorted(k for k in wanted if f"data.{k}" in explicit)
    if not applied:
        return {}, None
    shown = ", ".join(f"{k}={[round(x, 3) for x in v] if isinstance(v, list) else v}" for k, v in applied.items())
    return applied, (f"input as {source['path']} trained: data.{shown.replace(', ', ', data.')}"
                     + (f"; yours kept: data.{', data.'.join(kept)}" if kept else "")
                     + " (data.<key>=... chooses another)")


def check_sources(cfg: DictConfig) -> None:
    """Before any data is read: the pretrained weights the run starts from are at hand, a weights file there
    (a regular file), torchvision's in its cache (downloaded now when online), timm's in the Hugging Face cache.
    A missing one is one line now, not after minutes of decoding."""
    m = cfg.model
    if cfg.transfer.strategy == "distill":  # (the teacher: a finished run, there)
        locate_checkpoint(Path(cfg.transfer.teacher), "transfer.teacher", "best.pt", cfg.transfer.allow_unfinished)
    if cfg.transfer.strategy in FROM_SCRATCH or cfg.transfer.get("checkpoint"):
        return
    if is_weights_file(m.get("weights")):
        path = Path(m.weights)
        if not path.is_file():
            what = "not a regular file" if path.exists() else "no such file"
            raise CnnbenchError(f"model.weights={m.weights}: {what}; give a .safetensors, .pth, .pt, .bin or .ckpt "
                                f"file")
    elif m.get("name") == "tv_model" and m.get("weights"):
        torchvision_state_dict(resolve_weights(m.arch, m.weights), load=False)
    elif m.get("name") == "timm" and m.get("pretrained"):
        from cnnbench.models.timm_zoo import check_cached

        check_cached(m.arch)


def _per_channel(values: list[float], channels: int) -> list[float]:
    return list(values) * channels if len(values) == 1 else list(values)


def load_source_checkpoint(cfg: DictConfig) -> dict | None:
    """With ``transfer.checkpoint``: that checkpoint (a run directory's best.pt; a finished run's unless
    ``transfer.allow_unfinished``), with its ``path``, ``step`` and its recorded config read as data and checked
    (``recorded_config``); its model config becomes the run's (``cnnbench.resolve``). None otherwise."""
    given = cfg.transfer.get("checkpoint")
    if not given:
        return None
    path, _ = locate_checkpoint(Path(given), "transfer.checkpoint", "best.pt", cfg.transfer.allow_unfinished)
    ckpt = load_checkpoint(path)
    try:
        spec = InputSpec.from_dict(ckpt["meta"])
    except (KeyError, TypeError, ValueError):
        raise CnnbenchError(f"transfer.checkpoint={given}: {path} has no valid input spec; give a checkpoint "
                            f"written by cnnbench") from None
    recorded = recorded_config(ckpt.get("config"), str(path))
    return {**ckpt, "config": OmegaConf.to_container(recorded), "path": str(path), "spec": spec}


def build_start_model(cfg: DictConfig, num_classes: int, channels: int, image_size: int,
                      source: dict | None = None, class_names: list[str] | None = None) -> tuple[nn.Module, list[str]]:
    """The model to train and console notes: from scratch, from torchvision's weights (``model.weights``) or
    from ``source``, the checkpoint ``load_source_checkpoint`` read. A source trained on the same classes
    (``class_names``, in the same order) keeps its trained classifier head."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if cfg.transfer.strategy in FROM_SCRATCH:  # (validate() made sure no pretrained weights were asked for)
        return build_from_config(model_cfg, num_classes, channels, image_size), []
    if source is not None:
        state, description = source["model"], source["path"]
        source_classes, source_channels = len(source["spec"].class_names), source["spec"].channels
    elif is_weights_file(cfg.model.get("weights")):
        state, description = read_state_dict(cfg.model.weights), cfg.model.weights
        with torch.device("meta"):  # (names and shapes only: where the head and the first conv are)
            probe = build_from_config(model_cfg, num_classes, channels, image_size)
        source_classes, source_channels = source_shape(probe, state, num_classes, channels)
    else:
        w = resolve_weights(cfg.model.arch, cfg.model.weights)
        state, description = torchvision_state_dict(w), f"{cfg.model.arch} {w}"
        source_classes, source_channels = len(w.meta["categories"]), 3
    model = build_from_config(model_cfg, source_classes, source_channels, image_size)
    load_weights(model, state, description)
    notes = [f"pretrained weights: {description} ({model_cfg['name']})"]
    notes += set_input_channels(model, channels)
    if source is not None and class_names is not None and list(source["spec"].class_names) == list(class_names):
        notes.append(f"classifier head kept: {description} was trained on the same {num_classes} classes")
    elif source is None and is_weights_file(cfg.model.get("weights")) and source_classes == num_classes:
        notes.append(f"classifier head kept: {description} has {num_classes} outputs, as many as the data's "
                     "classes")
    else:
        notes += replace_heads(model, num_classes)
    return model, notes
