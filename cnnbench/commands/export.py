"""``cnnbench-export run=<run dir | .pt> format=onnx|torchscript|exported_program [out=<file>]
[overwrite=true] [dynamic_batch=true] [images=8]``: take a trained model out of cnnbench, checked.

Writes the model (model.onnx, model.torchscript.pt or model.pt2 in <run dir>/export/, or out=) and beside it
its card, named after it (model.onnx.json): the files that make the model, classes, input channels and size,
mean/std, how images are resized, the source run and its metrics. Then runs the exported model on real images
of the run's test split next to PyTorch (fp32, CPU) and prints the largest absolute difference of the logits;
above 1e-4 the export fails. An existing model file or card is never replaced unless overwrite=true; a
checkpoint outside a run directory needs out=. The ONNX file is self-contained (weights inside) up to ONNX's
2 GB limit; a larger model keeps its weights in <file>.data beside it, and the card lists both. ONNX needs
pip install 'cnnbench[export]' (onnx, onnxscript, onnxruntime; included in dev). PyTorch deprecates
TorchScript; exported_program (torch.export) is its successor. With format=onnx, int8=true also writes the int8
quantization (model.int8.onnx and its card) with its test accuracy and latency beside the float file's
(``cnnbench.commands.int8``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from cnnbench.cli import error_boundary, flag, key_values, output_file, positive_int
from cnnbench.errors import CnnbenchError, first_line
from cnnbench.fileio import atomic_write_json
from cnnbench.finished_run import FinishedRun, load_finished_run
from cnnbench.manifest import own
from cnnbench.provenance import record

USAGE = ("usage: cnnbench-export run=<run dir or .pt> format=onnx|torchscript|exported_program [out=<file>] "
         "[overwrite=true] [dynamic_batch=true|false] [images=8] [allow_unfinished=true] "
         "[int8=true [calib_images=256]]")
FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "exported_program": "model.pt2"}
SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth", ".ts"), "exported_program": (".pt2",)}
TOLERANCE = 1e-4
ONNX_LIMIT = 2 * 1024**3  # protobuf's limit: weights above it go to an external data file


def real_images(trained: FinishedRun, count: int) -> torch.Tensor:
    """The first ``count`` test images of the run's data, preprocessed as in evaluation (fp32, CPU)."""
    from cnnbench.commands.evaluate import eval_loader

    loader = eval_loader(trained, "test", None, {}, count, torch.device("cpu"))
    return next(iter(loader))[0].float().contiguous()


def export_model(model: torch.nn.Module, x: torch.Tensor, fmt: str, out: Path, dynamic_batch: bool):
    """Write ``model`` in ``fmt``; return a function that runs the written file on a batch (for parity)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        torch.jit.trace(model, x).save(str(out))
        loaded = torch.jit.load(str(out))
        return lambda batch: loaded(batch)
    batch = torch.export.Dim("batch", min=1) if dynamic_batch else None
    shapes = {"x": {0: batch}} if batch is not None else None
    if fmt == "exported_program":
        torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), str(out))
        loaded = torch.export.load(str(out)).module()
        return lambda batch: loaded(batch)
    try:
        import onnxruntime
    except ImportError:
        raise CnnbenchError("format=onnx needs onnx, onnxscript and onnxruntime: pip install 'cnnbench[export]'"
                            ) from None
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    torch.onnx.export(model, (x,), str(out), input_names=["x"], output_names=["logits"], dynamo=True,
                      dynamic_shapes=shapes, verbose=False, external_data=weight_bytes >= ONNX_LIMIT)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    return lambda batch: torch.from_numpy(session.run(None, {"x": batch.numpy()})[0])


def card(trained: FinishedRun, fmt: str, out: Path, x: torch.Tensor, parity: float, dynamic_batch: bool) -> dict:
    """What a user of the exported file needs to feed it, and where it came from."""
    spec = trained.spec
    results = trained.results()
    files = [out.name] + ([f"{out.name}.data"] if (out.parent / f"{out.name}.data").is_file() else [])
    return {"file": out.name, "files": files, "format": fmt, "model": trained.cfg.model.name,
            "input": {**spec.to_dict(), "layout": "NCHW", "dtype": "float32",
                      "batch": "dynamic" if dynamic_batch else x.shape[0], "preprocessing": spec.describe()},
            "output": "logits (softmax gives class probabilities)",
            "source": {"run": str(trained.run_dir), "checkpoint": str(trained.checkpoint), "step": trained.step},
            "metrics": {k: results[k] for k in ("test_acc", "test_top5_acc", "test_ece", "best_val_acc")
                        if results.get(k) is not None},
            "parity": {"images": x.shape[0], "max_abs_logit_diff": parity, "tolerance": TOLERANCE},
            "provenance": {"trained": trained.provenance, "exported": record()}}


def card_path(model_file: Path) -> Path:
    """The card of an exported file: named after it, so that exports in one folder keep their own cards."""
    return model_file.with_name(f"{model_file.name}.json")


def export_run(run: Path, fmt: str, out: Path | None = None, dynamic_batch: bool = True, images: int = 8,
               overwrite: bool = False, allow_unfinished: bool = False, int8: int = 0) -> dict:
    """Export, check parity on real images, write the card; with ``int8`` (calibration images), also the
    int8 quantization of an ONNX export and its card (``cnnbench.commands.int8``). Returns the card."""
    from cnnbench.commands.int8 import int8_path

    if fmt not in FILES:
        raise CnnbenchError(f"format={fmt}: choose {', '.join(FILES)}")
    if int8 and fmt != "onnx":
        raise CnnbenchError(f"int8=true quantizes the ONNX export through ONNX Runtime: give format=onnx, not {fmt}")
    trained = load_finished_run(run, allow_unfinished)
    in_run = out is None
    out = trained.output(out, f"export/{FILES[fmt]}")
    if out.suffix.lower() not in SUFFIXES[fmt]:
        raise CnnbenchError(f"out={out}: a {fmt} file ends in {' or '.join(SUFFIXES[fmt])}")
    files = [out, card_path(out), *([int8_path(out), card_path(int8_path(out))] if int8 else [])]
    taken = [p for p in files if p.exists() or p.is_symlink()]
    if taken and not overwrite:
        raise CnnbenchError(f"{taken[0]} exists; give another out= or overwrite=true to replace it")
    if in_run:
        own(trained.run_dir, *files, *([Path(f"{out}.data")] if fmt == "onnx" else []))
    model = trained.model.float().cpu().eval()
    x = real_images(trained, images)
    # A dynamic batch needs an example of at least 2 (torch.export specialises a size-1 dimension).
    example = x[:2] if len(x) >= 2 else torch.cat([x, x])
    try:
        run_exported = export_model(model, example if dynamic_batch else x, fmt, out, dynamic_batch)
    except CnnbenchError:
        raise
    except Exception as e:  # the exporter's own refusal (an unsupported op): one line with its reason
        raise CnnbenchError(f"{trained.cfg.model.name} cannot be exported as {fmt}: "
                            f"{first_line(e, 300)}") from None
    with torch.no_grad():
        parity = (run_exported(x) - model(x)).abs().max().item()
    info = card(trained, fmt, out, x, parity, dynamic_batch)
    atomic_write_json(info, card_path(out))
    if not parity <= TOLERANCE:
        raise CnnbenchError(f"{out} differs from PyTorch by {parity:.2e} on {len(x)} test images "
                            f"(tolerance {TOLERANCE:g})")
    if int8:
        info["int8"] = quantized_card(trained, out, info, int8)
    return info


def quantized_card(trained: FinishedRun, out: Path, info: dict, images: int) -> dict:
    """Quantize the ONNX file ``out`` to int8, score and time both, write the int8 file's card; its figures."""
    from cnnbench.commands.int8 import calibration_batches, compare, int8_path, quantize

    target = int8_path(out)
    quantize(out, target, calibration_batches(trained, images))
    figures = compare(trained, out, target)
    card_int8 = {**info, "file": target.name, "files": [target.name], "format": "onnx (int8, QDQ)",
                 "parity": None, "quantization": {"tool": "onnxruntime.quantization.quantize_static",
                                                  "calibration_images": images, "weights": "int8 per channel",
                                                  "activations": "uint8"}, "int8": figures}
    atomic_write_json(card_int8, card_path(target))
    return {"file": target.name, **figures}


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-export``."""
    argv = sys.argv[1:] if argv is None else argv
    args = key_values(argv, USAGE, keys={"run", "format", "out", "overwrite", "dynamic_batch", "images",
                                         "allow_unfinished", "int8", "calib_images"},
                      required={"run", "format"}, doc=__doc__)
    int8 = positive_int(args, "calib_images", 256) if flag(args, "int8") else 0
    dynamic, overwrite = flag(args, "dynamic_batch", True), flag(args, "overwrite")
    images = positive_int(args, "images", 8)
    suffixes = SUFFIXES.get(args["format"], tuple(s for group in SUFFIXES.values() for s in group))
    out = output_file(args["out"], "out", suffixes, overwrite) if "out" in args else None
    with error_boundary():
        info = export_run(Path(args["run"]), args["format"], out, dynamic, images, overwrite,
                          flag(args, "allow_unfinished"), int8)
    parity = info["parity"]
    folder = out.parent if out is not None else Path(info["source"]["run"]) / "export"
    print(f"wrote {' + '.join(info['files'])} ({info['format']}) and its card {info['file']}.json in {folder}, "
          f"from {info['source']['checkpoint']} (step {info['source']['step']})")
    print(f"parity on {parity['images']} test images: max |logit difference| {parity['max_abs_logit_diff']:.2e} "
          f"(tolerance {parity['tolerance']:g})")
    if "int8" in info:
        q = info["int8"]
        float_ms, int8_ms = (t["p50_ms"] for t in q["timings"])
        print(f"int8: wrote {q['file']} and its card; test accuracy {q['test_acc_int8']:.2f}% against "
              f"{q['test_acc_float']:.2f}% in float ({q['acc_change']:+.2f} points, {q['top1_agreement']:.1f}% of "
              f"answers the same) on {q['test_images']} images; batch-1 latency {int8_ms:.2f} ms against "
              f"{float_ms:.2f} ms ({q['latency_speedup']:.2f}x), throughput {q['throughput_speedup']:.2f}x")


if __name__ == "__main__":
    main()
