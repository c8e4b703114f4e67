"""The model a run starts from: random weights (``transfer=scratch``), torchvision's pretrained weights
(``model.weights=...``) or the best checkpoint of an earlier cnnbench run (``transfer.checkpoint=...``)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.errors import CnnbenchError
from cnnbench.models import build_from_config
from cnnbench.models.surgery import replace_heads, set_input_channels
from cnnbench.models.torchvision_zoo import resolve_weights
from cnnbench.rundir import checkpoint_in
from cnnbench.transfer.pretrained import load_weights, torchvision_state_dict


def apply_weights_preprocessing(cfg: DictConfig, explicit: set[str]) -> str | None:
    """Set data.image_size/resize_size/interpolation/mean/std to those of the chosen torchvision weights (unless
    given on the command line, ``explicit``); return what was set, for the console."""
    m = cfg.model
    if m.get("name") != "tv_model" or not m.get("weights") or cfg.transfer.get("checkpoint"):
        return None
    t = resolve_weights(m.arch, m.weights).transforms()
    channels = cfg.data.channels
    mean, std = list(t.mean), list(t.std)
    if channels == 1:  # gray input feeds all three pretrained colour channels (see adapt_input_conv)
        mean, std = [sum(mean) / 3], [sum(std) / 3]
    wanted = {"image_size": t.crop_size[0], "mean": mean, "std": std, "resize_size": t.resize_size[0],
              "interpolation": t.interpolation.value}
    applied = {k: v for k, v in wanted.items() if f"data.{k}" not in explicit}
    for key, value in applied.items():
        cfg.data[key] = value
    if not applied:
        return None
    return (f"preprocessing of {m.arch} {m.weights}: "
            + ", ".join(f"{k}={[round(x, 3) for x in v] if isinstance(v, list) else v}" for k, v in applied.items())
            + f" (torchvision resizes to {t.resize_size[0]} then crops {t.crop_size[0]}: so does data.pipeline=crop, "
              f"for photos; data.pipeline=pad squashes to {t.crop_size[0]})")


def load_source_checkpoint(cfg: DictConfig) -> dict | None:
    """With ``transfer.checkpoint``: that checkpoint (a run directory's best.pt), whose model config then
    replaces ``cfg.model`` (so it is recorded and validated as this run's). None otherwise."""
    ckpt_path = cfg.transfer.get("checkpoint")
    if not ckpt_path:
        return None
    path = checkpoint_in(ckpt_path, "best.pt")  # a run directory gives its selected checkpoint
    ckpt = load_checkpoint(path)
    meta, model_cfg = ckpt.get("meta") or {}, (ckpt.get("config") or {}).get("model")
    if not model_cfg or "class_names" not in meta:
        raise CnnbenchError(f"transfer.checkpoint={ckpt_path}: {path} has no model config or class names; "
                            f"give a checkpoint written by cnnbench")
    cfg.model = model_cfg
    return {**ckpt, "path": str(path)}


def build_start_model(cfg: DictConfig, num_classes: int, channels: int, image_size: int,
                      source: dict | None = None, class_names: list[str] | None = None) -> tuple[nn.Module, list[str]]:
    """The model to train and console notes: from scratch, from torchvision's weights (``model.weights``) or
    from ``source``, the checkpoint ``load_source_checkpoint`` read. A source trained on the same classes
    (``class_names``, in the same order) keeps its trained classifier head."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if cfg.transfer.strategy == "scratch":  # (validate() made sure no pretrained weights were asked for)
        return build_from_config(model_cfg, num_classes, channels, image_size), []
    if source is not None:
        state, description = source["model"], source["path"]
        source_classes, source_channels = len(source["meta"]["class_names"]), source["meta"]["channels"]
    else:
        w = resolve_weights(cfg.model.arch, cfg.model.weights)
        state, description = torchvision_state_dict(w), f"{cfg.model.arch} {w}"
        source_classes, source_channels = len(w.meta["categories"]), 3
    model = build_from_config(model_cfg, source_classes, source_channels, image_size)
    load_weights(model, state, description)
    notes = [f"pretrained weights: {description} ({model_cfg['name']})"]
    notes += set_input_channels(model, channels)
    if source is not None and class_names is not None and list(source["meta"]["class_names"]) == list(class_names):
        notes.append(f"classifier head kept: {description} was trained on the same {num_classes} classes")
    else:
        notes += replace_heads(model, num_classes)
    return model, notes
