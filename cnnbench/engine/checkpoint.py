"""Checkpoints: plain dicts of tensors and containers, written atomically, read with weights_only=True."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from cnnbench.errors import CnnbenchError, first_line
from cnnbench.fileio import atomic_save
from cnnbench.manifest import own


def load_checkpoint(path: Path | str) -> dict:
    """Load a cnnbench checkpoint safely (no code runs on load) or fail with one line."""
    path = Path(path)
    if not path.is_file():
        raise CnnbenchError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CnnbenchError(f"refusing to load {path}: it holds objects other than tensors and plain "
                            f"containers ({first_line(e, 120)})") from None
    except Exception as e:
        raise CnnbenchError(f"{path} is not a readable checkpoint (truncated or another format): "
                            f"{type(e).__name__}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CnnbenchError(f"{path} is not a cnnbench checkpoint (no 'model' state dict)")
    bad = first_nonfinite(ckpt["model"])
    if bad is not None:  # (cnnbench never writes such weights: the file was edited or damaged)
        raise CnnbenchError(f"{path}: its weights are not all finite ({bad} holds NaN or inf); give a checkpoint "
                            f"that cnnbench wrote, unchanged")
    return ckpt


def first_nonfinite(state: dict) -> str | None:
    """The name of the first floating-point tensor of ``state`` holding NaN or inf, or None."""
    return next((k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                 and not torch.isfinite(v).all()), None)


class Checkpointer:
    """Writes a run's checkpoints (``<run dir>/checkpoints/<name>``) atomically, each with the ``payload`` that
    rebuilding the model needs without the run's config files (the config, class names, input shape).
    Only the main process writes: under data parallelism every process holds the same weights."""

    def __init__(self, run_dir: Path, payload: dict, enabled: bool = True) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.payload = payload
        self.enabled = enabled

    def save(self, name: str, state: dict) -> None:
        """Write ``state`` (with the payload) as ``name``; weights that are not all finite are never written, so
        the last good checkpoint stays."""
        if not self.enabled:
            return
        bad = first_nonfinite(state["model"])
        if bad is not None:
            raise CnnbenchError(f"the weights became non-finite by step {state.get('step')} ({bad}); not saved, the "
                                f"last good checkpoint stays; lower optimizer.lr, set trainer.grad_clip, or use "
                                f"trainer.precision=fp32")
        own(self.dir.parent, f"checkpoints/{name}")
        atomic_save({**state, **self.payload}, self.dir / name)
