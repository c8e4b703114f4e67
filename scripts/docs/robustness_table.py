"""Clean accuracy against calibration (ECE) and accuracy under common corruptions, for a few zoo models.

    python -m scripts.docs.robustness_table [--runs DIR ...] [--images 1000]

Without ``--runs`` it trains on the bundled digits, as a user types it: ``cnnbench model=lenet5`` (30 epochs),
``model=small_resnet trainer.epochs=10`` and ``model=vgg11_bn trainer.epochs=10``. Each run (trained here or given)
is then scored by ``cnnbench-eval corruptions=true corruption_images=N``, the first run as everyone's
baseline, and the table is printed in markdown. Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from scripts.runs import run_cnnbench

DIGITS = [("lenet5", []), ("small_resnet", ["trainer.epochs=10"]), ("vgg11_bn", ["trainer.epochs=10"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="*", help="run directories to score (default: train on digits)")
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    from cnnbench.commands.evaluate import evaluate_run

    runs = args.runs
    if not runs:
        work = Path(tempfile.mkdtemp(prefix="cnnbench-robust-"))
        runs = []
        for model, extra in DIGITS:
            run_cnnbench(work / model, f"model={model}", *extra, "logger.print_config=false", "logger.progress=false",
                         quiet=True)
            runs.append(work / model)
    rows = ["| model | data | epochs | test acc | ECE | NLL | Brier | mean corruption acc | corruption error vs "
            "the first |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        r = evaluate_run(run, corruptions=args.images, baseline=runs[0], out=run / "eval.json")
        c, trained = r["corruptions"], json.loads((Path(run) / "results.json").read_text())
        rows.append(f"| {r['model']} | {trained['data']} | {trained['epochs_completed']} | {r['acc']:.2f}% | "
                    f"{r['ece']:.2f}% | {r['nll']:.3f} | {r['brier']:.3f} | {c['mean_corruption_acc']:.2f}% | "
                    f"{c['mce']:.0f}% |")
        print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
