"""Explanations with known answers: attributions on a model that only looks at one quadrant, Grad-CAM against a
hand computation, effective receptive fields against the receptive-field recurrence, the projector's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tensorboard_run
from PIL import Image
from torch import nn

from cnnbench.anatomy import layer_fields
from cnnbench.explain.attribution import METHODS, attribute, default_layer
from cnnbench.explain.receptive_field import effective_field, mass_side, support
from cnnbench.models import build_model

SIDE = 64


class TopLeft(nn.Module):
    """A classifier whose logits depend only on the top-left quadrant of the image: everything else is masked
    out before the first (bias-free) convolution. Its filters and class 0's weights are positive, so class 0's
    evidence grows with every pixel it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU())
        self.fc = nn.Linear(8, 2)
        with torch.no_grad():
            self.features[0].weight.abs_()
            self.fc.weight[0].abs_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., :SIDE // 2, :SIDE // 2] = 1
        return self.fc(self.features(x * mask).mean((2, 3)))


@pytest.mark.parametrize("method", METHODS)
def test_attributions_lie_in_the_only_quadrant_the_model_sees(method: str) -> None:
    torch.manual_seed(0)
    model, x = TopLeft(), torch.rand(3, 3, SIDE, SIDE)
    maps = attribute(model, x, [0, 0, 0], method, layer="features" if method == "gradcam" else None).maps
    assert maps.shape == (3, SIDE, SIDE) and (maps >= 0).all()
    half = SIDE // 2
    inside = maps[:, :half, :half].sum((1, 2)) / maps.sum((1, 2))
    assert (inside >= 0.9).all(), (method, inside)
    if method == "occlusion":  # hiding the quadrant changes the logit; hiding pixels it never sees, nothing
        window = SIDE // 8
        assert (maps[:, :half, :half].mean((1, 2)) > 0).all()
        noise = 1e-5 * maps.abs().max()  # (float32 rounding: the batched logits may sum in another order)
        assert maps[:, half + window:, :].abs().max() <= noise and maps[:, :, half + window:].abs().max() <= noise


def test_gradcam_equals_the_hand_computation() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    x, targets = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 1])
    captured = []
    handle = net[3].register_forward_hook(lambda m, i, out: captured.append(out))
    logits = net(x)
    handle.remove()
    activations = captured[0]  # (4, 6, 8, 8)
    (grads,) = torch.autograd.grad(logits[torch.arange(4), targets].sum(), activations)
    weights = grads.mean((2, 3), keepdim=True)  # one weight per channel: the mean gradient
    cam = F.relu((weights * activations).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    got = attribute(net, x, targets, "gradcam", layer="3")
    assert got.layer == "3" and got.targets == [0, 1, 2, 1]
    torch.testing.assert_close(got.maps, expected.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("depth", "side"), [(1, 3), (2, 5)])
def test_effective_field_of_stride_one_convolutions_is_their_window(depth: int, side: int) -> None:
    torch.manual_seed(0)  # (the weights drawn here, not when the module was collected)
    net = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=1) for _ in range(depth)))
    field = effective_field(net, torch.randn(4, 1, 15, 15), str(depth - 1))
    assert support(field.heat) == (7 - side // 2, 7 - side // 2, side, side)
    assert field.centre == (7, 7) and abs(float(field.heat.sum()) - 1) < 1e-5


def test_effective_field_of_a_strided_linear_stack_is_the_recurrences_field() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Conv2d(2, 2, 3), nn.Conv2d(2, 1, 5, stride=2))
    (r, jump), = layer_fields(net, (1, 61, 61), ["2"]).values()
    assert (r, jump) == (1 + 2 + 2 * 2 + 4 * 2, 4)
    field = effective_field(net, torch.randn(2, 1, 61, 61), "2")
    _, _, height, width = support(field.heat)
    assert height == width == r


def test_mass_side_is_the_smallest_square_holding_95_percent() -> None:
    heat = torch.zeros(11, 11)
    heat[3:8, 3:8] = 1.0
    assert mass_side(heat) == (5, (5, 5))
    heat = torch.zeros(12, 12)
    heat[2:10, 2:10] = 1.0  # an even side, centred between pixels
    assert mass_side(heat)[0] == 8


@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg11_bn", "googlenet", "resnet18", "small_resnet",
                                  "se_resnet18", "efficientnet_b0", "airbench", "vit_tiny"])
def test_every_family_gets_a_gradcam(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=5, in_channels=3, image_size=32)
    x = torch.randn(2, 3, 32, 32)
    layer = default_layer(model, x)
    explanation = attribute(model, x, [1, 3], "gradcam")
    assert explanation.layer == layer and explanation.maps.shape == (2, 32, 32)
    assert torch.isfinite(explanation.maps).all() and (explanation.maps >= 0).all()
    if name == "vit_tiny":  # the tokens entering the last attention, on the 8x8 patch grid
        assert layer == f"blocks.{len(model.blocks) - 1}.ln1", layer


def test_a_vit_gradcam_leaves_the_model_as_it_was() -> None:
    torch.manual_seed(0)
    model = build_model("vit_tiny", num_classes=5, in_channels=3, image_size=32).train()
    x = torch.randn(2, 3, 32, 32)
    attribute(model, x, [0, 1], "gradcam")
    assert model.training and not any(m._forward_hooks for m in model.modules())
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(model(x), model(x))


@pytest.mark.slow
def test_projector_files_load_and_thumbnails_match_the_images(cli, tmp_path: Path) -> None:
    from conftest import compose_config
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_config_pb2

    from cnnbench.data import load_data

    proc = cli("trainer.epochs=1", "trainer.max_steps=5", "logger.embedding_images=20", "logger.snapshots=1",
               "logger.print_config=false", "logger.progress=false", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = tensorboard_run(tmp_path / "run")
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), projector_config_pb2.ProjectorConfig())
    (embedding,) = config.embeddings
    assert embedding.tensor_name.startswith("test_embeddings") and list(embedding.sprite.single_image_dim) == [32, 32]
    vectors = np.loadtxt(folder / embedding.tensor_path, delimiter="\t")
    assert vectors.shape == (20, 84)  # LeNet-5's classifier input: the 84 units of its last hidden layer
    rows = (folder / embedding.metadata_path).read_text().splitlines()
    data = load_data(compose_config().data)
    assert rows[0] == "true\tpredicted" and len(rows) == 21
    assert [r.split("\t")[0] for r in rows[1:]] == [data.class_names[i] for i in data.test.labels[:20].tolist()]
    sprite = np.asarray(Image.open(folder / embedding.sprite.image_path).convert("L")).astype(int)
    first, second = sprite[:32, :32], sprite[:32, 32:64]  # the sprite is a grid, row by row
    assert np.abs(first - data.test.images[0, 0].numpy().astype(int)).max() <= 1
    assert np.abs(second - data.test.images[1, 0].numpy().astype(int)).max() <= 1
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed"


def test_inspect_writes_the_receptive_field_picture(tmp_path: Path, capsys) -> None:
    from cnnbench.commands.inspect_model import main

    out = tmp_path / "rf.png"
    main(["model=small_resnet", f"out={out}"])
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as img:
        pixels = np.asarray(img.convert("L"))
    assert img.width > 4 * 96 and (pixels[4:30] < 100).mean() > 0.005  # the boxes, 4 heat maps, a title
