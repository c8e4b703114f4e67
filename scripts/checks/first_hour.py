"""A newcomer's first hour, replayed: the README's commands on the hymenoptera photos and the digits, with small
settings, each check asserted and printed.

    python -m scripts.checks.first_hour [--out DIR] [--epochs 3]

Checks: the README's photo command trains more than one step per epoch and uses every training image; every run
name of a sweep is distinct and under 60 characters; every HParams column has a value for every run; eval on two
splits leaves both results; the ONNX export of resnet18 is one self-contained file. The second hour: a misspelt
key (set or appended) names the closest one; a run fine-tuned from the photo run trains at its size; two timm
architectures get their own names and HParams rows; an explanation leaves training's files as they were. The runs
stay in
``--out/outputs`` for TensorBoard (``python -m scripts.docs.tensorboard_screenshots --logdir DIR/outputs``). Needs
../shared/datasets/hymenoptera.tar.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from scripts.runs import HYMENOPTERA_TAR as HYMENOPTERA
from scripts.runs import extract_hymenoptera

QUIET = ["logger.progress=false"]


def cnnbench(cwd: Path, *args: str, module: str = "cnnbench", fails: bool = False) -> str:
    """Run a command as a user types it; its stdout (stops the script on a non-zero exit), or with ``fails`` its
    stderr (stops the script unless it exited 2)."""
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != (2 if fails else 0):
        sys.exit(f"{module} {' '.join(args)}: exit {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc.stderr if fails else proc.stdout


def check(ok: bool, what: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}")
    if not ok:
        sys.exit(1)


def hparams_of(run_dir: Path) -> dict[str, object]:
    """The HParams values a run wrote (its session start info)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    values = {}
    for events in run_dir.glob("tensorboard/*/events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for v in event.summary.value:
                if v.tag == "_hparams_/session_start_info":
                    info = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                    for key, value in info.session_start_info.hparams.items():
                        values[key] = getattr(value, value.WhichOneof("kind"))
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not HYMENOPTERA.is_file():
        sys.exit(f"needs {HYMENOPTERA}")
    work = args.out or Path(tempfile.mkdtemp(prefix="first_hour_"))
    work.mkdir(parents=True, exist_ok=True)
    photos = extract_hymenoptera(HYMENOPTERA, work)
    out = work / "outputs"

    # 1. the README's photo command, fewer epochs
    run = out / "photos"
    printed = cnnbench(work, "data=imagefolder", f"data.root={photos}", "model=resnet18", "data.image_size=112",
                       f"trainer.epochs={args.epochs}", f"hydra.run.dir={run}", *QUIET)
    steps = int(re.search(r"(\d+) steps per epoch", printed).group(1))
    check(steps > 1, f"the README photo command trains {steps} steps per epoch")
    check("every image per epoch" in printed, "and uses every training image each epoch")
    results = __import__("json").loads((run / "results.json").read_text())
    check(results["steps"] == steps * args.epochs, f"{results['steps']} steps in {args.epochs} epochs; test "
          f"accuracy {results['test_acc']:.1f}% on val/ (153 photos)")

    # 2. a sweep with a long path among its overrides: names distinct, short, readable
    sweep = out / "sweep"
    cnnbench(work, "-m", "optimizer.lr=0.01,0.05", "trainer.epochs=1,2", "trainer.max_steps=20",
             f"hydra.sweep.dir={sweep}", *QUIET)
    names = [p.name for p in sweep.glob("*/tensorboard/*")]
    check(len(names) == 4 and len(set(names)) == 4, f"4 distinct run names: {', '.join(sorted(names))}")
    check(max(map(len, names)) < 60, f"each under 60 characters (longest {max(map(len, names))})")

    # 3. HParams: every column has a value for every run (photos, digits sweep)
    runs = [run, *sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())]
    found = [hparams_of(r) for r in runs]
    columns = set().union(*found)
    fixed = set(found[0])
    check(all(fixed <= set(f) for f in found) and all(v not in ("", None) for f in found for v in f.values()),
          f"{len(fixed)} HParams columns with a value in each of {len(runs)} runs: {', '.join(sorted(fixed))}")
    print(f"     (the sweep's runs add: {', '.join(sorted(columns - fixed)) or 'nothing'})")

    # 4. eval on two splits leaves both
    cnnbench(work, f"run={run}", module="cnnbench.commands.evaluate")
    cnnbench(work, f"run={run}", "split=val", module="cnnbench.commands.evaluate")
    kept = sorted(p.name for p in run.glob("eval_*.json"))
    check(kept == ["eval_test.json", "eval_val.json"], f"eval on two splits leaves {', '.join(kept)}")

    # 5. the ONNX export of resnet18 is one file
    cnnbench(work, f"run={run}", "format=onnx", module="cnnbench.commands.export")
    files = sorted(p.name for p in (run / "export").iterdir())
    check(files == ["model.onnx", "model.onnx.json"], f"the ONNX export is {files[0]} and its card: {files}")
    second_hour(work, photos, run)
    print(f"runs in {out}: tensorboard --logdir {out}")


def second_hour(work: Path, photos: Path, run: Path) -> None:
    """The second hour's checks, on the first hour's photo run."""
    import json

    out = run.parent
    # 6. a misspelt key, set or appended: one line naming the closest key
    for key in ("trainer.epoch=3", "+trainer.epoch=3"):
        said = cnnbench(work, key, fails=True).strip()
        check(len(said.splitlines()) == 1 and "did you mean trainer.epochs?" in said, f"cnnbench {key}: {said}")

    # 7. fine-tuned from the photo run (trained at 112 px): trains at 112 px unless told
    derived = out / "finetuned"
    cnnbench(work, "data=imagefolder", f"data.root={photos}", "transfer=finetune", f"transfer.checkpoint={run}",
             "trainer.max_steps=8", f"hydra.run.dir={derived}", *QUIET)
    inherited = json.loads((derived / "results.json").read_text()).get("input_from_source", {})
    check(inherited.get("image_size") == 112, f"the fine-tuned run took the source's input: {inherited}")

    # 8. two timm architectures: their own names and HParams rows
    rows = {}
    for arch in ("resnet10t", "convnext_atto"):
        target = out / f"timm_{arch}"
        cnnbench(work, "data=imagefolder", f"data.root={photos}", "model=timm", f"model.arch={arch}",
                 "data.image_size=112", "trainer.max_steps=8", f"hydra.run.dir={target}", *QUIET)
        rows[next(target.glob("tensorboard/*")).name] = hparams_of(target).get("model")
    check(all(name.startswith(str(model)) for name, model in rows.items()) and len(set(rows.values())) == 2,
          f"two timm runs named and listed by architecture: {rows}")

    # 9. an explanation leaves every file training wrote as it was
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".cnnbench-files"}
    cnnbench(work, f"run={run}", "explain=gradcam", module="cnnbench.commands.visualize")
    check(all(p.read_bytes() == data for p, data in before.items()),
          f"cnnbench-visualize explain=gradcam left the {len(before)} files of training byte-identical")


if __name__ == "__main__":
    main()
