"""Leaderboards of sweeps: one row per configuration, seeds aggregated, sorted by validation accuracy.

Written at the end of every multirun (a Hydra callback) and on demand with ``cnnbench-report DIR [DIR ...]``
(``cnnbench.report_files``): ``leaderboard.csv``, ``leaderboard.md`` and plots in the first directory, and the
table on the console. Rows are never ranked by test accuracy.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from cnnbench import manifest
from cnnbench.fileio import read_regular
from cnnbench.overrides import parse_overrides
from cnnbench.provenance import SOFTWARE_KEYS

SEED_KEY = "trainer.seed"
METRICS = ("best_val_acc", "test_acc", "test_top5_acc", "test_ece", "corruption_acc", "train_time_s",
           "train_images_per_s", "mfu", "latency_p50_ms", "latency_p95_ms", "serving_images_per_s")
OPTIONAL = {"test_top5_acc": "top-5 %", "test_ece": "ECE %", "corruption_acc": "corruption acc %",
            "latency_p50_ms": "latency ms (p50)", "latency_p95_ms": "p95 ms",
            "serving_images_per_s": "serving img/s"}  # shown when some run has them (corruption accuracy: from
# cnnbench-eval corruptions=true; latency: trainer.measure_latency or cnnbench-eval speed=true, eager PyTorch)


def find_runs(paths: list[Path], skipped: list[str] | None = None) -> list[dict]:
    """Every results.json under the given run or sweep directories (or the files themselves). A file that is not
    a run's results (unreadable, not UTF-8, truncated, not an object, a metric that is not a number) is left out
    and said in ``skipped`` as ``path: reason``."""
    runs = []
    for path in paths:
        files = [path] if path.is_file() else sorted(path.rglob("results.json"))
        for f in files:
            run, reason = _read_results(f)
            if run is None:
                if skipped is not None:
                    skipped.append(f"{f}: {reason}")
                continue
            run["run_dir"] = str(f.parent)
            run.update(_eval_scores(f.parent, run))
            run.update(_latency(f.parent, run))
            runs.append(run)
    return runs


def _read_results(path: Path) -> tuple[dict | None, str]:
    try:
        run = json.loads(read_regular(path).decode("utf-8"))
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as e:
        return None, f"not complete JSON ({e.msg} at line {e.lineno})"
    if not isinstance(run, dict):
        return None, f"a JSON {type(run).__name__}, not an object"
    if not isinstance(run.get("status"), str):
        return None, "no status"
    for key in (*METRICS, "params", "macs"):
        value = run.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return None, f"{key} is {value!r}, not a number"
    return run, ""


def _eval_scores(run_dir: Path, run: dict) -> dict:
    """Top-5 and ECE (eval_test.json) and the mean corruption accuracy (eval_test_corruptions<N>.json) of
    ``cnnbench-eval`` runs on the run's own test split and its scored checkpoint, with no data overrides."""
    found = {}
    for path in [run_dir / "eval_test.json", *sorted(run_dir.glob("eval_test_corruptions*.json"))]:
        try:
            scores = json.loads(read_regular(path, follow=False))
        except (OSError, ValueError):
            continue
        if not isinstance(scores, dict) or scores.get("split") != "test" or scores.get("data_overrides") or \
                scores.get("step") != run.get("scored_step"):
            continue
        found.update({f"test_{k}": scores[k] for k in ("top5_acc", "ece") if scores.get(k) is not None})
        if isinstance(scores.get("corruptions"), dict):
            found["corruption_acc"] = scores["corruptions"].get("mean_corruption_acc")
    return found


def _latency(run_dir: Path, run: dict) -> dict:
    """Eager PyTorch's batch-1 latency and throughput of the run's scored model: from ``cnnbench-eval speed=true``
    on the run's device (``latency_<device>.json``, the same step) when there is one, else from training
    (``trainer.measure_latency``)."""
    timings = run.get("latency") if isinstance(run.get("latency"), list) else None
    device = str(run.get("device", "cpu")).replace(":", "")
    try:
        measured = json.loads(read_regular(run_dir / f"latency_{device}.json", follow=False))
        if measured.get("step") == run.get("scored_step"):
            timings = measured.get("timings")
    except (OSError, ValueError, AttributeError):
        pass
    eager = next((t for t in timings or () if isinstance(t, dict) and t.get("runtime") == "eager"), None)
    if eager is None:
        return {}
    return {"latency_p50_ms": eager.get("p50_ms"), "latency_p95_ms": eager.get("p95_ms"),
            "serving_images_per_s": eager.get("images_per_s")}


@dataclass
class Leaderboard:
    keys: list[str]  # the swept keys that define a configuration (seeds excluded)
    rows: list[dict[str, Any]] = field(default_factory=list)
    software: list[str] = field(default_factory=list)  # the software versions that differ between the runs
    failed: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


GROUP_VALUES = {"model": "model.name", "data": "data.name", "optimizer": "optimizer._target_",
                "scheduler": "scheduler.name", "transfer": "transfer.strategy"}


def config_value(run: dict, key: str) -> str:
    """A run's value of ``key`` when its command line did not set it: from its results, else from the config it
    recorded (``.hydra/config.yaml``); "-" when neither has it (a digits run has no data.root)."""
    if key == "model" and run.get("arch"):  # (another library's zoo: its architecture)
        return str(run["arch"])
    if key in ("model", "data") and run.get(key):
        return str(run[key])
    value = recorded_value(Path(run["run_dir"]), GROUP_VALUES.get(key, key))
    return "-" if value is None else str(value).rsplit(".", 1)[-1] if key == "optimizer" else str(value)


def recorded_value(run_dir: Path, key: str) -> Any:
    """``key`` (dotted) of the config a run recorded in ``.hydra/config.yaml``, read as plain YAML data (never
    interpolated); None when the file or the key is missing or unreadable."""
    text = manifest.read(run_dir, ".hydra/config.yaml")
    try:
        node = yaml.safe_load(text) if text is not None else None
    except yaml.YAMLError:
        return None
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, (str, int, float, bool)) else None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def build_leaderboard(runs: list[dict]) -> Leaderboard:
    """Group completed runs by their swept values (all but the seed) and aggregate over seeds."""
    parsed = [parse_overrides(r.get("overrides", [])) for r in runs]
    all_keys = sorted({k for p in parsed for k in p})
    swept = [k for k in all_keys if len({p.get(k) for p in parsed}) > 1 and k != SEED_KEY]
    board = Leaderboard(keys=swept or ["model"], total=len(runs))
    versions = [(r.get("provenance") or {}).get("software") or {} for r in runs if r.get("status") == "completed"]
    board.software = [k for k in SOFTWARE_KEYS if len({v.get(k) for v in versions}) > 1]
    groups: dict[tuple, list[dict]] = {}
    for run, p in zip(runs, parsed, strict=True):
        label = tuple(p[k] if k in p else config_value(run, k) for k in swept) if swept else (
            run.get("arch") or run.get("model", "?"),)
        if run.get("status") != "completed":
            board.failed.append({**dict(zip(board.keys, label, strict=True)), "status": run.get("status"),
                                 "error": run.get("error") or _why(run), "run_dir": run["run_dir"]})
            continue
        groups.setdefault(label, []).append(run)
    for label, group in groups.items():
        row: dict[str, Any] = dict(zip(board.keys, label, strict=True))
        row["seeds"] = len(group)
        labels = {", ".join(f"{k} {((r.get('provenance') or {}).get('software') or {}).get(k) or '?'}"
                            for k in board.software) for r in group}
        row["software"] = labels.pop() if len(labels) == 1 else "mixed: " + " | ".join(sorted(labels))
        row["label"] = group[0].get("run_name") if len(group) == 1 and group[0].get("run_name") else ", ".join(
            f"{k}={v}" for k, v in zip(board.keys, label, strict=True) if v != "-") or group[0].get("model", "?")
        row["params"] = group[0].get("params")
        row["macs"] = group[0].get("macs")
        for metric in METRICS:
            row[metric], row[f"{metric}_std"] = _mean_std([r.get(metric) for r in group])
        board.rows.append(row)
    board.rows.sort(key=lambda r: -1.0 if r["best_val_acc"] is None else r["best_val_acc"], reverse=True)
    return board


def _why(run: dict) -> str:
    """What a run that did not complete got to, when it names no error (a pruned trial, an interruption)."""
    best = run.get("best_val_acc")
    return f"after epoch {run.get('epochs_completed')}" + (f", best validation accuracy {best:.2f}%" if best else "")


def _fmt(mean: float | None, std: float | None, seeds: int, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if seeds > 1 else f"{mean:.{digits}f}"


def _display_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    optional = [k for k in OPTIONAL if any(r.get(k) is not None for r in board.rows)]
    header = [*board.keys, "seeds", "params", "MACs", "val acc %", "test acc %", *(OPTIONAL[k] for k in optional),
              "train time s", "images/s", "MFU %", *(["software"] if board.software else [])]
    lines = []
    for r in board.rows:
        n = r["seeds"]
        lines.append([*(str(r[k]) for k in board.keys), str(n), f"{r['params']:,}" if r["params"] else "-",
                      f"{r['macs'] / 1e6:,.1f} M" if r.get("macs") else "-",
                      _fmt(r["best_val_acc"], r["best_val_acc_std"], n), _fmt(r["test_acc"], r["test_acc_std"], n),
                      *(_fmt(r[k], r[f"{k}_std"], n, 0 if k == "serving_images_per_s" else 2) for k in optional),
                      _fmt(r["train_time_s"], r["train_time_s_std"], n, 1),
                      _fmt(r["train_images_per_s"], r["train_images_per_s_std"], n, 0),
                      _fmt(*(100 * v if v is not None else None for v in (r["mfu"], r["mfu_std"])), n, 1),
                      *([r["software"]] if board.software else [])])
    return header, lines


def to_markdown(board: Leaderboard) -> str:
    header, lines = _display_rows(board)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    if board.software:
        out += ["", f"The runs differ in software ({', '.join(board.software)}): compare their rows with care."]
    if board.failed:
        out += ["", f"{len(board.failed)} of {board.total} runs did not complete (pruned trials among them):"
                if any(f["status"] == "pruned" for f in board.failed) else
                f"{len(board.failed)} of {board.total} runs did not complete:", ""]
        out += [f"- {f['run_dir']}: {f['status']}: {f['error']}" for f in board.failed]
    return "\n".join(out) + "\n"


def print_table(board: Leaderboard, console: Console | None = None, title: str = "leaderboard") -> None:
    console = console or Console(width=None if Console().is_terminal else 160)
    header, lines = _display_rows(board)
    table = Table(title=f"{title}: sorted by validation accuracy")
    for h in header:  # (never narrower than its header: a cut "data…" says nothing)
        table.add_column(h, justify="left" if h in board.keys else "right", min_width=len(h))
    for line in lines:
        table.add_row(*line)
    console.print(table)
    if board.software:
        console.print(f"[yellow]the runs differ in software ({', '.join(board.software)}): see the software "
                      f"column[/yellow]")
    for f in board.failed:
        console.print(f"[red]{f['status']}[/red] {f['run_dir']}: {f['error']}")
