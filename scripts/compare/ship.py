"""Shipping a model, measured: int8 beside float, latency's noise, and students with and without a teacher.

    python -m scripts.compare.ship --part teachers|int8|students [--seeds 0,1,2] [--work DIR] [--write]

``teachers``: small_resnet on all 50,000 CIFAR-10 JPEGs (4 epochs) and resnet18 on the hymenoptera photos (112 px,
30 epochs), kept in ``--work``. ``int8``: the CIFAR-10 teacher exported to ONNX with ``int8=true`` (test accuracy
and latency of both files), and ``cnnbench-eval speed=true`` twice on it (do two measurements agree within their
stated noise?). ``students``: a narrow small_resnet (widths 16-32-64) on 10,000 CIFAR-10 images (8 epochs) and on
the photos (112 px, 30 epochs), with and without ``transfer=distill transfer.teacher=<the teacher>``, ``--seeds``
each. Prints the tables; ``--write`` puts them into docs/evaluation.md (int8) and docs/transfer.md (students).
Figures, not a test: run it on an otherwise idle machine (about an hour on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from scripts.runs import (
    CIFAR_TAR,
    HYMENOPTERA_TAR,
    ROOT,
    extract_cifar10,
    extract_hymenoptera,
    run_cnnbench,
    write_between_markers,
)

QUIET = ["logger.print_config=false", "logger.progress=false", "logger.snapshots=0", "logger.figures=false"]
CIFAR = ["data.mean=[0.4914,0.4822,0.4465]", "data.std=[0.2470,0.2435,0.2616]", "optimizer.lr=0.1",
         "optimizer.momentum=0.9", "optimizer.nesterov=true", "optimizer.weight_decay=5e-4",
         "scheduler.warmup_epochs=1"]
SETTINGS = {  # name: (teacher's overrides, student's overrides)
    "CIFAR-10": (["model=small_resnet", "trainer.epochs=4"],
                 ["model=small_resnet", "model.widths=[16,32,64]", "data.num_train=10000", "trainer.epochs=8"]),
    "hymenoptera": (["model=resnet18", "data.image_size=112", "trainer.epochs=30"],
                    ["model=small_resnet", "model.widths=[16,32,64]", "data.image_size=112", "trainer.epochs=30"]),
}


def data_args(setting: str, work: Path) -> list[str]:
    if setting == "CIFAR-10":
        return ["data=imagefolder", f"data.root={extract_cifar10(CIFAR_TAR, work)}", *CIFAR]
    return ["data=imagefolder", f"data.root={extract_hymenoptera(HYMENOPTERA_TAR, work)}", "optimizer=sgd",
            "optimizer.lr=0.05", "optimizer.momentum=0.9", "data.augment.hflip=true"]


def teachers(work: Path) -> None:
    for setting, (teacher, _) in SETTINGS.items():
        run = work / f"teacher_{setting}"
        results = run_cnnbench(run, *data_args(setting, work), *teacher, *QUIET, cwd=work, reuse=True)
        print(f"{setting} teacher: {results['test_acc']:.2f}% test accuracy")


def command(*args: str, module: str) -> str:
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"{module} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def int8(work: Path) -> str:
    run = work / "teacher_CIFAR-10"
    command(f"run={run}", "format=onnx", "int8=true", "overwrite=true", module="cnnbench.commands.export")
    q = json.loads((run / "export" / "model.int8.onnx.json").read_text())["int8"]
    lines = ["| file | test accuracy (10,000 images) | batch-1 latency p50 / p95 | throughput at 64 |",
             "|---|---:|---:|---:|"]
    for t, acc in zip(q["timings"], (q["test_acc_float"], q["test_acc_int8"]), strict=True):
        lines.append(f"| {t['runtime']} | {acc:.2f}% | {t['p50_ms']:.2f} / {t['p95_ms']:.2f} ms | "
                     f"{t['images_per_s']:,.0f} images/s |")
    lines.append(f"\nint8 changes the test accuracy by {q['acc_change']:+.2f} points ({q['top1_agreement']:.1f}% of "
                 f"the answers the same); {q['latency_speedup']:.2f}x lower latency, {q['throughput_speedup']:.2f}x "
                 f"the throughput.")
    runs = []
    for _ in range(2):
        command(f"run={run}", "speed=true", "overwrite=true", module="cnnbench.commands.evaluate")
        runs.append(json.loads((run / "latency_cpu.json").read_text())["timings"])
    lines += ["", "| runtime | first p50 (noise) | second p50 (noise) | apart |", "|---|---:|---:|---:|"]
    for a, b in zip(*runs, strict=True):
        apart = abs(a["p50_ms"] - b["p50_ms"]) / min(a["p50_ms"], b["p50_ms"])
        lines.append(f"| {a['runtime']} | {a['p50_ms']:.2f} ms (±{100 * a['noise']:.0f}%) | {b['p50_ms']:.2f} ms "
                     f"(±{100 * b['noise']:.0f}%) | {100 * apart:.1f}% |")
    return "\n".join(lines)


def students(work: Path, seeds: list[int]) -> str:
    lines = ["| data | student | teacher | test accuracy per seed | mean ± std |", "|---|---|---|---|---:|"]
    for setting, (_, student) in SETTINGS.items():
        teacher = work / f"teacher_{setting}"
        teacher_acc = json.loads((teacher / "results.json").read_text())["test_acc"]
        for with_teacher in (False, True):
            accs = []
            for seed in seeds:
                run = work / f"student_{setting}_{'distilled' if with_teacher else 'alone'}_{seed}"
                extra = ["transfer=distill", f"transfer.teacher={teacher}"] if with_teacher else []
                accs.append(run_cnnbench(run, *data_args(setting, work), *student, *extra, f"trainer.seed={seed}",
                                         *QUIET, cwd=work, reuse=True)["test_acc"])
            lines.append(f"| {setting} | small_resnet 16-32-64 | "
                         f"{f'{teacher_acc:.2f}% ({SETTINGS[setting][0][0][6:]})' if with_teacher else '—'} | "
                         f"{', '.join(f'{a:.2f}' for a in accs)} | **{statistics.fmean(accs):.2f} ± "
                         f"{statistics.stdev(accs):.2f}%** |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("teachers", "int8", "students"), required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnnbench_ship"))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.part == "teachers":
        teachers(args.work)
    elif args.part == "int8":
        text = int8(args.work)
        print(text)
        if args.write:
            write_between_markers(ROOT / "docs" / "evaluation.md", "int8", text)
    else:
        text = students(args.work, [int(s) for s in args.seeds.split(",")])
        print(text)
        if args.write:
            write_between_markers(ROOT / "docs" / "transfer.md", "distill", text)


if __name__ == "__main__":
    main()
