"""timm as a model source: the same networks as timm.create_model builds, its options passed through, its
failures one line, offline; and a timm model through training, pictures and export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from cnnbench.errors import CnnbenchError
from cnnbench.explain.attribution import attribute
from cnnbench.models import build_model


@pytest.mark.parametrize(("arch", "reference_kwargs"), [
    ("resnet18", {}), ("convnext_atto", {}), ("vit_tiny_patch16_224", {"img_size": 32}),
])
def test_cnnbench_builds_what_timm_builds(arch: str, reference_kwargs: dict) -> None:
    torch.manual_seed(0)
    ours = build_model("timm", num_classes=5, in_channels=3, image_size=32, arch=arch).eval()
    theirs = timm.create_model(arch, num_classes=5, in_chans=3, **reference_kwargs).eval()
    theirs.load_state_dict(ours.state_dict())  # strict: the same parameters and buffers, name for name
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


def test_options_reach_timm() -> None:
    model = build_model("timm", num_classes=3, in_channels=1, image_size=32, arch="convnext_atto", drop_path=0.1,
                        kwargs={"drop_rate": 0.25})
    assert model.stem[0].in_channels == 1 and model.head.fc.out_features == 3
    drops = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert drops and max(drops) == pytest.approx(0.1)  # drop_path is timm's drop_path_rate, rising with depth
    assert model.drop_rate == 0.25


def test_names_and_keywords_are_checked_in_one_line() -> None:
    with pytest.raises(CnnbenchError, match="model.arch=resnt18 is not a timm architecture; closest: resnet18"):
        build_model("timm", num_classes=3, in_channels=3, image_size=32, arch="resnt18")
    with pytest.raises(CnnbenchError, match="model=timm needs model.arch=<name>"):
        build_model("timm", num_classes=3, in_channels=3, image_size=32)
    with pytest.raises(CnnbenchError, match=r"timm's resnet18 does not take one of model.kwargs \(nope\)"):
        build_model("timm", num_classes=3, in_channels=3, image_size=32, arch="resnet18", kwargs={"nope": 1})


def test_pretrained_weights_come_from_the_local_cache_only(tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(CnnbenchError) as error:
        build_model("timm", num_classes=3, in_channels=3, image_size=32, arch="resnet18", pretrained=True)
    message = str(error.value)
    assert "timm/resnet18" in message and str(tmp_path / "hf" / "hub") in message and "\n" not in message
    assert constants.HF_HUB_OFFLINE is offline  # put back as it was


def test_inspect_lists_the_architectures_a_pattern_matches(capsys) -> None:
    from cnnbench.commands.inspect_model import main

    main(["model=timm", "model.arch='resnet18*'", "data=cifar10", "out=false"])
    out = capsys.readouterr().out
    with torch.device("meta"):
        params = sum(p.numel() for p in timm.create_model("resnet18", num_classes=10).parameters())
    assert "resnet18 " in out and f"{params:,}" in out and "resnet18d" in out and "G" in out


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto", "vit_tiny_patch16_224"])
def test_timm_models_get_a_gradcam(arch: str) -> None:
    model = build_model("timm", num_classes=4, in_channels=3, image_size=32, arch=arch)
    explanation = attribute(model, torch.randn(2, 3, 32, 32), [0, 3], "gradcam")
    assert explanation.maps.shape == (2, 32, 32) and torch.isfinite(explanation.maps).all()


@pytest.mark.slow
def test_a_timm_run_trains_draws_and_exports(cli, tmp_path: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from cnnbench.commands.export import main as export_main

    proc = cli("model=timm", "model.arch=resnet18", "model.drop_path=0.05", "trainer.epochs=1",
               "trainer.max_steps=5", "logger.print_config=false", "logger.progress=false", "hydra.run.dir=run",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed" and results["model"] == "timm"
    names = {p.name for p in (run / "figures").glob("*.png")}
    assert {"feature_maps_02_layer1_stage_64x8x8.png", "explain_gradcam.png"} <= names, names  # timm's stages
    export_main([f"run={run}", "format=onnx"])
    assert "parity on 8 test images" in capsys.readouterr().out
