"""Baseline against `experiment=modern_recipe` on a fixed subset of the real CIFAR-10, 3 seeds, two models.

    python -m scripts.compare.recipes [--seeds 0,1,2] [--num-train 5000] [--write] [--shared ../shared]
    python -m scripts.compare.recipes --overhead     # images/s only: each batched augmentation against none

Each run is `cnnbench data=imagefolder data.root=<CIFAR-10> data.num_train=N model=M trainer.seed=S ...`, the
recipe run adding `experiment=modern_recipe` (+ `model.drop_path=0.1`); everything else is the same: a fixed random
N training images (10% of them held out for validation), the whole test set, the model's usual optimizer,
cosine with one epoch of warm-up, the same epochs. Prints (and with --write puts into docs/training.md) the
test accuracy per seed, mean ± std, the training throughput, and the data path's own images/s with and without
the recipe's batched augmentations. Figures, not a test: about 50 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from scripts.runs import ROOT, extract_cifar10, run_cnnbench, write_between_markers

CIFAR = ["data.mean=[0.4914,0.4822,0.4465]", "data.std=[0.2470,0.2435,0.2616]", "scheduler.warmup_epochs=1",
         "logger.print_config=false", "logger.progress=false", "logger.snapshots=0", "logger.figures=false"]
MODELS = {  # model: (its overrides, epochs)
    "small_resnet": (["model=small_resnet", "optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.9",
                      "optimizer.nesterov=true", "optimizer.weight_decay=5e-4"], 6),
    "vit_tiny": (["model=vit_tiny", "model.patch_size=8", "optimizer=adamw", "optimizer.lr=1e-3",
                  "optimizer.weight_decay=0.05"], 10),
}
RECIPE = ["experiment=modern_recipe", "model.drop_path=0.1"]


AUGMENTATIONS = {  # name: overrides (on top of CIFAR-10's crop + flip)
    "crop + flip (CIFAR-10's default)": [],
    "+ mixup/cutmix + random erasing (modern_recipe)": ["experiment=modern_recipe"],
    "+ TrivialAugmentWide": ["data.augment.auto=trivialaugment"],
    "+ RandAugment (2 ops, magnitude 9)": ["data.augment.auto=randaugment"],
}


def data_path_rate(root: Path, cache: Path, extra: list[str], batches: int = 60) -> float:
    """Images/s of the training loader alone (decoded cache in memory, batched augmentation, normalisation)."""
    import torch
    from hydra import compose, initialize_config_module

    from cnnbench.config import register_configs
    from cnnbench.data import load_data, make_loaders

    register_configs()
    with initialize_config_module("cnnbench.conf", version_base=None):
        cfg = compose("config", overrides=["data=imagefolder", f"data.root={root}", f"data.cache_dir={cache}",
                                           *CIFAR[:2], *extra])
    loader = make_loaders(load_data(cfg.data), cfg.data, torch.device("cpu"), seed=0, channels_last=True)["train"]
    it = iter(loader)
    for _ in range(5):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * cfg.data.batch_size / (time.perf_counter() - start)


def table(results: dict, rates: dict[str, float]) -> str:
    rows = ["| model | epochs | variant | test accuracy per seed | mean ± std | training images/s |",
            "|---|---:|---|---|---:|---:|"]
    for (model, variant), runs in results.items():
        accs = [r["test_acc"] for r in runs]
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        speed = statistics.mean(r["train_images_per_s"] for r in runs)
        weights = ", ".join(sorted({r["scored_weights"] for r in runs}))
        rows.append(f"| {model} | {MODELS[model][1]} | {variant} (tested: {weights}) | "
                    f"{', '.join(f'{a:.2f}' for a in accs)} | **{statistics.mean(accs):.2f}{spread}%** | "
                    f"{speed:,.0f} |")
    first = next(iter(results.values()))[0]
    rows.append(f"\nData path alone (loader, no model): {rates['baseline']:,.0f} images/s plain, "
                f"{rates['recipe']:,.0f} with mixup/cutmix + random erasing. {first['machine']}, precision "
                f"{first['precision']}.")
    return "\n".join(rows)


def overhead(root: Path, cache: Path, steps: int = 60) -> str:
    """Each augmentation's cost: the data path alone, and whole training steps of small_resnet (batch 128)."""
    rows = ["| augmentation | data path alone, images/s | small_resnet training, images/s |", "|---|---:|---:|"]
    for name, extra in AUGMENTATIONS.items():
        run = run_cnnbench(cache.parent / f"overhead-{len(rows)}", "data=imagefolder", f"data.root={root}",
                           f"data.cache_dir={cache}", *CIFAR, *MODELS["small_resnet"][0], f"trainer.max_steps={steps}",
                           "data.val_fraction=0", "data.num_test=512", *extra, quiet=True)
        rows.append(f"| {name} | {data_path_rate(root, cache, extra):,.0f} | {run['train_images_per_s']:,.0f} |")
    return "\n".join(rows) + f"\n\n{run['machine']}, precision {run['precision']}; {steps} steps of batch 128 each."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--num-train", type=int, default=5000)
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--write", action="store_true", help="write the table into docs/training.md")
    parser.add_argument("--overhead", action="store_true", help="measure each augmentation's cost instead")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnbench-recipe-"))
    root = extract_cifar10(args.shared / "datasets" / "cifar10-jpg.tar.gz", work)
    cache = work / "cache"
    if args.overhead:
        print(overhead(root, cache))
        return
    results: dict = {}
    for model in args.models:
        overrides, epochs = MODELS[model]
        for variant, extra in (("baseline", []), ("modern_recipe", RECIPE)):
            for seed in args.seeds:
                run = run_cnnbench(work / f"{model}-{variant}-{seed}", "data=imagefolder", f"data.root={root}",
                                   f"data.cache_dir={cache}", f"data.num_train={args.num_train}", *CIFAR,
                                   *overrides, f"trainer.epochs={epochs}", f"trainer.seed={seed}", *extra,
                                   quiet=True)
                print(f"{model} {variant} seed {seed}: {run['test_acc']:.2f}% ({run['scored_weights']} weights), "
                      f"{run['train_time_s']:.0f} s", flush=True)
                results.setdefault((model, variant), []).append(run)
    rates = {"baseline": data_path_rate(root, cache, []), "recipe": data_path_rate(root, cache,
                                                                                   ["experiment=modern_recipe"])}
    text = table(results, rates)
    print(text)
    if args.write:
        write_between_markers(ROOT / "docs" / "training.md", "recipe", text)


if __name__ == "__main__":
    main()
