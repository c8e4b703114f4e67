"""Pictures and TensorBoard as a reader sees them: event files read back, PNGs opened, HParams decoded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tensorboard_run
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

from cnnbench.evaluation.metrics import confusion_matrix
from cnnbench.models import build_model
from cnnbench.pictures import capture, default_feature_layers, snapshot_epochs
from cnnbench.pictures.cards import feature_grid
from cnnbench.pictures.charts import confusion_figure, most_confused, per_class_figure
from cnnbench.pictures.layers import tags, trace
from cnnbench.tracking import run_name

EPOCHS, SNAPSHOTS = 5, 3


@pytest.fixture(scope="module")
def visual_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("visual")
    proc = run_cli("model=small_resnet", f"trainer.epochs={EPOCHS}", f"logger.snapshots={SNAPSHOTS}",
                   "data.num_train=120", "data.batch_size=32", "optimizer.lr=0.05", "hydra.run.dir=run", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


@pytest.fixture(scope="module")
def events(visual_run: Path) -> EventAccumulator:
    return EventAccumulator(str(tensorboard_run(visual_run)), size_guidance={"images": 0, "scalars": 0}).Reload()


def decode(event_image) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(event_image.encoded_image_string)).convert("RGB"))


def test_run_is_named_after_model_and_overrides(visual_run: Path) -> None:
    assert tensorboard_run(visual_run).name == "small_resnet,epochs=5,num_train=120,batch_size=32,lr=0.05"
    assert run_name("vgg11_bn", {"model": "vgg11_bn", "trainer.resume": "true", "data.root": "/a b/c d"}) == \
        "vgg11_bn,root=c_d"


def test_feature_map_tags_in_network_order_with_kind_and_shape(events: EventAccumulator) -> None:
    images = sorted(t for t in events.Tags()["images"] if t.startswith("feature_maps/"))
    assert images == ["feature_maps/00 input", "feature_maps/01 stem.2 relu 64x32x32",
                      "feature_maps/02 stages.0.1 basic 64x32x32", "feature_maps/03 stages.1.1 basic 128x16x16",
                      "feature_maps/04 stages.2.1 basic 256x8x8"]
    assert "filters/stem.0 conv 64x1x3x3" in events.Tags()["images"]
    assert {"test/confusion_matrix", "test/misclassified", "test/per_class"} <= set(events.Tags()["images"])


def test_snapshots_spread_over_the_run(events: EventAccumulator, visual_run: Path) -> None:
    assert snapshot_epochs(EPOCHS, SNAPSHOTS) == [1, 3, 5]
    assert snapshot_epochs(3, 4) == [1, 2, 3] and snapshot_epochs(10, 4) == [1, 4, 7, 10]
    assert snapshot_epochs(7, 1) == [7] and snapshot_epochs(7, 0) == []
    history = json.loads((visual_run / "results.json").read_text())["history"]
    steps_at = {h["epoch"]: h["step"] for h in history}
    for tag in ("feature_maps/00 input", "feature_maps/01 stem.2 relu 64x32x32"):
        assert [e.step for e in events.Images(tag)] == [steps_at[1], steps_at[3], steps_at[5]]


def test_gradcam_at_every_snapshot_and_receptive_fields_at_the_start_and_the_end(events: EventAccumulator,
                                                                                 visual_run: Path) -> None:
    history = json.loads((visual_run / "results.json").read_text())["history"]
    steps_at = {h["epoch"]: h["step"] for h in history}
    assert [e.step for e in events.Images("explain/gradcam")] == [steps_at[1], steps_at[3], steps_at[5]]
    assert [e.step for e in events.Images("receptive_field/start")] == [0]  # at initialisation
    assert [e.step for e in events.Images("receptive_field/end")] == [steps_at[5]]
    assert "test/misclassified_gradcam" in events.Tags()["images"]
    card = decode(events.Images("explain/gradcam")[-1])
    assert card.shape[1] >= 2 * 2 * 96  # two pairs a row: each image beside its map, 96 px or more


def test_default_feature_maps_are_never_constant(events: EventAccumulator) -> None:
    for tag in events.Tags()["images"]:
        if tag.startswith("feature_maps/0") and not tag.endswith("input"):
            pixels = decode(events.Images(tag)[-1]).astype(float)
            body = pixels[40:]  # below the title strip: the input and the 4x4 grid of maps
            assert body.std() > 20, tag


def test_no_clutter_in_scalars(events: EventAccumulator) -> None:
    scalars = set(events.Tags()["scalars"])
    assert not [t for t in scalars if t.startswith("hparam/") or t.startswith("test/acc/")], scalars
    assert {"train/loss", "val/acc", "val/best_acc", "train/time_s", "test/acc", "test/loss"} <= scalars
    best = [e.value for e in events.Scalars("val/best_acc")]
    assert best == sorted(best) and len(best) == EPOCHS  # a running best: one point per epoch


def test_hparams_are_typed_and_name_metrics_the_run_logs(visual_run: Path, events: EventAccumulator) -> None:
    found = {}
    for f in tensorboard_run(visual_run).glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                if v.metadata.plugin_data.plugin_name == "hparams":
                    found[v.tag] = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
    start = found["_hparams_/session_start_info"].session_start_info.hparams
    planned, ran = start["epochs planned"], start["epochs run"]
    assert planned.WhichOneof("kind") == "number_value" and planned.number_value == 5 and ran.number_value == 5
    assert start["optimizer.lr"].number_value == pytest.approx(0.05)
    assert start["model"].string_value == "small_resnet" and "data.num_train=120" in start["overrides"].string_value
    assert start["data.batch_size"].number_value == 14  # as trained: 108 images capped to 8 steps an epoch
    assert start["params"].number_value > 1e6 and start["macs"].number_value > 1e6
    assert "epochs" not in start and "trainer.epochs" not in start and "lr" not in start  # each value once
    metrics = {m.name.tag for m in found["_hparams_/experiment"].experiment.metric_infos}
    assert {"test/acc", "val/best_acc", "train/images_per_s", "train/time_s"} <= metrics
    assert metrics <= set(events.Tags()["scalars"])  # every metric is a scalar the run wrote


def test_pngs_carry_a_title(visual_run: Path) -> None:
    pngs = sorted((visual_run / "figures").glob("*.png"))
    names = {p.name for p in pngs}
    assert {"feature_maps_00_input.png", "feature_maps_01_stem.2_relu_64x32x32.png",
            "filters_stem.0_conv_64x1x3x3.png", "test_confusion_matrix.png", "test_per_class.png",
            "test_misclassified.png", "explain_gradcam.png", "test_misclassified_gradcam.png",
            "receptive_field_start.png", "receptive_field_end.png"} <= names
    for p in pngs:
        with Image.open(p) as img:
            pixels = np.asarray(img.convert("L"))
        assert 250 <= img.width <= 2000 and 150 <= img.height <= 2000, (p.name, img.size)
        title = pixels[4:30]  # the title strip: dark text on white
        assert (title < 100).mean() > 0.005 and (title > 200).mean() > 0.5, p.name


def test_image_logging_time_is_recorded(visual_run: Path) -> None:
    results = json.loads((visual_run / "results.json").read_text())
    assert 0 < results["image_logging_s"] < results["train_time_s"] + 60
    assert set(results["test_acc_per_class"]) == {str(i) for i in range(10)}


def test_default_layers_skip_tiny_maps_and_show_activations() -> None:
    def layers(name: str, size: int = 32, channels: int = 3) -> list[str]:
        model = build_model(name, num_classes=10, in_channels=channels, image_size=size)
        return default_feature_layers(model, torch.randn(1, channels, size, size))

    assert layers("resnet18") == ["stem.2", "stages.0.1", "stages.1.1", "stages.2.1", "stages.3.1"]
    assert layers("vgg11_bn") == ["features.2", "features.3", "features.7", "features.14"]  # no 2x2 or 1x1 pools
    assert layers("googlenet") == ["stem.2", "inception3b", "inception4e", "inception5b"]
    assert layers("efficientnet_b0")[0] == "stem.2" and len(layers("efficientnet_b0")) == 6
    assert layers("vit_tiny") == ["patch_embed"]
    assert layers("lenet5", channels=1) == ["features.1", "features.2", "features.5"]


@pytest.mark.parametrize("name", ["small_resnet", "vgg11_bn", "resnet18", "efficientnet_b0", "googlenet", "lenet5"])
def test_no_default_layer_gives_a_constant_grid(name: str) -> None:
    channels = 1 if name == "lenet5" else 3
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=channels, image_size=32)
    x = torch.rand(1, channels, 32, 32)
    layers = default_feature_layers(model, x)
    for layer, maps in capture(model, x, layers).items():
        grid = np.asarray(feature_grid(maps[0])).astype(float)
        assert grid.std() > 20, (name, layer)
        assert min(maps.shape[-2:]) >= 4, (name, layer)
    labels = tags(trace(model, x), layers)
    assert sorted(labels.values()) == [labels[n] for n in layers]  # tag order is network order


def test_capture_leaves_the_forward_pass_alone() -> None:
    """The hooks copy each map to float32 on the CPU and hand the layer's own output on: a model in float64 (as
    one on a GPU) still runs, and its logits are those without hooks."""
    torch.manual_seed(0)
    model = build_model("small_resnet", num_classes=10, in_channels=3, image_size=32).double().eval()
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    layers = default_feature_layers(model, x)
    maps = capture(model, x, layers)
    assert all(m.dtype == torch.float32 and m.device.type == "cpu" for m in maps.values())
    logits = {}
    model.register_forward_hook(lambda module, inputs, output: logits.setdefault("with", output))
    capture(model, x, layers)
    with torch.no_grad():
        assert logits["with"].dtype == torch.float64 and torch.equal(logits["with"], model(x))


def test_feature_grid_normalises_each_map() -> None:
    maps = torch.stack([torch.full((8, 8), 5.0), torch.arange(64.0).view(8, 8) * 100])
    grid = np.asarray(feature_grid(maps))[..., 0]
    tile = 48  # 8x8 upsampled x6
    second = grid[2:2 + tile, 4 + tile:4 + 2 * tile]
    assert second.min() == 0 and second.max() == 255  # full range despite the x100 scale
    assert grid[2:2 + tile, 2:2 + tile].max() == 0  # a flat map is flat, not noise


def test_confusion_matrix_counts() -> None:
    cm = confusion_matrix(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 2, 2]), 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]


def test_many_classes_are_capped() -> None:
    from cnnbench.pictures.cards import figure_image

    n = 200
    torch.manual_seed(0)
    labels = torch.arange(n).repeat(5)
    preds = labels.clone()
    preds[:300] = (labels[:300] + 1) % n  # classes 0..199 get some mistakes; 0..59 get two in the first rounds
    preds[100:140] = 7  # many images called class 7
    cm = confusion_matrix(preds, labels, n)
    shown = most_confused(cm)
    assert len(shown) == 30 and 7 in shown
    names = [f"class_{i}" for i in range(n)]
    image = figure_image(confusion_figure(cm, names))
    assert max(image.size) < 2000
    per_class = {c: {"precision": 50.0, "recall": float(i % 100)} for i, c in enumerate(names)}
    assert max(figure_image(per_class_figure(per_class)).size) < 2000


def test_visualize_cli(visual_run: Path, tmp_path: Path, capsys) -> None:
    from sklearn.datasets import load_digits

    from cnnbench.commands.visualize import main

    digit = (load_digits().images[0] * 255 / 16).astype(np.uint8)
    Image.fromarray(digit).resize((32, 32)).save(tmp_path / "digit.png")
    args = [f"run={visual_run}", f"image={tmp_path / 'digit.png'}"]
    main([*args, "layer=stages.0.1", "top_k=2"])
    out = visual_run / "figures" / "visualize_stages.0.1_digit.png"
    printed = capsys.readouterr().out
    assert out.is_file() and printed.count("%") == 2
    with Image.open(out) as img:
        pixels = np.asarray(img.convert("L"))
    assert img.width > 4 * 64 and (pixels[4:30] < 100).mean() > 0.005  # maps grid plus the input, titled
    with pytest.raises(SystemExit) as code:
        main([*args, "layer=nope"])
    out, err = capsys.readouterr()
    assert code.value.code == 2 and "no layer named 'nope'" in err and len(err.strip().splitlines()) == 1
    assert "stages.0.1.conv1" in out and "stages.0.1 " in out  # the blocks and layers, listed
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as code:
        main([*args, "layer=stages.0.1", "top_k=0"])
    assert code.value.code == 2 and "top_k must be a whole number >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as code:
        main(["--help"])
    assert code.value.code == 0 and "usage: cnnbench-visualize" in capsys.readouterr().out


def test_visualize_explains_a_run(visual_run: Path, tmp_path: Path, capsys) -> None:
    from cnnbench.commands.visualize import main

    trained = {p: p.read_bytes() for p in visual_run.rglob("*") if p.is_file() and p.name != ".cnnbench-files"}
    main([f"run={visual_run}", "explain=gradcam"])
    card = visual_run / "figures" / "visualize_explain_gradcam_predicted.png"
    assert f"wrote {card}" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in trained} == trained  # training's files (its explain_gradcam.png) unchanged
    with Image.open(card) as img:
        pixels = np.asarray(img.convert("L"))
    assert img.width >= 4 * 96 and img.height >= 4 * 96 and (pixels[4:30] < 100).mean() > 0.005
    main([f"run={visual_run}", "explain=saliency", "target=true", f"out={tmp_path / 'saliency.png'}"])
    assert (tmp_path / "saliency.png").is_file()
    Image.fromarray(np.full((40, 30), 128, np.uint8)).save(tmp_path / "grey.png")
    main([f"run={visual_run}", "explain=occlusion", f"images={tmp_path / 'grey.png'}", "target=3",
          f"out={tmp_path / 'occlusion.png'}"])
    assert (tmp_path / "occlusion.png").is_file()
    capsys.readouterr()
    for args, message in ((["explain=nope"], "explain=nope is not a method; choose one of gradcam"),
                          ([f"images={tmp_path / 'grey.png'}", "explain=gradcam", "target=true"],
                           "target=true needs images with known classes"),
                          (["explain=gradcam", "target=cat"], "target=cat is not predicted, true or one of"),
                          (["explain=gradcam", "layer=nope"], "no layer named 'nope'")):
        with pytest.raises(SystemExit) as code:
            main([f"run={visual_run}", *args, f"out={tmp_path / 'x.png'}"])
        err = capsys.readouterr().err
        assert code.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_resumed_run_keeps_its_tensorboard_folder(tmp_path: Path) -> None:
    from cnnbench.tracking import tensorboard_dir

    first = tensorboard_dir(tmp_path, "small_resnet,trainer.epochs=3")
    assert first == tmp_path / "tensorboard" / "small_resnet,trainer.epochs=3"
    first.mkdir(parents=True)
    assert tensorboard_dir(tmp_path, "small_resnet,trainer.epochs=6") == first  # resumed with more epochs


def texts_outside(fig) -> list[str]:
    """What of a drawn matplotlib figure reaches beyond its edges (1 px of slack): each axes with everything it
    draws (title, labels, tick labels in view, texts, annotations), and the figure's own texts (suptitle)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    parts = [(f"axes {ax.get_title()!r}", ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
    parts += [(t.get_text(), t.get_window_extent(renderer)) for t in fig.texts if t.get_text().strip()]
    return [name for name, e in parts if e is not None and (e.x0 < box.x0 - 1 or e.y0 < box.y0 - 1 or
                                                            e.x1 > box.x1 + 1 or e.y1 > box.y1 + 1)]


@pytest.mark.parametrize("classes", [2, 10, 100])
@pytest.mark.parametrize("long_names", [False, True])
def test_every_chart_s_titles_and_labels_fit_inside_it(classes: int, long_names: bool) -> None:
    """(Issue 40) at 2, 10 and 100 classes and with long class names, no title, label or tick text of a chart
    reaches beyond the picture: the confusion matrix, per-class bars, mistakes, reliability, robustness, and the
    leaderboard's scatter plots."""
    import matplotlib.pyplot as plt

    from cnnbench.evaluation.calibration import reliability
    from cnnbench.pictures.charts import mistakes_figure, reliability_figure, robustness_figure

    names = [(f"a_rather_long_class_name_number_{i}_of_the_photo_set" if long_names else f"c{i}")
             for i in range(classes)]
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (400,), generator=g)
    preds = torch.where(torch.rand(400, generator=g) < 0.7, labels, torch.randint(0, classes, (400,), generator=g))
    per_class = {n: {"precision": 50.0 + i % 50, "recall": 40.0 + i % 60} for i, n in enumerate(names)}
    title = f"resnet18 on folder=/home/user/{'photos/' * 8 if long_names else ''}test ({len(labels)} images)"
    confidence = torch.rand(400, generator=g)
    figures = [confusion_figure(confusion_matrix(preds, labels, classes), names), per_class_figure(per_class),
               mistakes_figure(torch.zeros(6, 3, 8, 8, dtype=torch.uint8), labels[:6].tolist(), preds[:6].tolist(),
                               names, 120, 400),
               reliability_figure(reliability(confidence, preds == labels), 0.05, title),
               robustness_figure({"gaussian_noise": [80.0, 70, 60, 50, 40]}, 90.0, title)]
    for figure in figures:
        assert texts_outside(figure) == []
        plt.close(figure)


def test_a_leaderboard_plot_s_point_labels_stay_inside(tmp_path: Path) -> None:
    """The scatter plots' labels: those of the rightmost points point left, inside the picture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnbench.report_files import _scatter

    captured = []
    original = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        captured.append(texts_outside(fig))
        return original(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        label = "vgg16_bn,lr=0.05,seed={},dropout=0.3,root=hymenoptera_data,wd=1e-4"  # (run names: 60 characters)
        points = [(10 ** (3 + i), 40.0 + 5 * i, 1.0, label.format(i)) for i in range(5)]
        for log in (True, False):
            _scatter(points, "parameters", "test accuracy (%)", log)
    finally:
        plt.Figure.savefig = original
    assert captured == [[], []]
