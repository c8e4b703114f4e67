"""Checkpoints: plain dicts of tensors and containers, written atomically, read with weights_only=True."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from cnnbench.errors import CnnbenchError


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save ``obj`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy a file atomically (the destination is either absent or complete)."""
    _atomic_write(dst, lambda f: f.write(Path(src).read_bytes()))


def atomic_write_json(obj: Any, path: Path) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def checkpoint_in(path: Path | str, name: str) -> Path:
    """A run directory's ``checkpoints/<name>``, or ``path`` itself when it is not a directory."""
    path = Path(path).expanduser()
    return path / "checkpoints" / name if path.is_dir() else path


def load_checkpoint(path: Path | str) -> dict:
    """Load a cnnbench checkpoint safely (no code runs on load) or fail with one line."""
    path = Path(path)
    if not path.is_file():
        raise CnnbenchError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CnnbenchError(f"refusing to load {path}: it holds objects other than tensors and plain "
                            f"containers ({str(e).splitlines()[0][:120]})") from None
    except Exception as e:
        raise CnnbenchError(f"{path} is not a readable checkpoint (truncated or another format): "
                            f"{type(e).__name__}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CnnbenchError(f"{path} is not a cnnbench checkpoint (no 'model' state dict)")
    return ckpt
