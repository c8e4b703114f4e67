"""Training throughput of small_resnet on the real CIFAR-10 at batch 128, three ways, same number of steps:

  (a) the reference loop: torchvision ImageFolder + RandomCrop/RandomHorizontalFlip/ToTensor/Normalize,
      DataLoader(2 workers), fp32, a plain SGD step;
  (b) `cnnbench` at its defaults (device-resident uint8 data, batched augmentation, bf16 autocast where the
      hardware has it, channels_last), read from its results.json;
  (c) a minimal hand-written loop on cnnbench's data path and precision: the trainer's overhead is (c) vs (b);
  (d) the training step alone on one batch held in memory, fp32 and cnnbench's precision: the ceiling that
      the hardware sets on (b) / (a).

    python -m scripts.bench.throughput [--steps 100] [--warmup 10] [--device cpu|cuda] [--shared ../shared]
                                       [--compile-mode reduce-overhead]

Each is timed over ``steps`` steps after ``warmup`` untimed ones (DataLoader workers starting, oneDNN creating its
kernels), the steady state; for (b), whose trainer times whole epochs, as the rate of the epochs after the first
when warmup + steps cover two epochs or more (351 steps each), else as the difference between a run of warmup +
steps and one of warmup steps. ``--compile-mode M`` adds (b) with ``trainer.compile=true trainer.compile_mode=M``
(reduce-overhead: the step replayed as CUDA graphs on a GPU). Figures, not a test: prints the machine (CPU model
and flags), images/s of each, the ratios, and each one's model FLOPs utilisation: 6 x forward MACs per image
against the machine's dense-GEMM peak in the variant's precision (cnnbench.engine.hardware).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from scripts.runs import ROOT, extract_cifar10, run_cnnbench

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
BATCH = 128


def timed_steps(loader, warmup: int, steps: int, channels_last: bool, autocast, device: torch.device) -> float:
    """Images/s of ``steps`` plain SGD steps of a fresh small_resnet on batches from ``loader``, after
    ``warmup`` untimed ones."""
    from cnnbench.models import build_model

    torch.manual_seed(0)
    model = build_model("small_resnet", num_classes=10, in_channels=3, image_size=32).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    # pass after pass: warmup + steps may be more than one epoch of batches (351 at batch 128)
    for i, (x, y) in enumerate(itertools.chain.from_iterable(itertools.repeat(loader))):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast():
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i + 1 == warmup:
            loss.item()  # wait for the warm-up steps
            start = time.perf_counter()
        if i + 1 == warmup + steps:
            break
    loss.item()  # wait for the last step
    return steps * BATCH / (time.perf_counter() - start)


def reference_loop(root: Path, warmup: int, steps: int, device: torch.device) -> float:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder


    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    loader = torch.utils.data.DataLoader(ImageFolder(str(root / "train"), transform=tf), batch_size=BATCH,
                                         shuffle=True, num_workers=2, drop_last=True,
                                         pin_memory=device.type == "cuda")
    return timed_steps(loader, warmup, steps, channels_last=False, autocast=contextlib.nullcontext, device=device)


def cnnbench_run(root: Path, steps: int, work: Path, device: torch.device, *extra: str) -> dict:
    return run_cnnbench(work / f"run{steps}{'_compiled' if extra else ''}", "data=imagefolder", f"data.root={root}",
                        "model=small_resnet", f"trainer.device={device}", f"trainer.epochs={steps // 351 + 1}",
                        f"trainer.max_steps={steps}", "logger.print_config=false", f"data.cache_dir={work / 'cache'}",
                        *extra, quiet=True)


def steady_rate(root: Path, warmup: int, steps: int, work: Path, device: torch.device, *extra: str) -> tuple:
    """(b): cnnbench's images/s after its start-up, and its results.json. Over the epochs after the first when
    the run has two or more, else the difference of a run of warmup + steps and one of warmup steps."""
    results = cnnbench_run(root, warmup + steps, work, device, *extra)
    later, done = [], results["history"][0]["step"]
    for epoch in results["history"][1:]:
        later.append(((epoch["step"] - done) * BATCH, epoch["train/images_per_s"]))
        done = epoch["step"]
    if later:
        return sum(n for n, _ in later) / sum(n / rate for n, rate in later), results
    short = cnnbench_run(root, warmup, work, device, *extra)
    timed = results["train_time_s"] - short["train_time_s"]
    if timed < 0.2 * results["train_time_s"]:  # start-up noise (a GPU's lazy init, cuDNN's autotuning) dominates
        print(f"(b) unresolved: {warmup} + {steps} steps took {results['train_time_s']:.1f} s and {warmup} steps "
              f"{short['train_time_s']:.1f} s; raise --steps")
        return float("nan"), results
    return steps * BATCH / timed, results


def hand_loop(root: Path, warmup: int, steps: int, work: Path, device: torch.device) -> float:
    from hydra import compose, initialize_config_module

    from cnnbench.config import register_configs
    from cnnbench.data import load_data, make_loaders
    from cnnbench.engine.runtime import resolve_precision

    register_configs()
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["data=imagefolder", f"data.root={root}",
                                                       f"data.cache_dir={work / 'cache'}"])
    precision = resolve_precision("auto", device)
    loader = make_loaders(load_data(cfg.data), cfg.data, device, seed=0, channels_last=True)["train"]
    return timed_steps(loader, warmup, steps, channels_last=True, autocast=precision.autocast, device=device)


def step_only(warmup: int, steps: int, channels_last: bool, autocast, device: torch.device) -> float:
    """(d): no data path at all, the same synthetic batch every step."""
    torch.manual_seed(0)
    x, y = torch.randn(BATCH, 3, 32, 32, device=device), torch.randint(0, 10, (BATCH,), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return timed_steps([(x, y)], warmup, steps, channels_last, autocast, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--device", type=torch.device, default=torch.device("cpu"))
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--compile-mode", help="also (b) with trainer.compile=true and this trainer.compile_mode")
    args = parser.parse_args()
    dev = args.device
    # As cnnbench (and torchvision's reference scripts) do outside deterministic mode: cuDNN picks the fastest
    # convolution algorithm per shape. Without it the in-process loops (a, c, d) ran slower than (b) on a GPU.
    torch.backends.cudnn.benchmark = True
    work = Path(tempfile.mkdtemp(prefix="cnnbench-bench-"))
    root = extract_cifar10(args.shared / "datasets" / "cifar10-jpg.tar.gz", work)

    b, results = steady_rate(root, args.warmup, args.steps, work, dev)  # first: builds the cache (c) reads
    mode = ("trainer.compile=true", f"trainer.compile_mode={args.compile_mode}") if args.compile_mode else ()
    b_compiled = steady_rate(root, args.warmup, args.steps, work, dev, *mode)[0] if mode else None
    c = hand_loop(root, args.warmup, args.steps, work, dev)
    a = reference_loop(root, args.warmup, args.steps, dev)
    from cnnbench.anatomy import count_macs
    from cnnbench.engine.hardware import machine_name, peak_tflops
    from cnnbench.engine.runtime import resolve_precision
    from cnnbench.models import build_model

    d32 = step_only(args.warmup, args.steps, channels_last=False, autocast=contextlib.nullcontext, device=dev)
    d16 = step_only(args.warmup, args.steps, channels_last=True, autocast=resolve_precision("auto", dev).autocast,
                    device=dev)
    flops = 6 * count_macs(build_model("small_resnet", num_classes=10, in_channels=3, image_size=32), (3, 32, 32))
    peaks = {p: peak_tflops(dev, p) for p in {"fp32", results["precision"]}}

    def mfu(images_per_s: float, precision: str) -> str:
        tflops = flops * images_per_s / 1e12
        return f"{tflops:.3f} TFLOP/s, MFU {100 * tflops / peaks[precision]:4.1f}%"

    p = results["precision"]
    print(f"machine: {machine_name(dev)}; peak (dense GEMM): "
          + ", ".join(f"{k} {v:.2f} TFLOP/s" for k, v in sorted(peaks.items())))
    print(f"small_resnet, batch {BATCH}, {args.steps} steps after {args.warmup} warm-up steps, "
          f"{torch.get_num_threads()} threads, cnnbench precision {p}, {flops / 1e9:.2f} GFLOP per training image")
    print(f"(a) reference loop (ImageFolder + PIL transforms, 2 workers, fp32): {a:8.1f} images/s  {mfu(a, 'fp32')}")
    print(f"(b) cnnbench defaults:                                          {b:8.1f} images/s  {mfu(b, p)}  "
          f"({b / a:.2f}x (a))")
    if b_compiled is not None:
        print(f"(b) with torch.compile, mode {args.compile_mode}:{' ' * (21 - len(args.compile_mode))}"
              f"{b_compiled:8.1f} images/s  {mfu(b_compiled, p)}  ({b_compiled / b:.2f}x (b))")
    print(f"(c) hand-written loop on cnnbench's data path and precision:   {c:8.1f} images/s  {mfu(c, p)}  "
          f"(cnnbench is {100 * (b / c - 1):+.1f}% against it)")
    print(f"(b) with its warm-up steps counted, as cnnbench reports it:    {results['train_images_per_s']:8.1f} "
          f"images/s  MFU {100 * results['mfu']:4.1f}% (results.json)")
    print(f"(d) the step alone on a batch in memory: fp32 {d32:.1f} images/s ({mfu(d32, 'fp32')}), {p} + "
          f"channels_last {d16:.1f} images/s ({mfu(d16, p)}): {d16 / d32:.2f}x; with (a)'s data path that bounds "
          f"(b) / (a) at {d16 / a:.2f}x")

if __name__ == "__main__":
    main()
