"""``cnnbench-export ... format=onnx int8=true [calib_images=256]``: post-training static int8 quantization of the
exported model through ONNX Runtime's quantizer, with the accuracy and latency it costs or saves, measured.

The float ONNX file is shape-inferred (``quant_pre_process``), then quantized to QDQ form (weights int8 per output
channel, activations uint8), its activation ranges calibrated on ``calib_images`` of the run's training images
preprocessed as evaluation, drawn at random (a class-sorted folder's first images would be one class). Both files
are then scored on the run's test split under ONNX Runtime and timed (batch-1 latency, throughput), and the
int8 file gets a card of its own (``model.int8.onnx.json``) with both sets of figures. ONNX Runtime's quantizer,
not torchao's: the exported ONNX file is what ships, and ONNX Runtime's int8 kernels run it on any x86 CPU (VNNI
and AMX where there are) without compiling on the target.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnbench.errors import CnnbenchError, first_line
from cnnbench.evaluation.latency import time_onnx
from cnnbench.finished_run import FinishedRun


def int8_path(float_path: Path) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``, beside it."""
    return float_path.with_name(f"{float_path.stem}.int8.onnx")


def calibration_batches(trained: FinishedRun, images: int, batch: int = 32) -> list[np.ndarray]:
    """``images`` training images at random (seed 0), preprocessed as evaluation, in batches (float32 NCHW)."""
    from cnnbench.commands.evaluate import eval_loader

    loader = eval_loader(trained, "train", None, {}, batch, torch.device("cpu"))
    pick = torch.randperm(len(loader.labels), generator=torch.Generator().manual_seed(0))[:images]
    return [loader.normalize(loader.images(chunk)).float().contiguous().numpy() for chunk in pick.split(batch)]


def quantize(float_path: Path, out: Path, batches: list[np.ndarray]) -> None:
    """Static QDQ quantization of ``float_path`` into ``out``; a model or op that does not quantize is one line."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rest = iter(batches)

        def get_next(self) -> dict | None:
            batch = next(self.rest, None)
            return None if batch is None else {"x": batch}

    prepared = out.with_name(f".{out.name}.prepared.onnx")
    try:
        quant_pre_process(str(float_path), str(prepared))
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as e:  # (the quantizer's refusal of an op or a graph: its reason, in one line)
        out.unlink(missing_ok=True)
        raise CnnbenchError(f"{float_path.name} does not quantize to int8: {type(e).__name__}: {first_line(e)}"
                            ) from None
    finally:
        prepared.unlink(missing_ok=True)


def onnx_predictions(path: Path, trained: FinishedRun, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The top-1 class of every test image under ONNX Runtime, and the labels."""
    import onnxruntime

    from cnnbench.commands.evaluate import eval_loader

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    preds, labels = [], []
    for x, y in eval_loader(trained, "test", None, {}, batch, torch.device("cpu")):
        preds.append(session.run(None, {"x": x.float().contiguous().numpy()})[0].argmax(1))
        labels.append(y.numpy())
    return np.concatenate(preds), np.concatenate(labels)


def compare(trained: FinishedRun, float_path: Path, int8: Path, calls: int = 50) -> dict:
    """Test accuracy, top-1 agreement and timings of the float and the int8 file."""
    spec = trained.spec
    shape = (spec.channels, spec.image_size, spec.image_size)
    float_preds, labels = onnx_predictions(float_path, trained)
    int8_preds, _ = onnx_predictions(int8, trained)
    timings = {name: time_onnx(str(path), shape, calls=calls, runtime=name).to_dict()
               for name, path in (("onnxruntime", float_path), ("onnxruntime-int8", int8))}
    float_acc = 100.0 * float((float_preds == labels).mean())
    int8_acc = 100.0 * float((int8_preds == labels).mean())
    return {"test_images": int(len(labels)), "test_acc_float": float_acc, "test_acc_int8": int8_acc,
            "acc_change": int8_acc - float_acc, "top1_agreement": 100.0 * float((int8_preds == float_preds).mean()),
            "timings": list(timings.values()),
            "latency_speedup": timings["onnxruntime"]["p50_ms"] / timings["onnxruntime-int8"]["p50_ms"],
            "throughput_speedup": timings["onnxruntime-int8"]["images_per_s"] / timings["onnxruntime"]["images_per_s"]}
