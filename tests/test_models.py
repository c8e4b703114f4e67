"""The registry and the models: parameter counts, shapes, input adaptation, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models import build_model, list_models


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lenet5_matches_lecun_parameter_count() -> None:
    # conv 6@5x5 (156) + conv 16@5x5 (2,416) + fc 256-120 (30,840) + 120-84 (10,164) + 84-10 (850)
    assert n_params(build_model("lenet5", num_classes=10, in_channels=1, image_size=28)) == 44_426
    # the classic 32x32 input gives a 5x5x16 feature map: fc 400-120
    assert n_params(build_model("lenet5", num_classes=10, in_channels=1, image_size=32)) == 61_706


def test_lenet5_is_tanh_and_average_pooling() -> None:
    kinds = {type(m).__name__ for m in build_model("lenet5", num_classes=10, in_channels=1, image_size=32).modules()}
    assert {"Tanh", "AvgPool2d"} <= kinds and not {"ReLU", "MaxPool2d"} & kinds


def test_small_resnet_stages() -> None:
    model = build_model("small_resnet", num_classes=10, in_channels=3, image_size=32)
    x = torch.randn(2, 3, 32, 32)
    x = model.stem(x)
    assert x.shape == (2, 64, 32, 32)
    shapes = []
    for stage in model.stages:
        assert len(stage) == 2
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    assert model.fc.in_features == 256 and model.fc.out_features == 10
    # projection shortcuts exactly where the shape changes
    projections = [b.shortcut for s in model.stages for b in s if not isinstance(b.shortcut, torch.nn.Identity)]
    assert len(projections) == 2


def test_unknown_model_lists_the_available_ones() -> None:
    with pytest.raises(CnnbenchError, match="unknown model 'vgg99'; available: .*lenet5.*small_resnet"):
        build_model("vgg99", num_classes=10, in_channels=3, image_size=32)


def test_unknown_option_is_named() -> None:
    with pytest.raises(CnnbenchError, match="model.depth is not an option of small_resnet; it accepts: widths"):
        build_model("small_resnet", num_classes=10, in_channels=3, image_size=32, depth=3)


def test_too_small_image_fails_at_build_time_naming_the_minimum() -> None:
    with pytest.raises(CnnbenchError, match="lenet5 needs images of at least 16x16, got 12x12"):
        build_model("lenet5", num_classes=10, in_channels=1, image_size=12)


BIG = {"efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "resnet101", "resnet152",
       "vit_b_16", "vit_small", "vgg19", "vgg19_bn"}  # a second or more each on 2 cores: in the slow set


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n
                                  for n in list_models(include_zoos=False)])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])  # MNIST's size; digits' and CIFAR's
def test_every_model_runs_forward_and_backward(name: str, channels: int, size: int) -> None:
    model = build_model(name, num_classes=7, in_channels=channels, image_size=size)
    out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_airbench_stem_whitens_2x2_patches_and_is_frozen() -> None:
    torch.manual_seed(0)
    model = build_model("airbench", num_classes=10, in_channels=3, image_size=32, widths=[16, 32, 64])
    images = torch.randn(200, 3, 32, 32) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1)
    images[:, 1] += images[:, 0]  # correlated channels
    model.init_from_data(images)
    conv = model.stem.conv
    out = torch.nn.functional.conv2d(images, conv.weight)[:, :12]  # one sign of each eigenvector
    features = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = features.T @ features / len(features)
    assert torch.allclose(cov, torch.eye(12), atol=1e-2)  # whitened (up to the eps of small eigenvalues)
    assert torch.equal(conv.weight[12:], -conv.weight[:12]) and not conv.weight.requires_grad


def test_airbench_dirac_convs_start_as_identities_and_bn_scales_can_be_frozen() -> None:
    model = build_model("airbench", num_classes=10, in_channels=3, image_size=32, widths=[32, 64, 64])
    conv = model.groups[1].conv1  # 32 -> 64 channels
    x = torch.randn(2, 32, 8, 8)
    assert torch.equal(conv(x)[:, :32], x)  # the first 32 filters pass their channel through
    assert conv.weight[32:].abs().sum() > 0  # the others keep their random init
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(not bn.weight.requires_grad and bn.bias.requires_grad for bn in bns)
    learnt = build_model("airbench", num_classes=10, in_channels=3, image_size=32, dirac=False, bn_scale=True)
    assert all(m.weight.requires_grad for m in learnt.modules() if isinstance(m, torch.nn.BatchNorm2d))
    y = torch.randn(2, 64, 8, 8)
    assert not torch.allclose(learnt.groups[1].conv1(y)[:, :64], y, atol=0.1)


def test_airbench_activation_is_the_conv_groups_and_a_wrong_one_is_named() -> None:
    silu = build_model("airbench", num_classes=10, in_channels=3, image_size=32, widths=[8, 16, 16],
                       activation="silu")
    assert {type(g.act) for g in silu.groups} == {nn.SiLU} and isinstance(silu.stem.act, nn.GELU)
    x = torch.randn(2, 3, 32, 32)
    gelu = build_model("airbench", num_classes=10, in_channels=3, image_size=32, widths=[8, 16, 16])
    gelu.load_state_dict(silu.state_dict())  # same weights, another function: other logits
    assert not torch.allclose(silu.eval()(x), gelu.eval()(x))
    with pytest.raises(CnnbenchError, match="model.activation must be one of gelu, silu, got 'relu'"):
        build_model("airbench", num_classes=10, in_channels=3, image_size=32, activation="relu")


def test_airbench_stem_bias_trains_for_its_epochs_only() -> None:
    model = build_model("airbench", num_classes=10, in_channels=3, image_size=32, widths=[8, 16, 16],
                        stem_bias_epochs=2)
    model.init_from_data(torch.randn(50, 3, 32, 32))
    for epoch, trains in ((0, True), (1, True), (2, False), (3, False)):
        model.on_epoch_start(epoch)
        model.zero_grad(set_to_none=True)
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        assert (model.stem.conv.bias.grad is not None) == trains, epoch
        assert model.groups[0].conv1.weight.grad is not None
