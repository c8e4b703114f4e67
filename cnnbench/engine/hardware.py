"""What the hardware can do and how much of it a run used: the machine's name, a dense-GEMM peak, MFU.

Model FLOPs utilisation (MFU) = achieved training FLOP/s / peak FLOP/s. Training costs 3 x 2 x forward MACs per
image (a forward and a backward of twice its cost; a multiply-add is 2 FLOPs). The peak is *measured*: square
matrix multiplies of growing sizes on the run's device, in its precision and with its thread count, the best
rate of the sweep (a size too small leaves cores or tensor units idle: on 2 CPU cores 1024 reaches about half of
2048), not a datasheet figure, which no 2-core CPU slice reaches. It is measured once per machine, torch
version, precision and thread count, in a few seconds, and cached in ``~/.cache/cnnbench/``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

from cnnbench.fileio import atomic_write_json

CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # what decides CPU training speed (fp32, bf16)
PROBE_SECONDS = 0.5  # per size
SIZES = {"cpu": (1024, 2048, 4096), "cuda": (4096, 8192, 16384)}  # tried in order while the rate still grows
GAIN = 1.02  # a larger size must beat the best so far by 2% for the sweep to go on
PROBE_VERSION = "gemm sweep 1"  # in the cache key: peaks of another probe are measured again
# A run above this share of the cached peak measures it again and the cache keeps the larger: a peak probed while
# other work shared the cores (a 2-core slice of a busy host) is too low and would inflate every MFU after it.
RECHECK_SHARE = 0.85


@cache
def cpu_info() -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and which of ``CPU_FLAGS`` it has (from /proc/cpuinfo; elsewhere the platform's
    processor name and no flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), ()
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.machine()), tuple(f for f in CPU_FLAGS if f in flags)


def machine_name(device: torch.device) -> str:
    """``Intel(R) Xeon(R) Processor (avx2 avx512f avx512_bf16 amx_bf16), 2 threads`` or the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type != "cpu":
        return device.type
    model, flags = cpu_info()
    threads = torch.get_num_threads()
    return f"{model} ({' '.join(flags) or 'no avx2'}), {threads} thread{'s' if threads > 1 else ''}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def probe_peak_tflops(device: torch.device, dtype: torch.dtype, seconds: float = PROBE_SECONDS,
                      rate: Callable[[int], float] | None = None) -> float:
    """The best dense matrix-multiply TFLOP/s on ``device`` in ``dtype`` over growing square sizes: the sweep
    goes on while a size beats the best so far by ``GAIN`` (``rate(n)``: one size's TFLOP/s, measured by
    default)."""
    rate = rate or (lambda n: gemm_tflops(device, dtype, n, seconds))
    best = 0.0
    for n in SIZES.get(device.type, SIZES["cuda"]):
        found = rate(n)
        grew = found >= best * GAIN
        best = max(best, found)
        if not grew:
            break
    return best


def gemm_tflops(device: torch.device, dtype: torch.dtype, n: int, seconds: float = PROBE_SECONDS) -> float:
    """Matrix-multiply TFLOP/s of one square size ``n``: the best of a few timed rounds."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b  # warm-up: kernels chosen, caches filled
    _sync(device)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start, reps = time.perf_counter(), 0
        while reps < 2 or time.perf_counter() - start < seconds / 10:
            a @ b
            reps += 1
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e12)
    return best


def cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "cnnbench" / "peak_tflops.json"


def _tensor_float32(device: torch.device, precision: str) -> bool:
    """Whether fp32 convolutions run on TF32 tensor cores here: cuDNN's default on NVIDIA GPUs (a matmul's is
    not). Then the fp32 peak is the TF32 one, or a CNN's MFU would exceed 1 against a plain fp32 matmul."""
    return device.type == "cuda" and precision == "fp32" and torch.backends.cudnn.allow_tf32


def peak_tflops(device: torch.device, precision: str, achieved: float = 0.0) -> float:
    """The cached dense-GEMM peak of this machine for ``precision`` (fp32, bf16, fp16), measured when missing or
    when a run's ``achieved`` TFLOP/s (one process's) exceeds ``RECHECK_SHARE`` of it; the larger one is kept."""
    tf32 = _tensor_float32(device, precision)
    key = (f"{machine_name(device)} | torch {torch.__version__} | {precision}{' (tf32)' if tf32 else ''} | "
           f"{PROBE_VERSION}")
    path = cache_file()
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    cached = known.get(key) if isinstance(known.get(key), (int, float)) else 0.0
    if not cached or achieved > RECHECK_SHARE * cached:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32 or matmul_tf32
        try:
            peak = probe_peak_tflops(device, dtype)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
        known = {**known, key: max(peak, cached)}
        try:
            atomic_write_json(known, path)
        except OSError:  # a read-only home: measured again next time, no harm done
            pass
    return float(known[key])


def training_tflops(macs: int, images_per_s: float) -> float:
    """Training FLOP/s (in TFLOP/s) at ``images_per_s``: 3 x 2 x the forward multiply-adds per image."""
    return 6.0 * macs * images_per_s / 1e12


def efficiency(macs: int, images_per_s: float, peak: float, processes: int = 1) -> dict[str, float]:
    """``train_tflops`` (achieved, all processes), ``peak_tflops`` (one process's peak x processes) and
    ``mfu`` (their ratio, 0-1)."""
    achieved = training_tflops(macs, images_per_s)
    total_peak = peak * processes
    return {"train_tflops": achieved, "peak_tflops": total_peak, "mfu": achieved / total_peak if total_peak else 0.0}
