"""The pictures of docs/explain.md: why three trained networks decide, and their receptive fields.

    python -m scripts.docs.explain_demo [--out docs/explain] [--work DIR] [--shared ../shared]

Trains, as a user types it: LeNet-5 on the bundled digits (`cnnbench`, the default run), small_resnet on the real
CIFAR-10 JPEGs (300 steps) and resnet18 on the hymenoptera photos at 112 px (8 epochs), each only when its data
is there. Then for each run `cnnbench-visualize run=<dir> explain=<method>` (Grad-CAM for all three; saliency,
integrated gradients and occlusion for the digits) and `cnnbench-inspect` for the receptive-field pictures, and
copies every card into ``--out`` with the receptive-field cards the runs drew in TensorBoard. Prints each run's
test accuracy and how long its pictures took (``image_logging_s``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.runs import CIFAR_TAR, ROOT, extract_cifar10, extract_hymenoptera, run_cnnbench

METHODS = ("gradcam", "saliency", "integrated_gradients", "occlusion")


def runs(work: Path, shared: Path) -> dict[str, tuple[str, ...]]:
    """Each example's name and overrides, for the data that is there."""
    examples = {"digits_lenet5": ("logger.progress=false",)}
    if CIFAR_TAR.is_file():
        root = extract_cifar10(CIFAR_TAR, work)
        examples["cifar10_small_resnet"] = (
            "data=imagefolder", f"data.root={root}", "data.image_size=32", "model=small_resnet", "trainer.epochs=1",
            "trainer.max_steps=300", "data.batch_size=64", "logger.progress=false")
    photos = shared / "datasets" / "hymenoptera.tar"
    if photos.is_file():
        examples["photos_resnet18"] = ("data=imagefolder", f"data.root={extract_hymenoptera(photos, work)}",
                                       "data.image_size=112", "model=resnet18", "trainer.epochs=8",
                                       "logger.progress=false")
    return examples


def tool(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(args)} failed\n{proc.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "explain")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="explain_demo_"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, overrides in runs(work, args.shared).items():
        run_dir = work / name
        results = run_cnnbench(run_dir, *overrides, "logger.print_config=false", "trainer.resume=continue_or_start",
                               quiet=True)  # (an earlier --work's completed run is kept as it is)
        print(f"{name}: test acc {results['test_acc']:.2f}%, pictures {results['image_logging_s']:.1f} s of "
              f"{results['train_time_s']:.0f} s training")
        for method in METHODS if name.startswith("digits") else ("gradcam",):
            tool("cnnbench.commands.visualize", f"run={run_dir}", f"explain={method}",
                 f"out={args.out / f'{name}_{method}.png'}", "overwrite=true")
        shutil.copy(run_dir / "figures" / "receptive_field_end.png", args.out / f"{name}_receptive_field_end.png")
    tool("cnnbench.commands.inspect_model", "model=small_resnet", "data=cifar10",
         f"out={args.out / 'inspect_small_resnet_receptive_field.png'}")
    tool("cnnbench.commands.inspect_model", "model=resnet18", "data=imagefolder", "data.image_size=224",
         "data.num_classes=2", f"out={args.out / 'inspect_resnet18_224_receptive_field.png'}")
    print(f"pictures in {args.out}; runs in {work}")


if __name__ == "__main__":
    main()
