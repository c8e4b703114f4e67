"""From `experiment=cifar10_speedrun_muon` to `experiment=cifar10_speedrun_2s`, one change at a time, on the real
CIFAR-10 JPEGs.

    python -m scripts.compare.ablation [--seeds 0,1,2] [--work DIR] [--shared ../shared] [--device cpu|cuda]
        [--rows 0,1,...] [--write]

Each row adds one of the 2-second record's changes (hiverge/cifar10-speedrun) to the row above: its batch, steps
and rates; brightness and contrast; SiLU; filters renormalised every 4th step (the last row is the experiment
as shipped). Prints test accuracy per seed, mean ± std, training time and images/s; ``--write`` puts the table
between the ablation-2s markers of docs/speed.md. Runs finished in ``--work`` are reused (a stopped ablation goes
on where it stopped); with the ``--work`` of scripts.compare.records, the first and last rows are that comparison's
cnnbench runs. Every row trains eager. Figures, not a test: about 6 minutes a run on 2 AMX cores with bf16; run it
on an idle machine.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from scripts.compare.records import cnnbench_side
from scripts.compare.speedrun import run_seed
from scripts.runs import ROOT, extract_cifar10, write_between_markers

REVERT = {  # the 2s recipe's changes, in the order the rows add them: what undoes each
    "silu": ["model.activation=gelu"],
    "jitter": ["data.augment.brightness=0", "data.augment.contrast=0"],
    "renorm": ["optimizer.normalize_every=1"],
}
ROWS = (  # (label, experiment, overrides)
    ("`cifar10_speedrun_muon` (the start: batch 2,000, 200 steps)", "cifar10_speedrun_muon", []),
    ("+ batch 1,536, 243 steps, the record's rates, label smoothing and BatchNorm momentum", "cifar10_speedrun_2s",
     REVERT["silu"] + REVERT["jitter"] + REVERT["renorm"]),
    ("+ brightness and contrast", "cifar10_speedrun_2s", REVERT["silu"] + REVERT["renorm"]),
    ("+ SiLU in the conv groups", "cifar10_speedrun_2s", REVERT["renorm"]),
    ("+ filters renormalised every 4th step: `cifar10_speedrun_2s`", "cifar10_speedrun_2s", []),
)


def run(root: Path, work: Path, row: int, seed: int, device: str) -> dict:
    """One seed of one row, eager as in scripts.compare.records: a row that is an experiment as shipped is that
    comparison's run (reused from a shared ``--work``)."""
    _, experiment, overrides = ROWS[row]
    return run_seed(root, seed, work, cnnbench_side(device, compiled=False) + overrides, experiment,
                    name=None if not overrides else f"row{row}")


def table(results: dict[int, dict[int, dict]]) -> str:
    seeds = sorted(next(iter(results.values())))
    rows = [f"| recipe | test accuracy (seeds {', '.join(map(str, seeds))}) | mean ± std | training time | images/s |",
            "|---|---|---:|---:|---:|"]
    for row, runs in results.items():
        accs = [runs[s]["test_acc"] for s in seeds if s in runs]
        times = [runs[s]["train_time_s"] for s in seeds if s in runs]
        rate = [runs[s]["train_images_per_s"] for s in seeds if s in runs]
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        rows.append(f"| {ROWS[row][0]} | {', '.join(f'{a:.2f}' for a in accs)} | "
                    f"**{statistics.mean(accs):.2f}{spread}%** | {statistics.mean(times):.0f} s | "
                    f"{statistics.mean(rate):.0f} |")
    first = next(iter(next(iter(results.values())).values()))
    return "\n".join(rows) + f"\n\n{first['machine']}, precision {first['precision']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnnbench_ablation"))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=lambda s: [int(x) for x in s.split(",")], default=list(range(len(ROWS))),
                        help="which rows (0-based, comma-separated; default all)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    root = extract_cifar10(args.shared / "datasets" / "cifar10-jpg.tar.gz", args.work)
    results: dict[int, dict[int, dict]] = {row: {} for row in args.rows}
    for seed in args.seeds:  # seed by seed: an interrupted ablation has whole seeds
        for row in args.rows:
            results[row][seed] = run(root, args.work, row, seed, args.device)
        print(table(results), flush=True)
    if args.write:
        write_between_markers(ROOT / "docs" / "speed.md", "ablation-2s", table(results))


if __name__ == "__main__":
    main()
