"""Thread budgets measured: cnnbench processes side by side on one machine.

    python -m scripts.bench.threads [--epochs 2] [--model small_resnet]

Cases, each a run of ``--model`` on the bundled digits (wall time of the whole command; the runs' own training
time from results.json):
  1. one run alone (threads = the cores);
  2. two independent runs at once, each at its default (each takes every core: oversubscribed);
  3. the same two with ``trainer.threads=1`` each (what the competing-load warning advises);
  4. a 4-job sweep (2 learning rates x 2 seeds) with hydra's joblib launcher, ``n_jobs=1`` and ``n_jobs=2``
     (joblib caps each worker's threads through OMP_NUM_THREADS, which cnnbench keeps);
  5. one run as 2 data-parallel processes under torchrun (cores / 2 threads each) against case 1.
Figures, not a test: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ["logger.print_config=false", "logger.progress=false", "logger.tensorboard=false", "logger.figures=false",
         "logger.snapshots=0"]


def start(work: Path, name: str, *args: str, torchrun: int = 0) -> subprocess.Popen:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
                 "-m", "cnnbench", "trainer.strategy=ddp"] if torchrun else [sys.executable, "-m", "cnnbench"])
    env = {**os.environ, "CNNBENCH_CACHE": str(work / "cache")}
    return subprocess.Popen([*launcher, *args, *QUIET, f"hydra.run.dir={work / name}",
                             f"hydra.sweep.dir={work / name}"], env=env, cwd=work, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def finish(procs: list[subprocess.Popen], started: float) -> float:
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode:
            raise SystemExit(err[-2000:])
    return time.perf_counter() - started


def train_times(folder: Path) -> list[float]:
    return [json.loads(f.read_text())["train_time_s"] for f in sorted(folder.rglob("results.json"))]


def case(work: Path, label: str, runs: list[tuple[str, list[str], int]]) -> tuple[str, float, list[float]]:
    started = time.perf_counter()
    wall = finish([start(work, name, *args, torchrun=n) for name, args, n in runs], started)
    times = [t for name, _, _ in runs for t in train_times(work / name)]
    print(f"{label:<58} wall {wall:6.1f} s   training " + ", ".join(f"{t:.1f} s" for t in times), flush=True)
    return label, wall, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--model", default="small_resnet")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnbench-threads-"))
    run = [f"model={args.model}", f"trainer.epochs={args.epochs}"]
    sweep = ["-m", *run, "optimizer.lr=0.05,0.1", "trainer.seed=0,1", "hydra/launcher=joblib"]
    print(f"{os.cpu_count()} cores; {args.model}, {args.epochs} epochs on digits")
    case(work, "1. one run alone", [("alone", run, 0)])
    case(work, "2. two runs at once, default threads", [("a2", run, 0), ("b2", run, 0)])
    case(work, "3. two runs at once, trainer.threads=1 each", [("a3", [*run, "trainer.threads=1"], 0),
                                                               ("b3", [*run, "trainer.threads=1"], 0)])
    case(work, "4a. sweep of 4 jobs, joblib n_jobs=1", [("sweep1", [*sweep, "hydra.launcher.n_jobs=1"], 0)])
    case(work, "4b. sweep of 4 jobs, joblib n_jobs=2", [("sweep2", [*sweep, "hydra.launcher.n_jobs=2"], 0)])
    case(work, "5. one run, 2 processes under torchrun (DDP)", [("ddp", [*run, "data.batch_size=16"], 2)])


if __name__ == "__main__":
    main()
