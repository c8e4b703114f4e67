"""``trainer.profile=true``: where the time of a training step goes, from ``torch.profiler``.

A few steps are skipped (kernels chosen, caches filled), a few warm the profiler up, then ``active`` steps are
recorded. Written to ``<run dir>/profile/``: ``ops.txt``, the operators ranked by their own time, and
``trace.json``, a Chrome trace (open it in chrome://tracing or https://ui.perfetto.dev).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from cnnbench.engine.callbacks import Callback
from cnnbench.fileio import atomic_write
from cnnbench.manifest import own
from cnnbench.tracking import Reporter

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer

WAIT = 3
WARMUP = 2
ACTIVE = 6
ROWS = 25


class Profile(Callback):
    """Profiles steps WAIT + WARMUP + 1 .. WAIT + WARMUP + ACTIVE of the run (or of the resumed part)."""

    def __init__(self, out_dir: Path, reporter: Reporter, device: torch.device) -> None:
        self.out_dir, self.reporter = out_dir, reporter
        self.activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        self.profiler: profile | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # (the profiler backend's start/stop chatter, off)
        self.profiler = profile(activities=self.activities, schedule=schedule(wait=WAIT, warmup=WARMUP,
                                                                              active=ACTIVE, repeat=1),
                                on_trace_ready=self._write)
        self.profiler.start()

    def on_step_end(self, trainer: Trainer, step: int) -> None:
        if self.profiler is not None:
            self.profiler.step()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.profiler is not None:
            profiler, self.profiler = self.profiler, None
            profiler.stop()  # (writes now if the run ended inside the active steps)

    def _write(self, prof: profile) -> None:
        own(self.out_dir.parent, f"{self.out_dir.name}/")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(self.out_dir / "trace.json"))
        table = prof.key_averages().table(sort_by=self.sort_by, row_limit=ROWS)
        text = f"{ACTIVE} training steps after {WAIT + WARMUP} unrecorded ones\n{table}\n"
        atomic_write(self.out_dir / "ops.txt", lambda f: f.write(text.encode()))
        self.reporter.info(f"profile of {ACTIVE} steps: {self.out_dir / 'ops.txt'} (top operators), "
                           f"{self.out_dir / 'trace.json'} (Chrome trace)")
