"""Run `experiment=cifar10_speedrun` on the real CIFAR-10 for several seeds and print the table of docs/speed.md.

    python -m scripts.compare.speedrun [--seeds 0,1,2] [--shared ../shared] [--experiment cifar10_speedrun_muon]
                               [--write] [extra cnnbench overrides ...]

Each seed is one `cnnbench experiment=cifar10_speedrun data=imagefolder data.root=<extracted> trainer.seed=N`
(about 9 minutes each on 2 CPU cores with bf16); the table (test accuracy, training time, images/s, mean and
standard deviation) goes to stdout, and with --write between the experiment's markers of docs/speed.md.
Figures, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from scripts.runs import ROOT, experiments, extract_cifar10, overrides_only, run_cnnbench, write_between_markers

MARKERS = {"cifar10_speedrun": "speedrun", "cifar10_speedrun_muon": "muon"}  # experiment: its table in docs/speed.md


def run_seed(root: Path, seed: int, work: Path, extra: list[str], experiment: str = "cifar10_speedrun",
             name: str | None = None) -> dict:
    """One seed of ``experiment`` in ``work / f"{name}_seed{seed}"`` (name: the experiment's); a completed run
    there with the same overrides is reused (a stopped comparison goes on where it stopped), any other is
    replaced."""
    overrides = [f"experiment={experiment}", "data=imagefolder", f"data.root={root}", f"trainer.seed={seed}",
                 f"data.cache_dir={work / 'cache'}", "logger.print_config=false", "logger.progress=false", *extra]
    return run_cnnbench(work / f"{name or experiment}_seed{seed}", *overrides, reuse=True)


def table(results: dict[int, dict]) -> str:
    rows = ["| seed | test accuracy | training time | images/s | MFU |", "|---|---:|---:|---:|---:|"]
    for seed, r in results.items():
        rows.append(f"| {seed} | {r['test_acc']:.2f}% | {r['train_time_s']:.0f} s | {r['train_images_per_s']:,.0f} | "
                    f"{100 * r['mfu']:.1f}% |")
    accs = [r["test_acc"] for r in results.values()]
    spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    mean_time = statistics.mean(r["train_time_s"] for r in results.values())
    rows.append(f"| mean ± std | **{statistics.mean(accs):.2f}{spread}%** | {mean_time:.0f} s | | |")
    first = next(iter(results.values()))
    rows.append(f"\n{first['machine']}, precision {first['precision']}, peak (dense GEMM) "
                f"{first['peak_tflops']:.2f} TFLOP/s")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2],
                        help="comma-separated (default 0,1,2)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--experiment", choices=[e for e in experiments() if e.startswith("cifar10_speedrun")],
                        default="cifar10_speedrun")
    parser.add_argument("--write", action="store_true",
                        help=f"write the table into docs/speed.md (experiments {', '.join(MARKERS)})")
    args, extra = parser.parse_known_args()
    extra = overrides_only(parser.prog, extra)
    if args.write and args.experiment not in MARKERS:
        parser.error(f"--write: docs/speed.md has a table for {', '.join(MARKERS)}, not {args.experiment}")
    work = Path(tempfile.mkdtemp(prefix="cnnbench-speedrun-"))
    root = extract_cifar10(args.shared / "datasets" / "cifar10-jpg.tar.gz", work)
    results = {seed: run_seed(root, seed, work, extra, args.experiment) for seed in args.seeds}
    text = table(results)
    print(text)
    if args.write:
        write_between_markers(ROOT / "docs" / "speed.md", MARKERS[args.experiment], text)


if __name__ == "__main__":
    main()
