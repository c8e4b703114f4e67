"""Decoding speed of users' image folders, before and after decoding on every core (issue: users' photos).

    python -m scripts.bench.decode [--workers N] [--shared ../shared] [--device cuda]

For the real CIFAR-10 (60,000 JPEGs of 32 x 32) and the hymenoptera photos (398 JPEGs, 193 to 2592 px wide),
images/s of:
  before: one Python thread decoding file after file (what ``cnnbench`` did before), each image squashed to the
          model's square (32 px; 112 px for the photos);
  after:  ``cnnbench.data.parallel`` on ``--workers`` processes (default: every core), as the data path now
          runs: the sizes of all files read from their headers, then each decoded as its pipeline says (CIFAR:
          pad, 32 px; photos: crop at 112 px, training photos whole at 168 px, evaluation Resize(128) +
          CenterCrop(112)); the header pass is included and also shown alone;
  batched: with ``--device``, ``cnnbench.data.batch_decode`` (``data.decode_device``: JPEGs in batches, nvJPEG on
          a GPU), and how far its pixels are from the Pillow path's.
Figures, not a test; nothing else CPU-heavy should run meanwhile. Prints the machine.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from cnnbench.data.batch_decode import decode_batched
from cnnbench.data.decode import read_image
from cnnbench.data.folders import scan_folder
from cnnbench.data.parallel import decode_all, default_workers, probe_all
from cnnbench.data.pipeline import Pipeline
from cnnbench.engine.hardware import machine_name
from scripts.runs import ROOT, extract_cifar10


def files_of(root: Path) -> dict[str, list[str]]:
    return {split: scan_folder(root / split)[0] for split in ("train", "val", "test") if (root / split).is_dir()}


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:9,.0f} images/s ({seconds:6.2f} s)"


def measure(name: str, splits: dict[str, list[str]], before_size: int, pipeline: Pipeline, workers: int,
            device: str | None) -> None:
    every = [p for paths in splits.values() for p in paths]
    specs = {split: pipeline.train_resize if split == "train" else pipeline.eval_resize for split in splits}
    start = time.perf_counter()
    for p in every:
        read_image(p, 3, before_size)
    before = time.perf_counter() - start

    start = time.perf_counter()
    probe_all(every, workers)
    probed = time.perf_counter() - start
    pillow = {split: decode_all(paths, 3, specs[split], workers) for split, paths in splits.items()}
    after = time.perf_counter() - start

    start = time.perf_counter()
    for split, paths in splits.items():
        decode_all(paths, 3, specs[split], 1)
    serial = time.perf_counter() - start
    print(f"{name}: {len(every)} files")
    print(f"  before (1 thread, squashed to {before_size} px):      {rate(len(every), before)}")
    print(f"  after  ({workers} processes, pipeline {pipeline.name}):         {rate(len(every), after)}  "
          f"{before / after:.2f}x; of it, headers: {probed:.2f} s")
    print(f"  the same pipeline on 1 process, no header pass: {rate(len(every), serial)}")
    if device:  # data.decode_device: JPEGs in batches (nvJPEG on a GPU), against Pillow on the processes
        import torch

        start = time.perf_counter()
        batched = {split: decode_batched(paths, 3, specs[split], torch.device(device))
                   for split, paths in splits.items()}
        seconds = time.perf_counter() - start
        worst = max(int((batched[s].int() - pillow[s].int()).abs().max()) for s in splits)
        print(f"  batched on {device} (data.decode_device), no header pass: {rate(len(every), seconds)}  "
              f"{serial / seconds:.2f}x the 1-process Pillow path; pixels within {worst} grey levels of it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--device", help="also decode in batches on this device (cuda: nvJPEG; cpu: libjpeg)")
    args = parser.parse_args()
    datasets = args.shared / "datasets"
    if not (datasets / "cifar10-jpg.tar.gz").is_file():
        sys.exit(f"the real CIFAR-10 is not at {datasets}/cifar10-jpg.tar.gz")
    print(f"machine: {machine_name(__import__('torch').device('cpu'))}; {args.workers} decoding processes")
    with tempfile.TemporaryDirectory() as tmp:
        cifar = extract_cifar10(datasets / "cifar10-jpg.tar.gz", Path(tmp))
        measure("CIFAR-10 (real, JPEG)", files_of(cifar), 32, Pipeline("pad", 32, 32, 32), args.workers,
                args.device)
        if (datasets / "hymenoptera.tar").is_file():
            with tarfile.open(datasets / "hymenoptera.tar") as tar:
                tar.extractall(tmp, filter="data")
            photos = next(p.parent for p in Path(tmp).rglob("train") if p.is_dir() and "cifar10" not in str(p))
            measure("hymenoptera photos", files_of(photos), 112, Pipeline("crop", 112, 168, 128), args.workers,
                    args.device)


if __name__ == "__main__":
    main()
