"""Feature maps, filters, confusion matrix, mistakes and hparams reach TensorBoard and figures/."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from cnnbench.models import build_model
from cnnbench.pictures import confusion_matrix, default_feature_layers, feature_grid


@pytest.fixture(scope="module")
def visual_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("visual")
    proc = run_cli("model=small_resnet", "trainer.epochs=2", "trainer.max_steps=6", "logger.image_every=1",
                   "data.num_train=120", "hydra.run.dir=run", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


def test_tensorboard_has_images_scalars_and_hparams(visual_run: Path) -> None:
    acc = EventAccumulator(str(visual_run / "tensorboard"), size_guidance={"images": 0}).Reload()
    images = set(acc.Tags()["images"])
    layers = ["stem.0", "stages.0.1", "stages.1.1", "stages.2.1"]
    assert {f"feature_maps/{n}" for n in [*layers, "input"]} <= images
    assert {"filters/stem.0", "test/confusion_matrix", "test/misclassified"} <= images
    assert len(acc.Images("feature_maps/stem.0")) == 2  # image_every=1 over two epochs
    # a 4x4 grid of 64x64 tiles (32x32 maps upsampled x2) with 2-pixel padding
    grid = acc.Images("feature_maps/stem.0")[-1]
    assert (grid.width, grid.height) == (4 * 64 + 5 * 2, 4 * 64 + 5 * 2)
    small = acc.Images("feature_maps/stages.2.1")[-1]  # 8x8 maps upsampled x6 to 48
    assert small.width == 4 * 48 + 10
    scalars = set(acc.Tags()["scalars"])
    assert {f"test/acc/{c}" for c in range(10)} <= scalars
    # hparams: TensorBoard's HParams plugin records (experiment, session start, session end)
    plugin_tags = defaultdict(set)
    for f in (visual_run / "tensorboard").rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                plugin_tags[v.metadata.plugin_data.plugin_name].add(v.tag)
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= plugin_tags["hparams"]


def test_figures_are_written_as_png(visual_run: Path) -> None:
    names = {p.name for p in (visual_run / "figures").glob("*.png")}
    assert {"feature_maps_stem.0.png", "feature_maps_input.png", "filters_stem.0.png", "test_confusion_matrix.png",
            "test_misclassified.png"} <= names
    for p in (visual_run / "figures").glob("*.png"):
        with Image.open(p) as img:
            img.load()
            assert min(img.size) > 20


def test_per_class_accuracy_and_confusion_matrix_agree(visual_run: Path) -> None:
    import json

    results = json.loads((visual_run / "results.json").read_text())
    per_class = results["test_acc_per_class"]
    assert set(per_class) == {str(i) for i in range(10)}
    # the test split has 30-41 images per class: the class mean and the overall accuracy stay close
    assert abs(sum(per_class.values()) / 10 - results["test_acc"]) < 5.0


def test_confusion_matrix_counts() -> None:
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_feature_grid_normalises_each_map() -> None:
    maps = torch.stack([torch.full((8, 8), 5.0), torch.arange(64.0).view(8, 8) * 100])
    grid = feature_grid(maps)
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1
    tile = 48  # 8x8 upsampled x6
    second = grid[0, 2:2 + tile, 4 + tile:4 + 2 * tile]
    assert second.min() == 0 and second.max() == 1  # full range despite the x100 scale
    assert grid[0, 2:2 + tile, 2:2 + tile].max() == 0  # a flat map is flat, not noise


def test_default_layers_per_family() -> None:
    def layers(name: str) -> list[str]:
        return default_feature_layers(build_model(name, num_classes=10, in_channels=3, image_size=32))

    assert layers("resnet18") == ["stem.0", "stages.0.1", "stages.1.1", "stages.2.1", "stages.3.1"]
    assert layers("vgg11")[0] == "features.0" and len(layers("vgg11")) == 6  # first conv + 5 pools
    assert layers("googlenet") == ["stem.0", "inception3b", "inception4e", "inception5b"]
    assert layers("efficientnet_b0")[0] == "stem.0" and len(layers("efficientnet_b0")) == 8
    assert layers("vit_tiny") == ["patch_embed"]


def test_visualize_cli(visual_run: Path, tmp_path: Path, capsys) -> None:
    from sklearn.datasets import load_digits

    from cnnbench.commands.visualize import main

    digit = (load_digits().images[0] * 255 / 16).astype(np.uint8)
    Image.fromarray(digit).resize((32, 32)).save(tmp_path / "digit.png")
    args = [f"run={visual_run}", f"image={tmp_path / 'digit.png'}"]
    main([*args, "layer=stages.0.1"])
    out = visual_run / "figures" / "visualize_stages.0.1_digit.png"
    assert out.is_file() and "predicted class" in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.size == (4 * 64 + 10, 4 * 64 + 10)
    with pytest.raises(SystemExit) as code:
        main([*args, "layer=nope"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and "no layer named 'nope'" in err and "stages.0.1.conv1" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as code:
        main(["--help"])
    assert code.value.code == 0 and "usage: cnnbench-visualize" in capsys.readouterr().out
