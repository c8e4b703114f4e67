"""``cnnbench-eval run=<run dir> speed=true [speed_batch=64] [speed_calls=50] [speed_compile=true|false]
[device=auto]``: what a trained model costs to serve, measured where this command runs.

Batch-1 latency (median and 95th percentile over ``speed_calls`` timed calls after a warm-up, with the noise:
the interquartile spread over the median) and throughput at ``speed_batch``, in the run's precision, for PyTorch
eager, ``torch.compile``d (``speed_compile``) and the run's exported ONNX files under ONNX Runtime (fp32, and int8
when ``cnnbench-export ... int8=true`` wrote one). Written to ``latency_<device>.json`` in the run directory (or
``out=``); the leaderboard reads it (latency columns, accuracy against latency with the Pareto front).
"""

from __future__ import annotations

import torch

from cnnbench.engine.hardware import machine_name
from cnnbench.evaluation.latency import Timing, time_onnx, time_torch
from cnnbench.finished_run import FinishedRun

ONNX_FILES = {"onnxruntime": "export/model.onnx", "onnxruntime-int8": "export/model.int8.onnx"}


def measure(trained: FinishedRun, device: str = "auto", batch: int = 64, calls: int = 50,
            compiled: bool = True) -> dict:
    """The run's model timed on ``device``: eager, compiled, and its ONNX exports (on the CPU)."""
    where, precision = trained.settle(device)
    spec = trained.spec
    shape = (spec.channels, spec.image_size, spec.image_size)
    channels_last = where.type in ("cpu", "cuda") and any(isinstance(m, torch.nn.Conv2d)
                                                          for m in trained.model.modules())
    timings: list[Timing] = [time_torch(trained.model, shape, where, precision, batch, calls,
                                        channels_last=channels_last)]
    if compiled:
        torch.compiler.reset()
        timings.append(time_torch(trained.model, shape, where, precision, batch, calls, compiled=True,
                                  channels_last=channels_last))
    if trained.run_dir is not None and where.type == "cpu":
        for runtime, rel in ONNX_FILES.items():
            path = trained.run_dir / rel
            if path.is_file():
                timings.append(time_onnx(str(path), shape, batch, calls, runtime=runtime))
    return {"run": str(trained.run_dir), "checkpoint": str(trained.checkpoint), "step": trained.step,
            "model": trained.cfg.model.name, "device": str(where), "precision": precision.name,
            "machine": machine_name(where), "input": list(shape), "timings": [t.to_dict() for t in timings]}


def print_speed(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cnnbench-eval speed=true: {result['model']} at {'x'.join(map(str, result['input']))} on "
                        f"{result['device']} ({result['precision']}), {result['machine']}")
    for column in ("runtime", "batch-1 p50 ms", "p95 ms", "noise", "throughput", "threads"):
        table.add_column(column, justify="left" if column == "runtime" else "right")
    for t in result["timings"]:
        table.add_row(t["runtime"], f"{t['p50_ms']:.3f}", f"{t['p95_ms']:.3f}", f"±{100 * t['noise']:.0f}%",
                      f"{t['images_per_s']:,.0f} img/s at {t['throughput_batch']}", str(t["threads"]))
    Console(highlight=False).print(table)
