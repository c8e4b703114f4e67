"""Inference latency and throughput, measured: what a model costs where it is served.

Latency is the time of one call at batch 1, timed ``calls`` times after ``warmup`` untimed ones (first calls pay
for allocation, kernel selection and, compiled, the compilation); the median and the 95th percentile are kept,
with the noise stated as the spread between the 25th and 75th percentiles relative to the median. Throughput is
images per second at a larger batch over whole calls. On a GPU every call is synchronised before its clock stops.
The same helper times PyTorch eager, ``torch.compile``d and an exported ONNX file under ONNX Runtime, each with
this process's threads (stated).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from cnnbench.precision import Precision


@dataclass
class Timing:
    """One runtime's figures: batch-1 latency (median, p95, the interquartile noise) and throughput."""

    runtime: str  # eager | compiled | onnxruntime | onnxruntime-int8
    p50_ms: float
    p95_ms: float
    noise: float  # (p75 - p25) / p50 at batch 1: differences below it are not differences
    calls: int
    throughput_batch: int
    images_per_s: float
    threads: int

    def to_dict(self) -> dict:
        return asdict(self)


def time_calls(call: Callable[[], object], calls: int, warmup: int, sync: Callable[[], None]) -> list[float]:
    """Seconds of each of ``calls`` timed calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    sync()
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def summarise(runtime: str, single: list[float], batch: int, batched: list[float], threads: int) -> Timing:
    """A Timing from the batch-1 call times and the batched ones."""
    quartiles = statistics.quantiles(single, n=100, method="inclusive")
    p50 = statistics.median(single)
    return Timing(runtime, 1000 * p50, 1000 * quartiles[94], (quartiles[74] - quartiles[24]) / p50, len(single),
                  batch, batch / statistics.median(batched), torch.get_num_threads())


def time_torch(model: nn.Module, shape: tuple[int, int, int], device: torch.device, precision: Precision,
               batch: int = 64, calls: int = 50, warmup: int = 10, compiled: bool = False,
               channels_last: bool = False) -> Timing:
    """``model`` (eval mode, no gradients) on random inputs of ``shape`` at batch 1 and ``batch``, in the run's
    precision; ``compiled``: through ``torch.compile`` (its compilation falls in the warm-up)."""
    model = model.eval().to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    net = torch.compile(model) if compiled else model
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    one = torch.randn(1, *shape, device=device).contiguous(memory_format=fmt)
    many = torch.randn(batch, *shape, device=device).contiguous(memory_format=fmt)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(x: torch.Tensor) -> Callable[[], object]:
        def call() -> object:
            with torch.no_grad(), precision.autocast():
                return net(x)
        return call

    single = time_calls(run(one), calls, warmup, sync)
    batched = time_calls(run(many), max(5, calls // 10), max(2, warmup // 5), sync)
    return summarise("compiled" if compiled else "eager", single, batch, batched, torch.get_num_threads())


def time_onnx(path: str, shape: tuple[int, int, int], batch: int = 64, calls: int = 50, warmup: int = 10,
              runtime: str = "onnxruntime") -> Timing:
    """An ONNX file under ONNX Runtime's CPU provider with this process's threads, on random inputs (fp32)."""
    import numpy as np
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(0)
    one = rng.standard_normal((1, *shape), dtype=np.float32)
    many = rng.standard_normal((batch, *shape), dtype=np.float32)
    single = time_calls(lambda: session.run(None, {name: one}), calls, warmup, lambda: None)
    batched = time_calls(lambda: session.run(None, {name: many}), max(5, calls // 10), max(2, warmup // 5),
                         lambda: None)
    return summarise(runtime, single, batch, batched, torch.get_num_threads())
