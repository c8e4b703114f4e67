"""Pretrained weights from a file the user brings: ``model.weights=<path>`` for every model source (the zoo's,
torchvision's, timm's).

Accepted: ``.safetensors``, or a PyTorch file (``.pth``, ``.pt``, ``.bin``, ``.ckpt``) holding a state dict,
or a checkpoint holding one under a common key (``model``, ``state_dict``, ...; cnnbench's own checkpoints
included). PyTorch files are read with ``weights_only=True``: a pickle that would run code is refused. The
prefixes DDP and ``torch.compile`` add (``module.``, ``_orig_mod.``) are taken off.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from cnnbench.engine.checkpoint import first_nonfinite
from cnnbench.errors import CnnbenchError, first_line
from cnnbench.models.registry import WEIGHTS_SUFFIXES as SUFFIXES
from cnnbench.models.surgery import find_heads

STATE_KEYS = ("model", "state_dict", "model_state_dict", "module", "net", "params")  # where checkpoints keep them
PREFIXES = ("module.", "_orig_mod.")  # DDP's and torch.compile's


def _load(path: Path) -> object:
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise CnnbenchError(f"model.weights={path}: not a readable safetensors file ({e})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # a reference to a class or function: torch refused to call it
            raise CnnbenchError(f"model.weights={path}: refused: the file holds Python objects beyond tensors and "
                                "plain containers, and unpickling them could run code; save model.state_dict() "
                                "or a .safetensors file") from None
        raise CnnbenchError(f"model.weights={path}: not a PyTorch or safetensors weights file") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CnnbenchError(f"model.weights={path}: not a PyTorch or safetensors weights file "
                            f"({type(e).__name__}: {first_line(e, 120)})") from None


def read_state_dict(value: str) -> dict[str, torch.Tensor]:
    """The state dict a weights file holds, unwrapped from a checkpoint and without DDP/compile prefixes."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise CnnbenchError(f"model.weights={value}: {'not a file' if path.exists() else 'no such file'}; give a "
                            f"{', '.join(SUFFIXES)} file")
    state = _load(path)
    while isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        key = next((k for k in STATE_KEYS if isinstance(state.get(k), dict)), None)
        if key is None:
            break
        state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnbenchError(f"model.weights={value}: holds no state dict (a mapping of names to tensors, at the "
                            f"top or under one of {', '.join(STATE_KEYS)})")
    bad = first_nonfinite(state)
    if bad is not None:
        raise CnnbenchError(f"model.weights={value}: {bad} holds NaN or inf; training would start from broken "
                            f"weights: give a file of finite weights")
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def source_shape(model: nn.Module, state: dict[str, torch.Tensor], classes: int, channels: int) -> tuple[int, int]:
    """(classes, input channels) the weights were trained for, read off the classifier's and the first
    convolution's tensors (``classes`` and ``channels`` when the file has no such tensor)."""
    head = find_heads(model)[0]
    conv = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    head_weight = state.get(f"{head}.weight")
    conv_weight = state.get(f"{conv}.weight") if conv is not None else None
    return (head_weight.shape[0] if head_weight is not None else classes,
            conv_weight.shape[1] if conv_weight is not None and conv_weight.ndim == 4 else channels)
