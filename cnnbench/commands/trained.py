"""A trained run as the commands after training see it: its checkpoint, config, input description and model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.runtime import Precision, resolve_precision
from cnnbench.errors import CnnbenchError


@dataclass
class Trained:
    checkpoint: Path
    run_dir: Path
    cfg: DictConfig  # the run's composed config, as recorded in its checkpoint
    meta: dict  # class_names, channels, image_size
    model: nn.Module  # in eval mode, on the CPU, with the checkpoint's weights
    step: int | None

    @property
    def class_names(self) -> list[str]:
        return self.meta["class_names"]

    def precision(self, device: torch.device) -> Precision:
        """The run's precision on ``device`` (fp16, a GPU format, becomes auto elsewhere)."""
        name = self.cfg.trainer.precision
        return resolve_precision("auto" if name == "fp16" and device.type != "cuda" else name, device)


def load_trained(run: Path) -> Trained:
    """The best checkpoint of a run directory (or the given ``.pt``) with its model rebuilt. A missing path, a
    run that failed or never saved a checkpoint, or a file cnnbench did not write is a one-line error."""
    from cnnbench.models import build_from_config

    run = Path(run).expanduser()
    if not run.exists():
        raise CnnbenchError(f"run={run}: no such run directory or checkpoint")
    ckpt_path = run if run.is_file() else run / "checkpoints" / "best.pt"
    run_dir = ckpt_path.parent.parent if run.is_file() else run
    if not ckpt_path.is_file():
        status = _status(run_dir)
        said = f" (its results.json says {status})" if status else ""
        raise CnnbenchError(f"{run_dir} has no checkpoints/best.pt{said}; give a run directory that cnnbench "
                            "trained, or a checkpoint file")
    ckpt = load_checkpoint(ckpt_path)
    if not ckpt.get("config") or not ckpt.get("meta") or "model" not in ckpt:
        raise CnnbenchError(f"{ckpt_path} has no config or input description (not written by this cnnbench); "
                            f"give a run directory or a checkpoint that cnnbench wrote")
    cfg, meta = OmegaConf.create(ckpt["config"]), ckpt["meta"]
    model = build_from_config(cfg.model, len(meta["class_names"]), meta["channels"], meta["image_size"])
    model.load_state_dict(ckpt["model"])
    return Trained(ckpt_path, run_dir, cfg, meta, model.eval(), ckpt.get("step"))


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "results.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
