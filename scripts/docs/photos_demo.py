"""Real photos, trained from scratch: the old squash pipeline against the crop pipeline, same model and steps.

    python -m scripts.docs.photos_demo [--size 96] [--epochs 40] [--seeds 0,1,2] [--model resnet18] [--shared ../shared]

The hymenoptera photos (245 training photos of ants and bees, 193 to 2592 px wide, aspect 0.62 to 3.4; 153 in
val/, here the reported split) are trained on twice per seed, each run `cnnbench data=imagefolder ...`:
  squash: the pipeline before (data.pipeline=pad): every photo resized to a size x size square (aspect lost),
          4 px pad-and-crop + flip for training, the squashed photo for evaluation;
  crop:   data.pipeline=crop (the default for photos): photos stored whole, RandomResizedCrop(size, scale=(0.08,
          1), ratio=(3/4, 4/3)) + flip for training, Resize(size / 0.875) + CenterCrop(size) for evaluation.
Everything else is the same: model, optimizer, epochs, batch 32, the 10% of train/ carved per class to select
(data.split_seed=0). Prints test accuracy and balanced accuracy per run and mean ± std per pipeline, as measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from scripts.runs import ROOT, extract_hymenoptera, run_cnnbench

PIPELINES = {"squash": ("data.pipeline=pad", "data.augment.crop_padding=4"), "crop": ("data.pipeline=crop",)}


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    tar = args.shared / "datasets" / "hymenoptera.tar"
    if not tar.is_file():
        sys.exit(f"the hymenoptera photos are not at {tar}")
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, list[dict]] = {name: [] for name in PIPELINES}
    with tempfile.TemporaryDirectory() as tmp:
        root = extract_hymenoptera(tar, Path(tmp))
        for seed in seeds:
            for name, overrides in PIPELINES.items():
                r = run_cnnbench(Path(tmp) / "runs" / f"{name}-{seed}", "data=imagefolder", f"data.root={root}",
                                 f"data.image_size={args.size}", "data.batch_size=32",
                                 f"data.cache_dir={Path(tmp) / 'cache'}", f"model={args.model}",
                                 f"trainer.epochs={args.epochs}", f"trainer.seed={seed}", "logger.snapshots=0",
                                 "logger.tensorboard=false", "logger.figures=false", "logger.print_config=false",
                                 *overrides, quiet=True)
                rows[name].append(r)
                print(f"{name:6s} seed {seed}: test acc {r['test_acc']:.2f}%  balanced acc "
                      f"{r['test_balanced_acc']:.2f}%  ({r['train_time_s']:.0f} s of training, "
                      f"{r['steps']} steps)", flush=True)
    print(f"\n{args.model} from scratch, {args.size} px, {args.epochs} epochs, batch 32, seeds {args.seeds}: "
          f"hymenoptera val/ (153 photos)")
    print("| pipeline | test acc (%) | balanced acc (%) |\n|---|---:|---:|")
    for name, runs in rows.items():
        print(f"| {name} | {mean_std([r['test_acc'] for r in runs])} | "
              f"{mean_std([r['test_balanced_acc'] for r in runs])} |")


if __name__ == "__main__":
    main()
