"""``cnnbench-predict run=<run dir | .pt> images=<file | folder | glob> [top_k=5] [out=<preds.csv | .json>
[overwrite=true]] [batch_size=64] [device=auto]``: class probabilities for image files.

Each image is preprocessed as the run's evaluation data (channels, size, normalisation), in batches, with a
progress bar; one row per image, in path order: the top-k classes with their probabilities. A file that cannot be
read becomes a row with its error, not a stop. The rows are printed (the first 50) and written to ``out=`` (CSV:
``path, class_1, prob_1, ..., error``; JSON: a list of ``{path, predictions: [{class, prob}], error}``).
``out=`` is checked before any image is read (a known suffix, a writable folder, not an existing file unless
``overwrite=true``) and written atomically, so no prediction is computed only to be lost.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
import time
from pathlib import Path

import torch

from cnnbench.cli import error_boundary, fail, flag, key_values, output_file, positive_int
from cnnbench.data.decode import IMAGE_EXTENSIONS
from cnnbench.errors import CnnbenchError
from cnnbench.fileio import atomic_write
from cnnbench.finished_run import FinishedRun, load_finished_run

USAGE = ("usage: cnnbench-predict run=<run dir or .pt> images=<file | folder | glob> [top_k=5] "
         "[out=<preds.csv | preds.json> [overwrite=true]] [batch_size=64] [device=auto] [allow_unfinished=true]")
SHOWN = 50


def image_files(spec: str) -> list[Path]:
    """A file, every image under a folder (recursively), or a glob's matches; sorted."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    else:
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        raise CnnbenchError(f"images={spec}: no image files there (a file, a folder or a glob; extensions "
                            f"{', '.join(IMAGE_EXTENSIONS)})")
    return files


def predict_files(trained: FinishedRun, files: list[Path], top_k: int, batch_size: int, device: str = "auto",
                  progress: bool = True) -> list[dict]:
    """One row per file: ``{"path", "predictions": [{"class", "prob"}], "error"}``."""
    from rich.progress import Progress

    where, precision = trained.settle(device)
    model = trained.model.to(where)
    names, k = trained.class_names, min(top_k, len(trained.class_names))
    rows: list[dict] = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("predicting", total=len(files))
        for start in range(0, len(files), batch_size):
            batch, images = files[start:start + batch_size], []
            for path in batch:
                try:
                    images.append(trained.spec.read(path))
                    rows.append({"path": str(path), "predictions": [], "error": ""})
                except (CnnbenchError, OSError) as e:
                    rows.append({"path": str(path), "predictions": [], "error": str(e)})
            ok = [r for r in rows[-len(batch):] if not r["error"]]
            if images:
                x = trained.spec.normalize(torch.stack(images).to(where))
                with torch.no_grad(), precision.autocast():
                    probs = model(x).float().softmax(1)
                top = probs.topk(k, dim=1)
                for row, p, i in zip(ok, top.values.tolist(), top.indices.tolist(), strict=True):
                    row["predictions"] = [{"class": names[c], "prob": q} for q, c in zip(p, i, strict=True)]
            bar.advance(task, len(batch))
    return rows


def write_rows(rows: list[dict], out: Path, top_k: int) -> None:
    """The rows as CSV or JSON (by ``out``'s suffix), written atomically."""
    if out.suffix.lower() == ".json":
        text = json.dumps(rows, indent=1) + "\n"
    else:
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(["path", *(f"{c}_{i}" for i in range(1, top_k + 1) for c in ("class", "prob")), "error"])
        for r in rows:
            cells = [v for p in r["predictions"] for v in (p["class"], f"{p['prob']:.6f}")]
            writer.writerow([r["path"], *cells, *[""] * (2 * top_k - len(cells)), r["error"]])
        text = buffer.getvalue()
    atomic_write(out, lambda f: f.write(text.encode()))


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-predict``."""
    argv = sys.argv[1:] if argv is None else argv
    args = key_values(argv, USAGE, keys={"run", "images", "top_k", "out", "overwrite", "batch_size", "device",
                                         "allow_unfinished"},
                      required={"run", "images"}, doc=__doc__)
    top_k, batch_size = positive_int(args, "top_k", 5), positive_int(args, "batch_size", 64)
    out = output_file(args["out"], "out", (".csv", ".json"), flag(args, "overwrite")) if "out" in args else None
    with error_boundary():
        trained = load_finished_run(Path(args["run"]), flag(args, "allow_unfinished"))
        if out is not None:
            trained.check_output(out)
        files = image_files(args["images"])
        start = time.perf_counter()
        rows = predict_files(trained, files, top_k, batch_size, args.get("device", "auto"),
                             progress=sys.stdout.isatty())
        seconds = time.perf_counter() - start
    for r in rows[:SHOWN]:
        best = ", ".join(f"{p['class']} {100 * p['prob']:.1f}%" for p in r["predictions"][:3])
        print(f"{r['path']}: {best or 'error: ' + r['error']}")
    if len(rows) > SHOWN:
        print(f"... {len(rows) - SHOWN} more")
    failed = sum(1 for r in rows if r["error"])
    print(f"{len(rows)} images in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):,.0f} images/s)"
          + (f", {failed} unreadable" if failed else "") + f"; model {trained.checkpoint} (step {trained.step})")
    if out is not None:
        write_rows(rows, out, min(top_k, len(trained.class_names)))
        print(f"wrote {out}")
    if failed:
        fail(f"{failed} of {len(rows)} images could not be read (their rows say why)", code=1)


if __name__ == "__main__":
    main()
