"""CIFAR-10 speed records' own code beside cnnbench's speedruns, seed by seed, on the same machine and data.

    python -m scripts.compare.records --record NAME=PATH [--record NAME=PATH ...]
        [--experiment cifar10_speedrun_muon[,cifar10_speedrun_2s]] [--seeds 0,1,2] [--device cpu|cuda]
        [--compile] [--epochs E] [--keep-host-memory] [--work DIR] [--shared ../shared] [--write MARKER]
        [extra cnnbench overrides ...]

NAME is airbench94, airbench94_muon or hiverge; PATH is your copy of its file; cnnbench does not ship them
(``RECORDS`` says where each comes from). The script runs each file's own code (network, data loader, optimizer,
schedule, TTA), changed only where its ``adaptations`` list, every change checked: a file without one of those
lines is refused in one line. The files read CIFAR-10 from the JPEG folder of ../shared (decoded once into the
``cifar10/train.pt`` and ``test.pt`` they load), and on the CPU run in the dtype cnnbench's ``precision=auto``
picks there (bf16 where oneDNN has native bf16 kernels, else fp32) instead of fp16 on CUDA. ``torch.compile``
runs on every side or on none: without ``--compile`` a record's ``torch.compile`` hands back its function as it
is and cnnbench trains eager; with it, each record compiles as published (after its untimed warm-up run, as its
``__main__`` does) and cnnbench gets ``trainer.compile=true``.

Every side runs each seed in a process of its own, back to back, each seed starting with another side so that
the machine's drift falls on all. Training time is the same span on every side: the training steps (a record's
own timer less its whitening initialisation and final TTA evaluation; cnnbench's ``train_time_s``). Prints
accuracy per seed, its mean, the mean training time and each side's speed relative to the first record's;
``--write MARKER`` puts the table between those markers of docs/speed.md. ``--keep-host-memory`` gives the
records' processes the malloc settings of ``trainer.keep_host_memory``. Figures, not a test.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnbench.data.batch_decode import decode_batched
from cnnbench.data.decode import Resize
from cnnbench.engine.host_memory import keep_freed_memory
from cnnbench.engine.runtime import cpu_supports_bf16
from scripts.compare.speedrun import run_seed
from scripts.runs import ROOT, experiments, extract_cifar10, overrides_only, write_between_markers

AIRBENCH = "github.com/KellerJordan/cifar10-airbench (MIT licence, (c) 2024 Keller Jordan)"
# (text in the file, what replaces it, why): each must be found
TIMER = (("torch.cuda.Event(enable_timing=True)", "Event()", "its timer on any device"),
         ("torch.cuda.synchronize()", "synchronize()", "wait for the device before reading the timer"))
ON_DEVICE = (('map_location=torch.device("cuda")', "map_location=DEVICE", "load the data onto the device asked for"),
             ("self.images.half()", "self.images.to(DTYPE)", "images in the run's dtype (fp16 on CUDA)"),
             ("mod.half()", "mod.to(DTYPE)", "the network in the run's dtype"))


@dataclass(frozen=True)
class Record:
    """What the script knows of one record's file."""

    name: str  # --record
    title: str
    source: str  # where the user's copy comes from
    adaptations: tuple[tuple[str, str, str], ...]
    epochs: float  # its own number of epochs (the text ``EPOCHS`` replaces, where it has one)
    time_key: str  # the variable its final log line reads the timer from
    main_takes_model: bool  # main(run, model) with the model built by its __main__; else main(seed)
    compiles: bool = True  # published with torch.compile


RECORDS = {r.name: r for r in (
    Record(
        "airbench94", "airbench94", f"legacy/airbench94.py of {AIRBENCH}",
        (("map_location=torch.device(gpu)", "map_location=DEVICE", "load the data onto the device asked for"),
         ("self.images.half()", "self.images.to(DTYPE)", "images in the run's dtype (fp16 on CUDA)"),
         ("net.half().cuda()", "net.to(DTYPE).to(DEVICE)", "the network in the run's dtype, on its device"),
         ("(torch.half, torch.float)", "(DTYPE, torch.float)", "lookahead averages the weights in the run's dtype"),
         ("'train_epochs': 9.9", "'train_epochs': EPOCHS", "its epochs (shorter ones for quick checks)"),
         *TIMER),
        9.9, "total_time_seconds", False, compiles=False),
    Record(
        "airbench94_muon", "airbench94_muon", f"airbench94_muon.py of {AIRBENCH}",
        (*ON_DEVICE,
         ("ceil(8 * len(train_loader))", "ceil(EPOCHS * len(train_loader))", "its epochs (shorter for quick checks)"),
         *TIMER),
        8, "time_seconds", True),
    Record(
        "hiverge", "hiverge's cifar10_speedrun",  "cifar10_speedrun.py of github.com/hiverge/cifar10-speedrun",
        (*ON_DEVICE,
         ('device="cuda"', "device=DEVICE", "its index buffer on the device asked for"),
         (".pin_memory()", "", "its staging buffer (never read) unpinned: pinning needs CUDA"),
         ("torch.half", "DTYPE", "normalisation constants and Muon's momentum in the run's dtype"),
         ("ceil(7.59 * len(train_loader))", "ceil(EPOCHS * len(train_loader))",
          "its epochs (shorter for quick checks)"),
         *TIMER),
        7.59, "time_seconds", True),
)}


class WallEvent:
    """``torch.cuda.Event`` for the CPU: ``record()`` notes the time, ``elapsed_time`` is in milliseconds."""

    def record(self) -> None:
        self.t = time.perf_counter()

    def elapsed_time(self, end: WallEvent) -> float:
        return 1e3 * (end.t - self.t)


def adapted_source(record: Record, path: Path) -> str:
    """The file's text with the record's adaptations made; exits with one line when one is not there."""
    if not path.is_file():
        sys.exit(f"--record {record.name}={path}: no such file (this compares with your copy of {record.source})")
    source = path.read_text()
    for old, new, why in record.adaptations:
        if old not in source:
            sys.exit(f"--record {record.name}={path}: no {old!r} in it (needed to {why}); --record {record.name} "
                     f"runs {record.source}")
        source = source.replace(old, new)
    return source


def load_record(record: Record, path: Path, device: torch.device, epochs: float, compiled: bool) -> types.ModuleType:
    """The record's file, adapted and executed as a module (its ``__main__`` not run)."""
    source = adapted_source(record, path)
    module = types.ModuleType(path.stem)
    module.__file__ = str(path)
    cuda = device.type == "cuda"
    module.__dict__.update(
        DEVICE=device, EPOCHS=epochs or record.epochs,
        DTYPE=torch.half if cuda else (torch.bfloat16 if cpu_supports_bf16() else torch.float32),
        Event=(lambda: torch.cuda.Event(enable_timing=True)) if cuda else WallEvent,
        synchronize=torch.cuda.synchronize if cuda else (lambda: None),
    )
    if not compiled:  # its decorators (@torch.compile, @torch.compile(...)) hand back the function itself
        torch.compile = lambda fn=None, **_: fn if fn is not None else (lambda f: f)
    exec(compile(source, str(path), "exec"), module.__dict__)
    return module


def record_child(name: str, path: Path, data: Path, seed: int, device: str, epochs: float, out: Path, keep: bool,
                 compiled: bool) -> None:
    """One run of the record (in this process): its accuracy and the time of its training steps, to ``out``."""
    if keep and not keep_freed_memory():
        sys.exit("--keep-host-memory: this C library has no mallopt (glibc's malloc only)")
    record = RECORDS[name]
    dev = torch.device(device)
    rec = load_record(record, path, dev, epochs, compiled)
    spent = {"whiten": 0.0, "tta": 0.0}

    def timed(what, fn):
        def wrapper(*args, **kwargs):
            rec.synchronize()
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            rec.synchronize()
            spent[what] += time.perf_counter() - start
            return result
        return wrapper

    evaluate, final, loaders = rec.evaluate, {}, []

    class Recorded(rec.CifarLoader):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            loaders.append(self)

    rec.CifarLoader = Recorded
    if hasattr(rec, "init_whitening_conv"):  # airbench94: a function; the others: a method of the network
        rec.init_whitening_conv = timed("whiten", rec.init_whitening_conv)
    else:
        rec.CifarNet.init_whiten = timed("whiten", rec.CifarNet.init_whiten)
    rec.evaluate = lambda model, loader, tta_level=0: (timed("tta", evaluate) if tta_level else evaluate)(
        model, loader, tta_level)
    show = rec.print_training_details

    def keep_final(variables, is_final_entry):
        if is_final_entry:
            final.update(total=variables[record.time_key], acc=variables["tta_val_acc"])
        show(variables, is_final_entry)

    rec.print_training_details = keep_final
    os.chdir(data.parent)  # the files read ./cifar10/{train,test}.pt
    if record.main_takes_model:
        model = rec.CifarNet().to(dev).to(memory_format=torch.channels_last)
        if compiled:  # as its __main__: compiled once, warmed up by an untimed run
            model.compile(mode="max-autotune")
            rec.main("warmup", model)
            loaders.clear()
        spent.update(whiten=0.0, tta=0.0)
        torch.manual_seed(seed)
        rec.main(seed, model)
    else:
        torch.manual_seed(seed)
        rec.main(seed)
    steps = math.ceil(len(next(d for d in loaders if d.shuffle)) * rec.EPOCHS)
    used = resource.getrusage(resource.RUSAGE_SELF)
    out.write_text(json.dumps({"test_acc": 100 * final["acc"], "train_time_s": final["total"] - sum(spent.values()),
                               "steps": steps, "dtype": str(rec.DTYPE).removeprefix("torch."), "epochs": epochs,
                               "keep_host_memory": keep, "compiled": compiled and record.compiles,
                               "kernel_s": used.ru_stime, "user_s": used.ru_utime}))


def run_record(name: str, path: Path, data: Path, seed: int, device: str, epochs: float, work: Path, keep: bool,
               compiled: bool) -> dict:
    """One run of the record in a process of its own; a finished one in ``work`` (same settings) is reused."""
    out = work / f"{name}{'_kept' if keep else ''}{'_compiled' if compiled else ''}_seed{seed}.json"
    finished = json.loads(out.read_text()) if out.exists() else {}
    if finished.get("epochs") == epochs:
        print(f"{name} seed {seed}: reusing {out}", flush=True)
        return finished
    subprocess.run([sys.executable, "-m", "scripts.compare.records", "--child", name, str(path), str(data), str(seed),
                    device, str(epochs), str(out), str(int(keep)), str(int(compiled))], check=True, cwd=ROOT)
    return json.loads(out.read_text())


def write_tensors(root: Path, into: Path) -> None:
    """The JPEG folder as the records' ``train.pt`` / ``test.pt`` (uint8 NHWC images, labels, class names), once."""
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


@dataclass
class Side:
    """One side of the comparison: a record's file or a cnnbench experiment, and its runs by seed."""

    label: str
    run: Callable[[int], dict]
    runs: dict[int, dict] = field(default_factory=dict)


def table(sides: list[Side]) -> str:
    """Accuracy per seed, mean ± std, mean training time and speed relative to the first side, one row a side."""
    seeds = sorted(sides[0].runs)
    reference = statistics.mean(r["train_time_s"] for r in sides[0].runs.values())
    rows = [f"| side | test accuracy (seeds {', '.join(map(str, seeds))}) | mean ± std | training time (mean) | "
            f"speed vs {sides[0].label.split(' (')[0]} |", "|---|---|---:|---:|---:|"]
    for side in sides:
        accs = [side.runs[s]["test_acc"] for s in seeds if s in side.runs]
        times = [side.runs[s]["train_time_s"] for s in seeds if s in side.runs]
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        rows.append(f"| {side.label} | {', '.join(f'{a:.2f}' for a in accs)} | "
                    f"**{statistics.mean(accs):.2f}{spread}%** | {statistics.mean(times):.1f} s | "
                    f"**{reference / statistics.mean(times):.2f}x** |")
    notes = []
    for side in sides:
        r = next(iter(side.runs.values()))
        if "mfu" in r:  # cnnbench's
            notes.append(f"{side.label}: {r['precision']}, {r['steps']} steps, MFU {100 * r['mfu']:.1f}% of "
                         f"{r['peak_tflops']:.2f} TFLOP/s")
        else:
            allocator = "freed memory kept" if r.get("keep_host_memory") else "glibc's default"
            notes.append(f"{side.label}: {r['dtype']}, {r['steps']} steps, malloc: {allocator}")
    machine = next(r["machine"] for s in sides for r in s.runs.values() if "machine" in r)
    return "\n".join(rows) + f"\n\n{machine}; torch {torch.__version__}; " + "; ".join(notes)


def cnnbench_side(device: str, compiled: bool) -> list[str]:
    """cnnbench's overrides beside the records: their device, compiled or not (shared by the ablation, whose
    unchanged rows are these runs)."""
    return [f"trainer.device={device}", f"trainer.compile={str(compiled).lower()}"]


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        name, path, data, seed, device, epochs, out, keep, compiled = sys.argv[2:11]
        return record_child(name, Path(path), Path(data), int(seed), device, float(epochs), Path(out), keep == "1",
                            compiled == "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="append", required=True, metavar="NAME=PATH",
                        help=f"a record ({', '.join(RECORDS)}) and your copy of its file; repeatable (the first is "
                             "the one speeds are relative to)")
    parser.add_argument("--experiment", default="cifar10_speedrun_muon",
                        help="cnnbench's side: comma-separated experiments (default: %(default)s)")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--epochs", type=float, default=0,
                        help="a shorter run of every side (quick checks; default: each side's own)")
    parser.add_argument("--work", type=Path, help="folder for the unpacked data and the runs (default: a new one); "
                        "the records' runs finished there are reused")
    parser.add_argument("--compile", action="store_true", help="torch.compile on every side (default: none)")
    parser.add_argument("--keep-host-memory", action="store_true",
                        help="the records under trainer.keep_host_memory's malloc settings (default: as published)")
    parser.add_argument("--write", metavar="MARKER", help="write the table between these markers of docs/speed.md")
    parser.add_argument("--check", action="store_true",
                        help="check the record files and experiments, run nothing (before hours of runs)")
    args, extra = parser.parse_known_args()
    extra = overrides_only(parser.prog, extra)
    records = []  # everything the runs need is checked before anything is unpacked
    for spec in args.record:
        name, _, path = spec.partition("=")
        if name not in RECORDS or not path:
            sys.exit(f"--record {spec}: expected NAME=PATH with NAME one of {', '.join(RECORDS)}")
        adapted_source(RECORDS[name], Path(path))
        records.append((name, Path(path).resolve()))
    unknown = sorted(set(args.experiment.split(",")) - set(experiments()))
    if unknown:
        sys.exit(f"--experiment {','.join(unknown)}: no such experiment; cnnbench has {', '.join(experiments())}")
    if args.check:
        for name, path in records:
            print(f"{name}: {path}: every line to change found ({len(RECORDS[name].adaptations)})")
        return print(f"experiments: {args.experiment}")
    work = args.work or Path(tempfile.mkdtemp(prefix="cnnbench-records-"))
    work.mkdir(parents=True, exist_ok=True)
    root = extract_cifar10(args.shared / "datasets" / "cifar10-jpg.tar.gz", work)
    data = work / "tensors" / "cifar10"
    write_tensors(root, data)
    extra = [*cnnbench_side(args.device, args.compile), *extra] + (
        [f"trainer.epochs={math.ceil(args.epochs)}"] if args.epochs else [])
    mode = "compiled" if args.compile else "eager"
    sides = [Side(f"{RECORDS[n].title} ({mode if RECORDS[n].compiles else 'eager'})",
                  lambda s, n=n, f=f: run_record(n, f, data, s, args.device, args.epochs, work, args.keep_host_memory,
                                                 args.compile)) for n, f in records]
    sides += [Side(f"cnnbench `experiment={e}` ({mode})",  # compiled runs beside, not over, the eager ones
                   lambda s, e=e: run_seed(root, s, work, extra, e, name=f"{e}_compiled" if args.compile else None))
              for e in args.experiment.split(",")]
    for i, seed in enumerate(args.seeds):  # each seed starts with another side: the machine's drift falls on all
        for side in sides[i % len(sides):] + sides[:i % len(sides)]:
            side.runs[seed] = side.run(seed)
        print(table(sides), flush=True)
    if args.write:
        write_between_markers(ROOT / "docs" / "speed.md", args.write, table(sides))


if __name__ == "__main__":
    main()
