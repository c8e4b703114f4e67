"""Training throughput from each data source: the same CIFAR-10 JPEGs as a folder, as WebDataset shards and as a
Hugging Face dataset on disk, in memory and streamed.

    python -m scripts.bench.sources [--steps 200] [--work DIR] [--write]

Converts the real CIFAR-10 JPEGs once (``cnnbench-data to-webdataset``; ``datasets`` from the folder's files, saved
to disk), then trains small_resnet for ``--steps`` steps at batch 128 from each and prints the training images/s
each run reports (its throughput over the steps; decoding before training is not in it), with the conversion
times. ``--write`` puts the table into docs/training.md. Figures, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from scripts.runs import CIFAR_TAR, ROOT, extract_cifar10, run_cnnbench, write_between_markers

QUIET = ["logger.print_config=false", "logger.progress=false", "logger.snapshots=0", "logger.figures=false",
         "logger.tensorboard=false", "model=small_resnet", "data.mean=[0.4914,0.4822,0.4465]",
         "data.std=[0.2470,0.2435,0.2616]", "data.val_fraction=0"]


def convert(folder: Path, work: Path) -> dict[str, float]:
    """The folder as shards and as a Hugging Face dataset on disk (once); seconds each took."""
    took = {}
    shards = work / "shards"
    if not shards.is_dir():
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "cnnbench.commands.data_tools", "to-webdataset", f"src={folder}",
                        f"out={shards}", "shard_size=5000"], check=True, cwd=ROOT)
        took["shards"] = time.perf_counter() - start
    hf = work / "hf"
    if not hf.is_dir():
        import datasets

        from cnnbench.data.folders import scan_folder

        start = time.perf_counter()
        splits = {}
        for split in ("train", "test"):
            paths, labels, classes = scan_folder(folder / split)
            features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
            splits[split] = datasets.Dataset.from_dict({"image": paths, "label": labels.tolist()},
                                                       features=features)
        datasets.DatasetDict(splits).save_to_disk(str(hf))
        took["hf"] = time.perf_counter() - start
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnnbench_sources"))
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    folder = extract_cifar10(CIFAR_TAR, args.work)
    took = convert(folder, args.work)
    shards = args.work / "shards"
    trains = len(list(shards.glob("train-*.tar")))
    tests = len(list(shards.glob("test-*.tar")))
    sources = {
        "folder, decoded into memory": ["data=imagefolder", f"data.root={folder}"],
        "folder, streamed (data.max_memory_gb=0.001)": ["data=imagefolder", f"data.root={folder}",
                                                        "data.max_memory_gb=0.001"],
        "WebDataset shards, streamed": ["data=webdataset",
                                        f'data.shards="{shards}/train-{{000000..{trains - 1:06d}}}.tar"',
                                        f'data.test_shards="{shards}/test-{{000000..{tests - 1:06d}}}.tar"'],
        "Hugging Face dataset on disk, decoded into memory": ["data=hf", f"data.path={args.work / 'hf'}"],
        "Hugging Face dataset on disk, streamed": ["data=hf", f"data.path={args.work / 'hf'}",
                                                   "data.max_memory_gb=0.001"],
    }
    lines = ["| source | training images/s | test accuracy |", "|---|---:|---:|"]
    for name, extra in sources.items():
        run = args.work / f"run_{len(lines)}"
        results = run_cnnbench(run, *QUIET, *extra, f"trainer.max_steps={args.steps}", "trainer.epochs=1",
                               cwd=args.work, reuse=True)
        lines.append(f"| {name} | {results['train_images_per_s']:.0f} | {results['test_acc']:.2f}% |")
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(f"Conversions: {', '.join(f'{k} {v:.0f} s' for k, v in took.items()) or 'reused'}; machine: "
                 f"{results['machine']}, {results['precision']}.")
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_between_markers(ROOT / "docs" / "training.md", "sources", text)


if __name__ == "__main__":
    main()
