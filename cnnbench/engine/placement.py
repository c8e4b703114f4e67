"""Where one process computes: how many CPU threads it may use, which GPU it takes, and who else is busy.

Two PyTorch processes that each use every core of a 2-core machine slow each other far more than 2x (threads
preempt each other inside every kernel). So each process takes its share: all cores alone, cores / local
processes under torchrun (torchrun's own default is one thread per rank, which leaves cores idle when ranks are
fewer than cores), ``OMP_NUM_THREADS`` where a launcher set it (joblib's workers cap theirs that way), or
``trainer.threads``. In a sweep on a machine with several GPUs, job ``n`` takes GPU ``n mod count``.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cnnbench.engine.callbacks import Callback

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer
    from cnnbench.tracking import Reporter


def cores() -> int:
    """The cores this process may run on (its affinity mask: a container's or ``taskset``'s share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        return os.cpu_count() or 1


def thread_budget(configured: int | None, env: Mapping[str, str] = os.environ, available: int | None = None
                  ) -> tuple[int, str]:
    """The number of intra-op threads for this process and where it comes from."""
    available = available or cores()
    if configured:
        return configured, "trainer.threads"
    if "LOCAL_WORLD_SIZE" in env:  # torchrun: share the cores between the processes on this machine
        local = max(1, int(env["LOCAL_WORLD_SIZE"]))
        return max(1, available // local), f"{available} cores / {local} processes"
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    return available, f"{available} cores"


def sweep_job() -> int | None:
    """This job's number in a Hydra multirun, None outside one."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        config = HydraConfig.get()
        return int(config.job.num) if config.mode == RunMode.MULTIRUN else None
    except (ImportError, ValueError):
        return None


def job_device(device: torch.device, job: int | None) -> torch.device:
    """``cuda`` (no index) for sweep job ``job`` on a machine with several GPUs: ``cuda:<job mod count>``, so
    parallel jobs do not all land on ``cuda:0``."""
    if device.type != "cuda" or device.index is not None or job is None:
        return device
    count = torch.cuda.device_count()
    return torch.device("cuda", job % count) if count > 1 else device


def sweep_device(device: torch.device) -> torch.device:
    """``job_device`` for the running Hydra job."""
    return job_device(device, sweep_job())


def _busy_jiffies(cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies of the given CPUs since boot, from /proc/stat."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(v) for v in values[:8]]
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return busy, total


def settle(device: torch.device, configured_threads: int | None) -> tuple[int, str]:
    """Make ``device`` this process's current GPU (when it names one) and set its CPU thread budget; return the
    thread count and where it comes from."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    threads, why = thread_budget(configured_threads)
    torch.set_num_threads(threads)
    return threads, why


class LoadProbe:
    """How busy other processes keep this process's cores between its creation and ``competing()``: the two
    readings of /proc/stat bracket work this process does anyway (loading data, building the model), so the
    check costs no waiting."""

    def __init__(self) -> None:
        self.cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self.start = self._read()

    def _read(self) -> tuple[int, int, float, float] | None:
        try:
            busy, total = _busy_jiffies(self.cpus)
        except OSError:
            return None
        # this process and the children it waited for (decoding workers): its own work, not competition
        own = sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                            resource.RUSAGE_CHILDREN)))
        return busy, total, own, time.monotonic()

    def competing(self) -> float | None:
        """Cores kept busy by other processes since the probe started (None when unknown or too short)."""
        end = self._read()
        if self.start is None or end is None or end[3] - self.start[3] < 0.2 or end[1] <= self.start[1]:
            return None
        busy, total = end[0] - self.start[0], end[1] - self.start[1]
        own = (end[2] - self.start[2]) / (end[3] - self.start[3])
        return max(0.0, busy / total * len(self.cpus) - own)


class LoadWatch(Callback):
    """Watches the whole run, epoch by epoch (evaluation included), for other processes keeping this run's cores
    busy, and says so when such a load starts, changes by half a core or more, and ends (with the epochs it
    slowed): an epoch trained beside one has timings that do not compare. Not a line every epoch."""

    def __init__(self, reporter: Reporter, threshold: float = 0.5) -> None:
        self.reporter, self.threshold = reporter, threshold
        self.probe: LoadProbe | None = None
        self.level: float | None = None  # the competing load last said, while it lasts
        self.slowed: list[int] = []  # epochs trained beside it
        self.fastest: float | None = None  # images/s of the fastest epoch so far

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self.probe = LoadProbe()

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        other = self.probe.competing() if self.probe is not None else None
        if other is None:
            return
        cores = len(self.probe.cpus)
        speed = metrics.get("train/images_per_s")
        if other >= self.threshold:
            self.slowed.append(epoch)
            if self.level is None or abs(other - self.level) >= 0.5:
                was = f" (was {self.level:.1f})" if self.level is not None else ""
                slower = (f"; it trained at {speed:,.0f} images/s, {self.fastest / speed:.1f}x slower than the fastest "
                          f"epoch so far ({self.fastest:,.0f} images/s)" if speed and self.fastest and
                          speed < self.fastest else "")
                self.reporter.info(f"[yellow]warning: during epoch {epoch} other processes kept {other:.1f} of "
                                   f"{cores} cores busy{was}{slower}: the timings of epochs trained beside them do "
                                   f"not compare (said again when it changes or ends)[/yellow]")
                self.level = other
        elif self.level is not None:
            self.reporter.info(f"the competing load ended before epoch {epoch}; {self._said()}")
            self.level = None
        if speed:
            self.fastest = max(self.fastest or 0.0, speed)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.level is not None:
            self.reporter.info(f"[yellow]warning: other processes competed for the cores to the end; "
                               f"{self._said()}[/yellow]")

    def _said(self) -> str:
        return f"{len(self.slowed)} epoch(s) trained beside them ({_ranges(self.slowed)})"


def _ranges(epochs: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``."""
    runs: list[list[int]] = []
    for e in epochs:
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def describe(threads: tuple[int, str], load: LoadProbe | None) -> str:
    """``cpu threads: 2 (2 cores)``, with a warning when other processes compete for the cores."""
    line = f"cpu threads: {threads[0]} ({threads[1]})"
    other = load.competing() if load is not None else None
    if other is not None and other >= 0.5:
        line += (f"\n[yellow]warning: other processes keep {other:.1f} of {len(load.cpus)} cores busy: this run "
                 f"is slower than on an idle machine and its timings do not compare (trainer.threads sets the "
                 f"threads)[/yellow]")
    return line
