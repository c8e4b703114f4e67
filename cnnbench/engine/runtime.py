"""Where and how a run computes: device, processes, threads, host memory, precision (autocast), memory format and
seeds."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from cnnbench.engine import distributed, host_memory, placement
from cnnbench.engine.distributed import DistInfo
from cnnbench.errors import CnnbenchError
from cnnbench.precision import Precision


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; a device this machine does not have is a one-line error."""
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError:
            raise CnnbenchError(f"device={name} is not a device name; choose auto, cpu, cuda, cuda:<n> or mps"
                                ) from None
        available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
        if not available.get(device.type, True) or (
                device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count()):
            raise CnnbenchError(f"device={name}: this machine has no such device (found: "
                                f"{', '.join(k for k, v in available.items() if v)}); choose auto or cpu")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_supports_bf16() -> bool:
    """True where oneDNN has native bf16 kernels (AVX-512 bf16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``auto``: bf16 on GPUs and CPUs with native bf16, fp16 on older CUDA GPUs, fp32 elsewhere."""
    name = getattr(name, "value", name)  # the config's PrecisionChoice formats as "PrecisionChoice.fp32" in keys
    if name == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu":
            name = "bf16" if cpu_supports_bf16() else "fp32"
        else:
            name = "fp32"
    if name == "fp16" and device.type == "cpu":
        raise CnnbenchError("trainer.precision=fp16 is for GPUs; on the CPU use bf16 or fp32")
    return Precision(name, device.type)


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def host_rng_state() -> dict:
    """Python's and NumPy's random states as tensors and plain lists (loadable with weights_only=True)."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(state), gauss],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached]}


def set_host_rng_state(rng: dict) -> None:
    """Restore what ``host_rng_state`` saved (checkpoints without it leave the generators alone)."""
    if "python" in rng:
        version, state, gauss = rng["python"]
        random.setstate((version, tuple(state), gauss))
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


@dataclass(frozen=True)
class Runtime:
    """What a run computes on, settled before anything is built."""

    run_dir: Path  # rank 0's directory, on every process
    device: torch.device
    dist: DistInfo
    threads: tuple[int, str]  # the count and where it came from
    load: placement.LoadProbe | None  # other work on this machine's cores (one CPU process only)
    precision: Precision

    def describe(self) -> str:
        return placement.describe(self.threads, self.load)


def settle(t: DictConfig, run_dir: Path) -> Runtime:
    """Device, process group, threads, precision and seeds from the ``trainer`` config. With
    ``trainer.strategy=ddp`` this joins the process group: ``distributed.shutdown()`` leaves it."""
    device = resolve_device(t.device)
    dist = distributed.init(t.strategy, device)
    run_dir = distributed.shared_run_dir(run_dir)
    device = distributed.device_for(dist, device) if t.strategy == "ddp" else placement.sweep_device(device)
    threads = placement.settle(device, t.threads)
    if t.keep_host_memory:
        host_memory.keep_freed_memory()
    load = placement.LoadProbe() if device.type == "cpu" and dist.world_size == 1 else None
    precision = resolve_precision(t.precision, device)
    seed_everything(t.seed, t.deterministic)
    return Runtime(run_dir, device, dist, threads, load, precision)
