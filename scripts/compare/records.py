"""airbench94's own code beside `experiment=cifar10_speedrun`, seed by seed, on the same machine and the same data.

    python -m scripts.compare.airbench --airbench94 PATH/airbench94.py [--seeds 0,1,2] [--device cpu|cuda]
                                       [--experiment cifar10_speedrun_muon] [--shared ../shared] [--write]
                                       [--airbench-keep-host-memory]
                                       [extra cnnbench overrides ...]

PATH is your copy of ``legacy/airbench94.py`` from https://github.com/KellerJordan/cifar10-airbench (MIT licence,
(c) 2024 Keller Jordan); it is not shipped with cnnbench. The script runs that file's own ``main()`` (network,
data loader, schedule, lookahead, TTA) changed in the few places listed in ``ADAPTATIONS`` only: it reads
CIFAR-10 from the JPEG folder of ../shared (decoded once into the ``train.pt`` / ``test.pt`` the file itself
loads), and on the CPU it runs in the dtype cnnbench's ``precision=auto`` picks there (bf16 where oneDNN has native
bf16 kernels, else fp32) instead of fp16 on CUDA. On a GPU nothing but the data folder changes.

For each seed both run back to back, each in a process of its own, the order alternating from seed to seed so
that the machine's drift falls on both. Training time is the same span on both sides: the epochs' training steps
(airbench's own timer minus its whitening initialisation and final TTA evaluation; cnnbench's ``train_time_s``).
Prints accuracy, training time and cnnbench's speed as a multiple of airbench94's; with --write the table goes
between the airbench markers of docs/speed.md. Figures, not a test.

airbench94 runs with glibc's default allocator, as published. ``--airbench-keep-host-memory`` gives its process
the malloc settings of cnnbench's ``trainer.keep_host_memory`` (freed memory kept for the next step), so the two
sides differ in their algorithms only; those runs are kept apart in ``--work`` (``airbench_kept_seed*.json``)
and --write puts their table between the airbench-kept markers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from cnnbench.data.batch_decode import decode_batched
from cnnbench.data.decode import Resize
from cnnbench.engine.host_memory import keep_freed_memory
from cnnbench.engine.runtime import cpu_supports_bf16
from scripts.compare.speedrun import run_seed
from scripts.runs import ROOT, extract_cifar10, write_between_markers

# (text in airbench94.py, what replaces it, why): each must be found, or the file is not the one this script knows
ADAPTATIONS = (
    ("map_location=torch.device(gpu)", "map_location=DEVICE", "load the data onto the device asked for"),
    ("self.images.half()", "self.images.to(DTYPE)", "images in the run's dtype (fp16 on CUDA)"),
    ("net.half().cuda()", "net.to(DTYPE).to(DEVICE)", "the network in the run's dtype, on its device"),
    ("(torch.half, torch.float)", "(DTYPE, torch.float)", "lookahead averages the weights in the run's dtype"),
    ("torch.cuda.Event(enable_timing=True)", "Event()", "its timer on any device"),
    ("torch.cuda.synchronize()", "synchronize()", "wait for the device before reading the timer"),
)


class WallEvent:
    """``torch.cuda.Event`` for the CPU: ``record()`` notes the time, ``elapsed_time`` is in milliseconds."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: WallEvent) -> float:
        return 1e3 * (end.t - self.t)


def load_airbench(path: Path, device: torch.device) -> types.ModuleType:
    """airbench94.py at ``path``, adapted (``ADAPTATIONS``) and executed as a module (its ``__main__`` not run)."""
    source = path.read_text()
    for old, new, why in ADAPTATIONS:
        if old not in source:
            sys.exit(f"{path}: no {old!r} in it (needed to {why}); this script runs legacy/airbench94.py of "
                     "github.com/KellerJordan/cifar10-airbench")
        source = source.replace(old, new)
    module = types.ModuleType("airbench94")
    module.__file__ = str(path)
    cuda = device.type == "cuda"
    module.__dict__.update(
        DEVICE=device,
        DTYPE=torch.half if cuda else (torch.bfloat16 if cpu_supports_bf16() else torch.float32),
        Event=(lambda: torch.cuda.Event(enable_timing=True)) if cuda else WallEvent,
        synchronize=torch.cuda.synchronize if cuda else (lambda: None),
    )
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def write_tensors(root: Path, into: Path) -> None:
    """The JPEG folder as airbench's ``train.pt`` / ``test.pt`` (uint8 NHWC images, labels, class names), once."""
    into.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        target = into / f"{split}.pt"
        if target.exists():
            continue
        classes = sorted(p.name for p in (root / split).iterdir() if p.is_dir())  # ImageFolder's order
        files = [(f, c) for c, name in enumerate(classes) for f in sorted((root / split / name).iterdir())]
        images = decode_batched([str(f) for f, _ in files], 3, Resize("square"), torch.device("cpu"))  # at their size
        torch.save({"images": images.permute(0, 2, 3, 1).contiguous(),
                    "labels": torch.tensor([c for _, c in files]), "classes": classes}, target)


def airbench_child(path: Path, data: Path, seed: int, device: str, epochs: float, out: Path, keep: bool) -> None:
    """One airbench94 run (in this process): its accuracy and the time of its training steps, to ``out``."""
    if keep and not keep_freed_memory():
        sys.exit("--airbench-keep-host-memory: this C library has no mallopt (glibc's malloc only)")
    dev = torch.device(device)
    ab = load_airbench(path, dev)
    spent = {"whiten": 0.0, "tta": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            ab.synchronize()
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            ab.synchronize()
            spent[name] += time.perf_counter() - start
            return result
        return wrapper

    evaluate, final, loaders = ab.evaluate, {}, []

    class Recorded(ab.CifarLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append(self)

    ab.CifarLoader = Recorded
    if epochs:
        ab.hyp["opt"]["train_epochs"] = epochs
    ab.init_whitening_conv = timed("whiten", ab.init_whitening_conv)
    ab.evaluate = lambda model, loader, tta_level=0: (timed("tta", evaluate) if tta_level else evaluate)(
        model, loader, tta_level)
    show = ab.print_training_details

    def keep_final(variables, is_final_entry):
        if is_final_entry:
            final.update(total=variables["total_time_seconds"], acc=variables["tta_val_acc"])
        show(variables, is_final_entry)

    ab.print_training_details = keep_final
    os.chdir(data.parent)  # airbench reads ./cifar10/{train,test}.pt
    torch.manual_seed(seed)
    ab.main(seed)
    steps = math.ceil(len(next(d for d in loaders if d.shuffle)) * ab.hyp["opt"]["train_epochs"])
    out.write_text(json.dumps({"test_acc": 100 * final["acc"], "train_time_s": final["total"] - sum(spent.values()),
                               "steps": steps, "dtype": str(ab.DTYPE).removeprefix("torch."), "epochs": epochs,
                               "keep_host_memory": keep, **cpu_times()}))


def cpu_times() -> dict:
    """This process's CPU seconds so far, in the kernel and in user code (page faults show in the first)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return {"kernel_s": used.ru_stime, "user_s": used.ru_utime}


def run_airbench(path: Path, data: Path, seed: int, device: str, epochs: float, work: Path, keep: bool) -> dict:
    """One airbench94 run in a process of its own; a finished one in ``work`` (same seed, epochs) is reused."""
    out = work / f"airbench{'_kept' if keep else ''}_seed{seed}.json"
    finished = json.loads(out.read_text()) if out.exists() else {}
    if finished.get("epochs") == epochs:
        print(f"airbench94 seed {seed}: reusing {out}", flush=True)
        return finished
    subprocess.run([sys.executable, "-m", "scripts.compare.airbench", "--child", str(path), str(data), str(seed),
                    device, str(epochs), str(out), str(int(keep))], check=True, cwd=ROOT)
    return json.loads(out.read_text())


def table(pairs: dict[int, tuple[dict, dict]], experiment: str) -> str:
    rows = ["| seed | airbench94 accuracy | airbench94 time | cnnbench accuracy | cnnbench time | cnnbench speed |",
            "|---|---:|---:|---:|---:|---:|"]
    for seed, (a, c) in pairs.items():
        rows.append(f"| {seed} | {a['test_acc']:.2f}% | {a['train_time_s']:.1f} s | {c['test_acc']:.2f}% | "
                    f"{c['train_time_s']:.1f} s | {a['train_time_s'] / c['train_time_s']:.2f}x |")

    def mean(side: int, key: str) -> str:
        values = [p[side][key] for p in pairs.values()]
        return f"{statistics.mean(values):.2f}" + (f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else "")

    a_time = statistics.mean(p[0]["train_time_s"] for p in pairs.values())
    c_time = statistics.mean(p[1]["train_time_s"] for p in pairs.values())
    rows.append(f"| mean | **{mean(0, 'test_acc')}%** | {a_time:.1f} s | **{mean(1, 'test_acc')}%** | "
                f"{c_time:.1f} s | **{a_time / c_time:.2f}x** |")
    a, c = next(iter(pairs.values()))
    allocator = "freed memory kept" if a.get("keep_host_memory") else "glibc's default"
    rows.append(f"\n{c['machine']}; airbench94 in {a['dtype']} ({a['steps']} steps, malloc: {allocator}), cnnbench "
                f"`experiment={experiment}` in "
                f"{c['precision']} ({c['steps']} steps, MFU {100 * c['mfu']:.1f}% of {c['peak_tflops']:.2f} TFLOP/s); "
                f"torch {torch.__version__}")
    return "\n".join(rows)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        path, data, seed, device, epochs, out, keep = sys.argv[2:9]
        return airbench_child(Path(path), Path(data), int(seed), device, float(epochs), Path(out), keep == "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airbench94", type=Path, required=True, help="your copy of legacy/airbench94.py")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--epochs", type=float, default=0,
                        help="a shorter run of both (quick checks; default: each side's own: 9.9 and the experiment's)")
    parser.add_argument("--work", type=Path, help="folder for the unpacked data and the runs (default: a new one); "
                        "airbench94 runs finished there are reused")
    parser.add_argument("--experiment", default="cifar10_speedrun", help="cnnbench's side (default: %(default)s; "
                        "cifar10_speedrun_muon: 8 epochs with Muon)")
    parser.add_argument("--airbench-keep-host-memory", action="store_true",
                        help="airbench94 under trainer.keep_host_memory's malloc settings (default: as published)")
    parser.add_argument("--write", action="store_true", help="write the table into docs/speed.md")
    args, extra = parser.parse_known_args()
    if not args.airbench94.is_file():
        sys.exit(f"--airbench94 {args.airbench94}: no such file (download legacy/airbench94.py from "
                 "github.com/KellerJordan/cifar10-airbench)")
    work = args.work or Path(tempfile.mkdtemp(prefix="cnnbench-airbench-"))
    work.mkdir(parents=True, exist_ok=True)
    root = extract_cifar10(args.shared / "datasets" / "cifar10-jpg.tar.gz", work)
    write_tensors(root, work / "tensors" / "cifar10")
    extra = [f"trainer.device={args.device}", *extra] + ([f"trainer.epochs={math.ceil(args.epochs)}"] if args.epochs
                                                         else [])
    pairs = {}
    for i, seed in enumerate(args.seeds):
        sides = [lambda s=seed: run_airbench(args.airbench94.resolve(), work / "tensors" / "cifar10", s, args.device,
                                             args.epochs, work, args.airbench_keep_host_memory),
                 lambda s=seed: run_seed(root, s, work, extra, args.experiment)]
        done = [side() for side in (sides if i % 2 == 0 else sides[::-1])]
        pairs[seed] = tuple(done if i % 2 == 0 else done[::-1])
        print(table(pairs, args.experiment), flush=True)
    if args.write:
        marker = "airbench-kept" if args.airbench_keep_host_memory else "airbench"
        write_between_markers(ROOT / "docs" / "speed.md", marker, table(pairs, args.experiment))


if __name__ == "__main__":
    main()
