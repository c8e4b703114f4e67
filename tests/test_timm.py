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


def test_timm_weights_bring_timms_own_evaluation_transform(tmp_path: Path) -> None:
    """resnet18's pretrained_cfg: Resize(235, bicubic) + CenterCrop(224) + ImageNet mean/std, as timm's own
    create_transform makes them; an explicit data.* value wins and is said."""
    from conftest import compose_config
    from PIL import Image
    from test_crops import photo_tree
    from timm.data import create_transform, resolve_data_config

    from cnnbench.data import load_data, make_loaders
    from cnnbench.transfer.build import apply_weights_preprocessing

    photo_tree(tmp_path, per_class=2)
    overrides = ("data=imagefolder", f"data.root={tmp_path}", "data.cache_dir=null", "data.val_fraction=0",
                 "data.batch_size=2", "model=timm", "model.arch=resnet18", "model.pretrained=true",
                 "transfer=finetune")
    cfg = compose_config(*overrides)
    note = apply_weights_preprocessing(cfg, explicit=set())
    assert (cfg.data.image_size, cfg.data.resize_size, cfg.data.interpolation) == (224, 235, "bicubic")
    assert note.startswith("preprocessing of timm's resnet18: image_size=224, resize_size=235")
    data = load_data(cfg.data)
    x, _ = next(iter(make_loaders(data, cfg.data, torch.device("cpu"), seed=0, channels_last=False)["test"]))
    transform = create_transform(**resolve_data_config({}, pretrained_cfg=timm.get_pretrained_cfg("resnet18")
                                                       .to_dict()))
    expected = torch.stack([transform(Image.open(f).convert("RGB")) for f in sorted((tmp_path / "val").rglob("*.jpg"))])
    assert x.shape == expected.shape and (x - expected).abs().max() < 1e-5
    cfg = compose_config(*overrides, "data.image_size=160")
    note = apply_weights_preprocessing(cfg, explicit={"data.image_size"})
    assert cfg.data.image_size == 160 and note.endswith("yours kept: data.image_size")


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


@pytest.mark.parametrize(("arch", "first", "last", "count"), [
    ("resnet18", "conv1..bn1", "layer4.1", 9),  # the stem, then each residual block
    ("vit_tiny_patch16_224", "cls_token..patch_embed.proj", "blocks.11.norm1..norm", 13),
])
def test_gradual_unfreezing_follows_timms_group_matcher(arch: str, first: str, last: str, count: int) -> None:
    from omegaconf import OmegaConf
    from timm.models import group_parameters

    from cnnbench.transfer.strategy import TransferPlan

    model = build_model("timm", num_classes=3, in_channels=3, image_size=32, arch=arch)
    cfg = OmegaConf.create({"strategy": "gradual_unfreeze", "stages": 3, "head_epochs": 1, "stage_epochs": 1,
                            "backbone_lr_scale": 0.1})
    plan = TransferPlan(model, cfg)
    names = [u.name for u in plan.units]
    assert (names[0], names[-1], len(names)) == (first, last, count)
    head = {id(p) for p in plan.head_params}
    groups = group_parameters(model, model.group_matcher(coarse=False))
    params = dict(model.named_parameters())
    theirs = [[id(params[n]) for n in group if id(params[n]) not in head] for _, group in sorted(groups.items())]
    assert [[id(p) for p in u.params] for u in plan.units] == [g for g in theirs if g]  # timm's groups, in order
    assert plan.freeze(0).endswith("training the head only (head: head)" if arch.startswith("vit") else
                                   "training the head only (head: fc)")
    plan.freeze(1)  # the top third of the groups opens after head_epochs
    top = len(torch.arange(count).tensor_split(3)[-1])
    assert [all(p.requires_grad for p in u.params) for u in plan.units] == [False] * (count - top) + [True] * top
