"""Train small_resnet briefly on the real CIFAR-10 and draw what its first layer sees (docs/feature_maps.png).

    python -m scripts.docs.feature_maps_demo [--steps 300] [--shared ../shared]

Each row: a test image, then 8 of the first conv layer's 64 maps for it (each scaled on its own). Also prints the
time spent logging feature-map and filter images against the training time (the overhead of logger defaults).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.utils import make_grid, save_image

from scripts.runs import ROOT, extract_cifar10, run_cnnbench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "feature_maps.png")
    args = parser.parse_args()

    from cnnbench.finished_run import load_finished_run
    from cnnbench.pictures import capture, denormalize

    tmp = Path(tempfile.mkdtemp(prefix="cnnbench-demo-"))
    root = extract_cifar10(args.shared / "datasets" / "cifar10-jpg.tar.gz", tmp)
    run_dir = tmp / "run"
    results = run_cnnbench(run_dir, "data=imagefolder", f"data.root={root}", "model=small_resnet",
                           f"trainer.max_steps={args.steps}", "trainer.epochs=1", "data.num_test=2000",
                           "logger.snapshots=1000", "logger.print_config=false")
    print(f"test accuracy after {results['steps']} steps: {results['test_acc']:.2f}%")
    print(f"image logging {results['image_logging_s']:.2f} s against {results['train_time_s']:.1f} s of training "
          f"({100 * results['image_logging_s'] / results['train_time_s']:.2f}%)")

    trained = load_finished_run(run_dir)
    cfg, model = trained.cfg, trained.model
    from cnnbench.data import load_data, make_loaders

    data = load_data(cfg.data)
    loader = make_loaders(data, cfg.data, torch.device("cpu"), seed=0, channels_last=False)["test"]
    picks = [int((data.test.labels == c).nonzero()[0]) for c in range(0, 10, 2)]  # one image of 5 classes
    x = loader.normalize(data.test.images[picks])
    maps = capture(model, x, ["stem.0"])["stem.0"]  # (5, 64, 32, 32)
    tiles = []
    for i in range(len(picks)):
        tiles.append(denormalize(x[i:i + 1].float(), loader.mean, loader.std)[0])
        m = maps[i, :8]
        lo, hi = m.amin((1, 2), keepdim=True), m.amax((1, 2), keepdim=True)
        tiles += list(((m - lo) / (hi - lo).clamp_min(1e-8))[:, None].expand(-1, 3, -1, -1))
    grid = make_grid(F.interpolate(torch.stack(tiles), scale_factor=2, mode="nearest"), nrow=9, padding=2,
                     pad_value=1.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
