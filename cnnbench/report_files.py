"""The files a leaderboard is written to: ``leaderboard.{csv,md}`` and its plots, in one folder.

A folder may hold a user's own ``leaderboard.md`` or plot under the same name: the report replaces a file only
when it wrote it and nobody changed it since. ``.cnnbench-report`` in the folder records the SHA-256 of each
file the report wrote; any other file under one of its names is refused (``--overwrite`` replaces it). Every file
is written atomically through no link (a link at a name is replaced, never followed).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from cnnbench.errors import CnnbenchError
from cnnbench.fileio import atomic_write, atomic_write_json, read_regular
from cnnbench.leaderboard import METRICS, Leaderboard, build_leaderboard, find_runs, print_table, to_markdown

RECORD = ".cnnbench-report"  # {file name: sha256} of what the report wrote in its folder
PLOTS = (  # x key, x label, file, log scale, y key
    ("params", "parameters", "acc_vs_params.png", True, "test_acc"),
    ("train_time_s", "training time (s)", "acc_vs_time.png", False, "test_acc"),
    ("params", "parameters", "corruption_acc_vs_params.png", True, "corruption_acc"),
    ("latency_p50_ms", "batch-1 latency, median (ms)", "acc_vs_latency.png", True, "test_acc"))
PARETO = ("acc_vs_latency.png",)  # plots that mark their Pareto front: nothing both faster and more accurate


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record(out_dir: Path) -> dict[str, str]:
    try:
        record = json.loads(read_regular(out_dir / RECORD, follow=False))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


class ReportFolder:
    """Writes the report's files into ``out_dir``, each only where it may (the module's docstring)."""

    def __init__(self, out_dir: Path, overwrite: bool = False) -> None:
        self.out_dir = out_dir
        self.overwrite = overwrite
        self.record = _record(out_dir)
        self.files: dict[str, bytes] = {}

    def add(self, name: str, data: bytes) -> None:
        self.files[name] = data

    def check(self) -> None:
        """Refuse, before anything is written, a name held by a file the report did not write (or one changed
        since), or by anything that is not a regular file."""
        for name in self.files:
            path = self.out_dir / name
            if not (path.exists() or path.is_symlink()):
                continue
            try:
                ours = _digest(read_regular(path, follow=False)) == self.record.get(name)
            except OSError:
                raise CnnbenchError(f"{path} is not a regular file; the report writes only regular files: move it "
                                    f"or give --out <another folder>") from None
            if not ours and not self.overwrite:
                raise CnnbenchError(f"{path} exists and cnnbench-report did not write it (or it changed since); "
                                    f"give --out <another folder>, or --overwrite to replace it")

    def write(self) -> list[Path]:
        self.check()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            atomic_write(self.out_dir / name, lambda f, data=data: f.write(data))
            self.record[name] = _digest(data)
        atomic_write_json(self.record, self.out_dir / RECORD)
        return [self.out_dir / name for name in self.files]


def csv_text(board: Leaderboard) -> str:
    fields = [*board.keys, "seeds", "params", "macs"] + [f"{m}{s}" for m in METRICS for s in ("", "_std")] + (
        ["software"] if board.software else [])
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(board.rows)
    return buffer.getvalue()


def plots(board: Leaderboard) -> dict[str, Callable[[], bytes]]:
    """Test accuracy against parameters and against training time, and (when the runs were scored under
    corruptions) mean corruption accuracy against parameters: one labelled point per configuration. Each plot
    as a function that draws it, by file name."""
    drawn = {}
    for x_key, x_label, name, log, y_key in PLOTS:
        points = [(r[x_key], r[y_key], r.get(f"{y_key}_std") or 0, r["label"])
                  for r in board.rows if r.get(x_key) and r.get(y_key) is not None]
        if points:
            y_label = "test accuracy (%)" if y_key == "test_acc" else "mean accuracy under corruptions (%)"
            drawn[name] = lambda points=points, x_label=x_label, y_label=y_label, log=log, front=name in PARETO: \
                _scatter(points, x_label, y_label, log, front)
    return drawn


def pareto_front(points: list[tuple]) -> list[tuple]:
    """The points (x, y, ...) that no other beats on both: a lower x (cost) and a higher y (accuracy); by x."""
    front = []
    for point in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or point[1] > front[-1][1]:
            front.append(point)
    return front


def _scatter(points: list[tuple], x_label: str, y_label: str, log: bool, front: bool = False) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(min(14.0, 7 + 0.25 * len(points)), 5), dpi=110)
    if log:
        ax.set_xscale("log")
    xs = [math.log(p[0]) if log else p[0] for p in points]
    middle = (min(xs) + max(xs)) / 2
    for (x, y, err, label), position in zip(points, xs, strict=True):
        ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
        right = position > middle  # (labels of the right half point left: none leaves the picture)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(-4 if right else 4, 4), fontsize=7,
                    ha="right" if right else "left")
    if front:
        best = pareto_front(points)
        ax.step([p[0] for p in best], [p[1] for p in best], where="post", color="tab:red", linewidth=1,
                label="Pareto front: no run both faster and more accurate")
        ax.scatter([p[0] for p in best], [p[1] for p in best], s=120, facecolors="none", edgecolors="tab:red")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def write_report(paths: list[Path], out_dir: Path | None = None, console: Console | None = None,
                 skipped: list[str] | None = None, overwrite: bool = False) -> Leaderboard:
    """Build, print and write the leaderboard of the runs under ``paths`` into ``out_dir`` (default: the first);
    nothing is written when there is no run. Files that are not runs' results are added to ``skipped``."""
    out_dir = out_dir or paths[0]
    board = build_leaderboard(find_runs(paths, skipped))
    if board.total == 0:
        return board
    folder = ReportFolder(out_dir, overwrite)
    folder.add("leaderboard.csv", csv_text(board).encode())
    folder.add("leaderboard.md", to_markdown(board).encode())
    drawings = plots(board)
    for name in drawings:
        folder.add(name, b"")
    folder.check()  # (before the plots are drawn)
    for name, draw in drawings.items():
        folder.add(name, draw())
    folder.write()
    print_table(board, console)
    return board
