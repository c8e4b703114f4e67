"""``cnnbench-eval run=<run dir | .pt> [split=test|val|train | folder=<class folders>] [data.<key>=...] [tta=N]
[batch_size=N] [device=auto] [out=<json> [overwrite=true]]``: score a trained run again, with calibration.

Rebuilds the model and the preprocessing from the run's checkpoint (same size, channels, normalisation) and
scores a split of its data (data.<key>=value changes the run's data config first, e.g. data.root=; a key the
data config does not have is refused) or another folder of class folders with the run's class names. Prints a
table and writes one result file per setting, so no evaluation replaces another: eval_<split>.json in the run
directory (eval_folder-<name>_<hash>.json for a folder; _tta<N>, _corruptions<N> and a hash of data overrides
added to the name when they are used), or out=. It holds top-1, top-5, loss, balanced accuracy, macro-F1,
per-class precision/recall/F1, the confusion matrix, the data overrides used, and calibration: expected
calibration error over 15 equal-width bins (ECE), negative log-likelihood (NLL, the loss) and Brier score. PNGs
of the confusion matrix and the reliability diagram go to <run dir>/figures/eval_<setting>_*.png (beside out=
when given). A checkpoint outside a run directory needs out=: nothing is written beside it.

corruptions=true also scores the first ``corruption_images`` (default 1000) images under 14 of CIFAR-10-C's
15 common corruptions at severities 1-5, generated batched from the clean images with the published parameters
(frost is not: it needs six photographs of frost): accuracy per type and severity, the
mean corruption accuracy, a plot of accuracy against severity, and with ``baseline=<run dir>`` the corruption
error relative to that run's on the same corrupted images (mCE-style).

Data is read through the local cache (CNNBENCH_CACHE, default ~/.cache/cnnbench), never a cache folder recorded
in the checkpoint.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cnnbench.cli import error_boundary, fail, flag, key_values, output_file, positive_int
from cnnbench.errors import CnnbenchError
from cnnbench.fileio import atomic_write_json, save_image
from cnnbench.finished_run import FinishedRun, load_finished_run
from cnnbench.manifest import own

USAGE = ("usage: cnnbench-eval run=<run dir or .pt> [split=test|val|train] [folder=<class folders>] "
         "[data.<key>=<value> ...] [tta=0|1|2] [batch_size=N] [device=auto] [out=<eval.json> [overwrite=true]] "
         "[corruptions=true [corruption_images=1000] [baseline=<run dir>]] [allow_unfinished=true]\n"
         "       cnnbench-eval run=<run dir or .pt> speed=true [speed_batch=64] [speed_calls=50] "
         "[speed_compile=true] [device=auto] [out=<latency.json>]")
KEYS = {"run", "split", "folder", "tta", "batch_size", "device", "out", "overwrite", "corruptions",
        "corruption_images", "baseline", "allow_unfinished", "speed", "speed_batch", "speed_calls", "speed_compile"}


def parse_data_overrides(pairs: dict[str, str], data_cfg) -> dict:
    """``data.<key>=<text>`` arguments as values, each key checked against the run's data config (a misspelt key
    is refused, with the closest keys, as training refuses it) and each value parsed as YAML."""
    import yaml

    keys = [k for k, _ in _flat(OmegaConf.to_container(data_cfg, resolve=True))]
    values = {}
    for key, text in pairs.items():
        name = key.removeprefix("data.")
        if name not in keys:
            close = difflib.get_close_matches(name, keys, n=3)
            raise CnnbenchError(f"{key}: the data config has no such key"
                                + (f"; did you mean {', '.join('data.' + c for c in close)}?" if close else ""))
        try:
            values[key] = yaml.safe_load(text) if text else None
        except yaml.YAMLError as e:
            raise CnnbenchError(f"{key}={text}: not a value ({str(e).splitlines()[0]})") from None
    return values


def _flat(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        yield f"{prefix}{key}", value
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")


def setting_tag(split: str, folder: Path | None, tta: int, run_tta: int, corruptions: int, overrides: dict) -> str:
    """The name of one evaluation setting: the split (or folder), then what differs from the run's own scoring."""
    parts = ["folder-" + re.sub(r"[^\w.-]", "_", folder.resolve().name) if folder is not None else split]
    if tta != run_tta:
        parts.append(f"tta{tta}")
    if corruptions:
        parts.append(f"corruptions{corruptions}")
    if folder is not None or overrides:
        where = json.dumps([str(folder.resolve()) if folder is not None else None, sorted(overrides.items())],
                           default=str)
        parts.append(hashlib.sha1(where.encode()).hexdigest()[:8])
    return "_".join(parts)


def eval_loader(trained: FinishedRun, split: str, folder: Path | None, data_overrides: dict, batch_size: int,
                device: torch.device):
    """The run's preprocessing over the chosen images, unshuffled and unaugmented (``data_overrides``: parsed
    values by ``data.<key>``)."""
    from cnnbench.config.checks import check_data
    from cnnbench.config.schema import DataConfig
    from cnnbench.data import load_data
    from cnnbench.data.build import image_loader, normalization
    from cnnbench.data.cache import local_cache_dir
    from cnnbench.data.folders import scan_folder
    from cnnbench.data.images import FileImageSet

    cfg = OmegaConf.create(OmegaConf.to_container(trained.cfg.data, resolve=True))
    spec = trained.spec
    pipeline = spec.pipeline
    cfg.update(pipeline.config())  # as trained
    cfg.cache_dir = local_cache_dir() if cfg.cache_dir else None  # this machine's cache, not the recorded one
    for key, value in data_overrides.items():
        OmegaConf.update(cfg, key.removeprefix("data."), value)
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), cfg)  # (the types and values training checks)
    if data_overrides:
        check_data(cfg)
    channels, size = spec.channels, spec.image_size
    given = {"data.mean", "data.std"} & set(data_overrides)  # (else the spec's: the normalisation trained with)
    mean, std = normalization(cfg, channels) if given else (list(spec.mean), list(spec.std))
    if folder is not None:
        if not folder.is_dir():
            raise CnnbenchError(f"folder={folder} {'is not a folder' if folder.exists() else 'does not exist'}; "
                                f"give a folder of class folders")
        paths, labels, classes = scan_folder(folder)
        unknown = sorted(set(classes) - set(trained.class_names))
        if unknown:
            raise CnnbenchError(f"folder={folder} has classes the run was not trained on: {', '.join(unknown[:5])}; "
                                f"the run's classes: {', '.join(trained.class_names)}")
        index = torch.tensor([trained.class_names.index(c) for c in classes])
        images = FileImageSet(paths, index[labels], channels, pipeline.eval_resize)
        return image_loader(images, batch_size, device, mean, std, cfg.num_workers)
    data = load_data(cfg)
    images = getattr(data, split)
    if images is None:
        raise CnnbenchError(f"split={split}: the run's data has no {split} split (data.val_fraction=0); "
                            f"choose split=test or split=train")
    if data.class_names != trained.class_names or data.pipeline != pipeline or data.channels != channels:
        raise CnnbenchError(f"the data no longer matches the run: {data.num_classes} classes at {data.channels}x"
                            f"{data.image_size} px, the run was trained on {len(trained.class_names)} at "
                            f"{channels}x{size} (data.pipeline={pipeline.name})")
    return image_loader(images, batch_size, device, mean, std, cfg.num_workers, pipeline=data.pipeline)


def evaluate_run(run: Path, split: str = "test", folder: Path | None = None, data_overrides: dict | None = None,
                 tta: int | None = None, batch_size: int | None = None, device: str = "auto",
                 out: Path | None = None, corruptions: int = 0, baseline: Path | None = None,
                 allow_unfinished: bool = False, overwrite: bool = False) -> dict:
    """Score ``run`` and write this setting's result file and its figures; return what was written
    (``data_overrides``: ``data.<key>`` to its text, as on the command line). Figures beside ``out=`` replace
    files there only with ``overwrite``."""
    from cnnbench.evaluation.calibration import reliability
    from cnnbench.evaluation.metrics import confusion_matrix, metrics
    from cnnbench.evaluation.scores import predict

    if split not in ("test", "val", "train"):
        raise CnnbenchError(f"split={split}: choose test, val or train")
    trained = load_finished_run(run, allow_unfinished)
    data_overrides = parse_data_overrides(data_overrides or {}, trained.cfg.data)
    where, precision = trained.settle(device)
    tta = trained.cfg.trainer.tta if tta is None else tta
    tag = setting_tag(split, folder, tta, trained.cfg.trainer.tta, corruptions, data_overrides)
    in_run = out is None
    out = trained.output(out, f"eval_{tag}.json")
    base = trained.run_dir / "figures" / f"eval_{tag}" if in_run else out.parent / out.stem  # figures: base_*.png
    loader = eval_loader(trained, split, folder, data_overrides, batch_size or trained.cfg.data.batch_size, where)
    start = time.perf_counter()
    scores = predict(trained.model.to(where), loader, precision, tta)
    seconds = time.perf_counter() - start
    names = trained.class_names
    result = metrics(scores, names)
    cm = confusion_matrix(scores.preds, scores.labels, len(names))
    bins = reliability(scores.confidence, scores.preds == scores.labels)
    what = str(folder) if folder is not None else split
    result = {"run": str(trained.run_dir), "checkpoint": str(trained.checkpoint), "step": trained.step,
              "model": trained.cfg.model.name, "images": len(scores.labels), "split": what, "tta": tta,
              "data_overrides": data_overrides, "device": str(where), "precision": precision.name,
              "seconds": seconds, **result, "confusion_matrix": cm.tolist(), "class_names": names,
              "reliability": [vars(b) for b in bins]}
    written = {"confusion": Path(f"{base}_confusion_matrix.png"), "reliability": Path(f"{base}_reliability.png")}
    if corruptions:
        written["corruptions"] = Path(f"{base}_corruptions.png")
    claim(trained, out, list(written.values()), in_run, overwrite)
    replaced = out.is_file()
    if corruptions:
        result["corruptions"] = robustness(trained, loader, precision, corruptions, baseline, result["acc"],
                                           written["corruptions"])
    atomic_write_json(result, out)
    _save_figures(cm, bins, names, result["ece"], f"{trained.cfg.model.name} on {what} ({len(scores.labels)} images)",
                  written)
    result["written"] = [str(out), *map(str, written.values())]
    result["replaced"] = replaced  # (the same setting scored again)
    return result


def claim(trained: FinishedRun, out: Path, figures: list[Path], in_run: bool, overwrite: bool) -> None:
    """Record the result and figures in the run directory (``in_run``), or refuse figures that would replace
    files beside ``out=`` unless ``overwrite``."""
    if in_run:
        own(trained.run_dir, out, *figures)
        return
    taken = [p for p in figures if p.exists() or p.is_symlink()]
    if taken and not overwrite:
        raise CnnbenchError(f"{taken[0]} exists (a figure written beside out={out}); give another out= or "
                            f"overwrite=true to replace it")


def _save_figures(cm: torch.Tensor, bins: list, names: list[str], ece: float, title: str,
                  written: dict[str, Path]) -> None:
    """The confusion matrix and the reliability diagram, as PNGs where ``written`` says."""
    from cnnbench.pictures.cards import figure_image
    from cnnbench.pictures.charts import confusion_figure, reliability_figure

    written["confusion"].parent.mkdir(parents=True, exist_ok=True)
    save_image(figure_image(confusion_figure(cm, names)), written["confusion"])
    save_image(figure_image(reliability_figure(bins, ece / 100, title)), written["reliability"])


def robustness(trained: FinishedRun, loader, precision, images: int, baseline: Path | None, clean: float,
               figure: Path) -> dict:
    """Accuracy under the corruptions on the first ``images`` images (and the baseline run's, on the same ones)."""
    from cnnbench.evaluation.corruptions import NOT_AT_HAND
    from cnnbench.evaluation.robustness import corruption_accuracy, summary
    from cnnbench.pictures.cards import figure_image
    from cnnbench.pictures.charts import robustness_figure

    accuracy = corruption_accuracy(trained.model, loader, precision, images)
    reference = None
    if baseline is not None:
        other = load_finished_run(baseline, allow_unfinished=True)  # (a reference point, read as it is)
        if other.class_names != trained.class_names or other.spec.image_size != trained.spec.image_size:
            raise CnnbenchError(f"baseline={baseline} was trained on other classes or sizes than run={trained.run_dir}")
        reference = corruption_accuracy(other.model.to(loader.device), loader, other.precision(loader.device), images)
    figure.parent.mkdir(parents=True, exist_ok=True)
    save_image(figure_image(robustness_figure(accuracy, clean, f"{trained.cfg.model.name}, "
                                              f"{min(images, len(loader.data))} images")), figure)
    return {"images": min(images, len(loader.data)), "accuracy": accuracy, **summary(accuracy, reference),
            "baseline": str(baseline) if baseline else None, "not_generated": NOT_AT_HAND}


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"cnnbench-eval: {result['model']} on {result['split']} ({result['images']} images)",
                  show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [("top-1 accuracy", f"{result['acc']:.2f}%"), ("top-5 accuracy", f"{result['top5_acc']:.2f}%"
                                                          if "top5_acc" in result else "-"),
            ("balanced accuracy", f"{result['balanced_acc']:.2f}%"), ("macro-F1", f"{result['macro_f1']:.2f}%"),
            ("loss = NLL", f"{result['nll']:.4f}"), ("ECE (15 bins)", f"{result['ece']:.2f}%"),
            ("Brier score", f"{result['brier']:.4f}"), ("test-time augmentation", str(result["tta"])),
            ("device / precision", f"{result['device']} / {result['precision']}"),
            ("checkpoint", f"{result['checkpoint']} (step {result['step']})")]
    if "corruptions" in result:
        c = result["corruptions"]
        rows.append(("mean corruption accuracy", f"{c['mean_corruption_acc']:.2f}% ({len(c['accuracy'])} types x 5 "
                                                 f"severities, {c['images']} images)"))
        if "mce" in c:
            rows.append(("corruption error vs baseline", f"{c['mce']:.1f}% (mCE-style; 100% = the baseline's)"))
        rows += [(f"  {name}", " ".join(f"{a:5.1f}" for a in accs)) for name, accs in c["accuracy"].items()]
    for key, value in rows:
        table.add_row(key, value)
    Console(highlight=False).print(table)


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-eval``."""
    argv = sys.argv[1:] if argv is None else argv
    data_args = [a for a in argv if a.startswith("data.") and "=" in a]
    args = key_values([a for a in argv if a not in data_args], USAGE, keys=KEYS, required={"run"}, doc=__doc__)
    tta = int(args["tta"]) if args.get("tta") in ("0", "1", "2") else None
    if "tta" in args and tta is None:
        fail(f"tta must be 0, 1 or 2, got {args['tta']!r}")
    batch_size = positive_int(args, "batch_size", 0) if "batch_size" in args else None
    images = positive_int(args, "corruption_images", 1000) if flag(args, "corruptions") else 0
    out = output_file(args["out"], "out", (".json",), flag(args, "overwrite")) if "out" in args else None
    if flag(args, "speed"):
        return speed_main(args, out)
    with error_boundary():
        result = evaluate_run(Path(args["run"]), args.get("split", "test"),
                              Path(args["folder"]).expanduser() if "folder" in args else None,
                              dict(a.split("=", 1) for a in data_args), tta,
                              batch_size, args.get("device", "auto"), out, images,
                              Path(args["baseline"]) if "baseline" in args else None,
                              flag(args, "allow_unfinished"), flag(args, "overwrite"))
    print_table(result)
    for i, path in enumerate(result["written"]):
        print(f"{'replaced' if i == 0 and result['replaced'] else 'wrote'} {path}")


def speed_main(args: dict[str, str], out: Path | None) -> None:
    """``speed=true``: latency and throughput of the run's model (``cnnbench.commands.speed``), not a split's
    scores."""
    from cnnbench.commands.speed import measure, print_speed

    batch, calls = positive_int(args, "speed_batch", 64), positive_int(args, "speed_calls", 50)
    with error_boundary():
        trained = load_finished_run(Path(args["run"]), flag(args, "allow_unfinished"))
        result = measure(trained, args.get("device", "auto"), batch, calls, flag(args, "speed_compile", True))
        target = trained.output(out, f"latency_{result['device'].replace(':', '')}.json")
        if out is None:
            own(trained.run_dir, target)
        atomic_write_json(result, target)
    print_speed(result)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
