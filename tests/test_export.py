"""cnnbench-export: every format from a trained run, with parity on real images, and one model per zoo family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli

from cnnbench.commands.export import FILES, export_run, main
from cnnbench.config import to_container
from cnnbench.data.build import normalization
from cnnbench.data.pipeline import Pipeline
from cnnbench.data.spec import InputSpec
from cnnbench.errors import CnnbenchError
from cnnbench.models import build_from_config


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    proc = run_cli("trainer.epochs=2", "logger.print_config=false", "logger.progress=false", "logger.snapshots=0",
                   "logger.tensorboard=false", "logger.figures=false", "hydra.run.dir=run", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


@pytest.mark.parametrize("fmt", ["torchscript", "exported_program", "onnx"])
def test_export_writes_model_and_card_with_parity(trained_run: Path, fmt: str, capsys) -> None:
    main([f"run={trained_run}", f"format={fmt}", "overwrite=true"])
    printed = capsys.readouterr().out
    card = json.loads((trained_run / "export" / f"{FILES[fmt]}.json").read_text())
    assert (trained_run / "export" / card["file"]).is_file() and card["format"] == fmt
    assert card["input"]["class_names"] == [str(i) for i in range(10)] and card["input"]["image_size"] == 32
    assert card["input"]["channels"] == 1 and len(card["input"]["mean"]) == 1 and card["input"]["batch"] == "dynamic"
    assert card["metrics"]["test_acc"] > 10 and card["source"]["step"] > 0
    assert card["parity"]["images"] == 8 and card["parity"]["max_abs_logit_diff"] <= 1e-4
    assert "parity on 8 test images" in printed


def test_static_batch_and_refusals(trained_run: Path, tmp_path: Path, capsys) -> None:
    card = export_run(trained_run, "torchscript", tmp_path / "m.pt", dynamic_batch=False, images=4)
    assert card["input"]["batch"] == 4 and (tmp_path / "m.pt.json").is_file()
    with pytest.raises(CnnbenchError, match="choose onnx, torchscript, exported_program"):
        export_run(trained_run, "tflite")
    with pytest.raises(SystemExit) as code:
        main([f"run={trained_run}", "format=onnx", "dynamic_batch=maybe"])
    assert code.value.code == 2 and "dynamic_batch must be true or false" in capsys.readouterr().err


FAMILIES = ["lenet5", "alexnet", "vgg11_bn", "googlenet", "resnet18", "resnet50", "se_resnet18", "efficientnet_b0",
            "vit_tiny", "small_resnet", "airbench", "tv_resnet18", "timm:convnext_atto", "timm:vit_tiny_patch16_224"]
# (timm's resnet18 exports in test_timm.py, from a trained run)


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_exports_to_onnx(name: str, tmp_path: Path) -> None:
    """A checkpoint as cnnbench writes it (config, meta, weights) for one model of each family on the digits;
    ONNX through the dynamo exporter, checked against PyTorch on real test images."""
    source, _, arch = name.partition(":")
    cfg = compose_config(f"model={source}", *([f"model.arch={arch}"] if arch else []))
    channels = 1 if name == "lenet5" else 3
    cfg.data.channels = channels
    model = build_from_config(cfg.model, 10, channels, 32)
    (tmp_path / "checkpoints").mkdir()
    mean, std = normalization(cfg.data, channels)
    spec = InputSpec(channels, Pipeline.pad(32), tuple(mean), tuple(std), tuple(str(i) for i in range(10)))
    torch.save({"model": model.state_dict(), "config": to_container(cfg), "step": 0, "meta": spec.to_dict()},
               tmp_path / "checkpoints" / "best.pt")
    card = export_run(tmp_path / "checkpoints" / "best.pt", "onnx", tmp_path / "model.onnx", images=4)
    assert card["parity"]["max_abs_logit_diff"] <= 1e-4
