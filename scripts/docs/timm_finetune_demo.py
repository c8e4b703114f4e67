"""A timm model fine-tuned from a weights file made here, against the same model from scratch, on real photos.

1. Train timm's ``resnet18`` on the real CIFAR-10 JPEGs (``cnnbench model=timm model.arch=resnet18 ...``) and
   save its best weights as a plain ``.safetensors`` file, as a user brings one from elsewhere.
2. On the hymenoptera photos (245 training photos of ants and bees, 153 for testing), train the same
   architecture from that file (``model.weights=<file> transfer=finetune``: the 10-class head replaced by a
   2-class one) and from scratch, 3 seeds each, at the same number of epochs.

Every run is the ``cnnbench`` command a user would type; the table is read from their results.json.

    python -m scripts.docs.timm_finetune_demo [--out outputs/timm_finetune_demo] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from scripts.runs import CIFAR_TAR, HYMENOPTERA_TAR, ROOT, extract_cifar10, extract_hymenoptera, run_cnnbench

MODEL = ("model=timm", "model.arch=resnet18")
QUIET = ("logger.progress=false", "logger.print_config=false", "logger.snapshots=0", "trainer.overwrite=true")


def cnnbench(run_dir: Path, *overrides: str) -> dict:
    """The ``cnnbench`` command (unless ``run_dir`` already holds a completed run); its results."""
    results = run_dir / "results.json"
    if results.is_file() and json.loads(results.read_text())["status"] == "completed":
        return json.loads(results.read_text())
    print(f"$ cnnbench {' '.join(overrides)} hydra.run.dir={run_dir}", flush=True)
    return run_cnnbench(run_dir, *overrides, *QUIET, cwd=ROOT)


def save_weights(run_dir: Path, out: Path) -> Path:
    """The run's selected weights as a plain safetensors state dict."""
    import torch
    from safetensors.torch import save_file

    state = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["model"]
    save_file({k: v.contiguous() for k, v in state.items()}, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "timm_finetune_demo")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=15, help="epochs on the photos, both ways")
    parser.add_argument("--size", type=int, default=64, help="photo side (data.image_size)")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    out = args.out.resolve()
    os.environ.setdefault("CNNBENCH_CACHE", str(out / "cache"))
    start = time.time()

    cifar = extract_cifar10(CIFAR_TAR, out / "cifar")
    source = cnnbench(out / "pretrain", *MODEL, "data=imagefolder", f"data.root={cifar}", "data.image_size=32",
                      f"trainer.epochs={args.pretrain_epochs}", "data.batch_size=128", "optimizer.lr=0.05")
    weights = save_weights(out / "pretrain", out / "resnet18_cifar10.safetensors")
    print(f"pretrained on CIFAR-10: {source['test_acc']:.2f}% test accuracy ({source['train_time_s']:.0f} s); "
          f"weights in {weights}\n", flush=True)

    photos = extract_hymenoptera(HYMENOPTERA_TAR, out)
    data = ("data=imagefolder", f"data.root={photos}", f"data.image_size={args.size}", f"trainer.epochs={args.epochs}")
    ways = {"scratch": (), "finetune from the file": ("transfer=finetune", f"model.weights={weights}")}
    rows: dict[str, list[dict]] = {way: [] for way in ways}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for way, extra in ways.items():
            name = way.split()[0]
            rows[way].append(cnnbench(out / f"{name}-{seed}", *MODEL, *data, *extra, f"trainer.seed={seed}"))

    print(f"\ntimm resnet18 on the hymenoptera photos at {args.size} px, {args.epochs} epochs, "
          f"{rows['scratch'][0]['steps']} steps; test on val/ (153 photos); seeds {args.seeds}")
    print("| start | test accuracy (mean ± sd) | per seed | training time (mean) |")
    print("|---|---:|---|---:|")
    for way, results in rows.items():
        accs = [r["test_acc"] for r in results]
        print(f"| {way} | {statistics.fmean(accs):.2f} ± {statistics.pstdev(accs):.2f}% | "
              f"{', '.join(f'{a:.2f}' for a in accs)} | {statistics.fmean(r['train_time_s'] for r in results):.0f} s |")
    print(f"\nwhole demo {(time.time() - start) / 60:.1f} min; machine: {results[0]['machine']}, "
          f"precision {results[0]['precision']}")


if __name__ == "__main__":
    main()
