"""Transfer learning on the real CIFAR-10: does a model pretrained on five classes help on five others?

1. Pretrain ``small_resnet`` on airplane/automobile/bird/cat/deer (all 25,000 training images).
2. On dog/frog/horse/ship/truck with only 100 training images per class, train four ways at the same step
   budget -- scratch, finetune, freeze_backbone, gradual_unfreeze (each with its config defaults) -- and
   score each on those classes' 5,000 test images.

Every run is the ``cnnbench`` command a user would type; the table is read from their results.json.

    python -m scripts.docs.transfer_demo [--cifar ../shared/datasets/cifar10-jpg.tar.gz] [--out outputs/transfer_demo]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from scripts.runs import CIFAR_TAR, ROOT, extract_cifar10, run_cnnbench

PRETRAIN_CLASSES = ["airplane", "automobile", "bird", "cat", "deer"]
TARGET_CLASSES = ["dog", "frog", "horse", "ship", "truck"]
STRATEGIES = ["scratch", "finetune", "freeze_backbone", "gradual_unfreeze"]


def make_folder(src: Path, dst: Path, classes: list[str], train_per_class: int | None, seed: int = 0) -> Path:
    """An ImageFolder of symlinks: ``classes`` only, ``train_per_class`` random training images of each."""
    rng = random.Random(seed)
    for split in ("train", "test"):
        for cls in classes:
            files = sorted((src / split / cls).iterdir())
            if split == "train" and train_per_class:
                files = sorted(rng.sample(files, train_per_class))
            (dst / split / cls).mkdir(parents=True, exist_ok=True)
            for f in files:
                link = dst / split / cls / f.name
                if not link.exists():
                    link.symlink_to(f)
    return dst


def cnnbench(run_dir: Path, *overrides: str) -> dict:
    """Run the ``cnnbench`` command (unless run_dir already holds a completed run) and return its results."""
    results = run_dir / "results.json"
    if results.is_file() and json.loads(results.read_text())["status"] == "completed":
        return json.loads(results.read_text())
    args = [*overrides, "logger.progress=false", "logger.print_config=false", "trainer.overwrite=true"]
    print(f"$ cnnbench {' '.join(args)} hydra.run.dir={run_dir}", flush=True)
    return run_cnnbench(run_dir, *args, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", type=Path, default=CIFAR_TAR)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "transfer_demo")
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=30, help="epochs on the 500 target images (all strategies)")
    parser.add_argument("--per-class", type=int, default=100)
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("CNNBENCH_CACHE", str(out / "cache"))

    cifar = extract_cifar10(args.cifar, out / "cifar")
    pre = make_folder(cifar, out / "data_pretrain", PRETRAIN_CLASSES, None)
    tgt = make_folder(cifar, out / "data_target", TARGET_CLASSES, args.per_class)

    model = ("model=small_resnet", "model.widths=[32,64,128]")  # half width: the demo fits in ~15 minutes
    start = time.time()
    source = cnnbench(out / "pretrain", *model, "data=imagefolder", f"data.root={pre}",
                      f"trainer.epochs={args.pretrain_epochs}", "optimizer.lr=0.05", "data.batch_size=128")
    print(f"pretrained on {', '.join(PRETRAIN_CLASSES)}: {source['test_acc']:.2f}% test accuracy "
          f"({source['train_time_s']:.0f} s)\n", flush=True)

    rows = []
    for strategy in STRATEGIES:
        pretrained = () if strategy == "scratch" else (f"transfer.checkpoint={out / 'pretrain'}",)
        r = cnnbench(out / strategy, *model, "data=imagefolder", f"data.root={tgt}", f"transfer={strategy}",
                     *pretrained, f"trainer.epochs={args.epochs}", "data.batch_size=64")
        rows.append((strategy, r))

    print(f"\nTarget: {', '.join(TARGET_CLASSES)}, {args.per_class} training images per class (10% held out for "
          f"validation), {rows[0][1]['steps']} steps each, test on their {5 * 1000:,} test images")
    print("| strategy | test accuracy | best val accuracy | training time |")
    print("|---|---:|---:|---:|")
    for strategy, r in rows:
        print(f"| {strategy} | {r['test_acc']:.2f}% | {r['best_val_acc']:.2f}% | {r['train_time_s']:.0f} s |")
    scratch = rows[0][1]["test_acc"]
    beaten = [s for s, r in rows[1:] if r["test_acc"] > scratch]
    print(f"\n{len(beaten)} of {len(rows) - 1} transfer strategies beat scratch; whole demo "
          f"{(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
