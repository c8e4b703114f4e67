"""optimizer=muon: orthogonalised steps for filters and matrices, SGD for the rest, the classifier kept out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli
from torch import nn

from cnnbench.engine.muon import Muon, orthogonalize
from cnnbench.engine.optim import build_optimizer
from cnnbench.errors import CnnbenchError
from cnnbench.models import build_model


@pytest.mark.parametrize("shape", [(16, 72), (72, 16), (32, 32)])
def test_newton_schulz_brings_every_singular_value_near_one(shape: tuple[int, int]) -> None:
    gen, k = torch.Generator().manual_seed(0), min(shape)
    u, v = (torch.linalg.qr(torch.randn(n, k, generator=gen))[0] for n in shape)
    g = u @ torch.diag(torch.logspace(-1.5, 1, k)) @ v.T  # singular values 0.03 to 10: far from orthogonal
    s = torch.linalg.svdvals(orthogonalize(g, steps=5))
    assert orthogonalize(g, steps=5).shape == shape
    assert s.min() > 0.5 and s.max() < 1.25  # Jordan's quintic: about U V^T, singular values in ~(0.7, 1.2)


def _conv_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def _loss(net: nn.Module, scale: float = 1.0) -> torch.Tensor:
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(16) % 4
    return nn.functional.cross_entropy(net(x), y) * scale


def test_filter_steps_are_orthogonal_and_do_not_depend_on_the_gradients_scale() -> None:
    steps = []
    for scale in (1.0, 1000.0):
        torch.manual_seed(0)
        net = _conv_net()
        before = net[0].weight.detach().clone()
        opt = Muon(net.parameters(), lr=0.1, momentum=0.0, ns_steps=5)
        _loss(net, scale).backward()
        opt.step()
        steps.append((before - net[0].weight.detach()) / 0.1)
    s = torch.linalg.svdvals(steps[0].reshape(8, -1))
    assert s.min() > 0.5 and s.max() < 1.25  # (8, 27): every singular value of the step near 1
    torch.testing.assert_close(steps[0], steps[1], rtol=1e-3, atol=1e-4)


def test_biases_norms_and_ungrouped_parameters_take_torchs_sgd_step() -> None:
    torch.manual_seed(0)
    net, twin = _conv_net(), _conv_net()
    twin.load_state_dict(net.state_dict())
    rest = [p for p in net.parameters() if p.ndim < 2]
    muon = Muon([{"params": rest}, {"params": [net[5].weight], "orthogonalize": False}], lr=0.2, other_lr_scale=0.5,
                other_momentum=0.8, weight_decay=1e-2)
    assert [g["orthogonalize"] for g in muon.param_groups] == [False, False]
    assert {g["lr"] for g in muon.param_groups} == {0.1} and {g["momentum"] for g in muon.param_groups} == {0.8}
    ref = torch.optim.SGD([p for p in twin.parameters() if p.ndim < 2] + [twin[5].weight], lr=0.1, momentum=0.8,
                          nesterov=True, weight_decay=1e-2)
    for _ in range(3):
        for net_, opt in ((net, muon), (twin, ref)):
            opt.zero_grad()
            _loss(net_).backward()
            opt.step()
    for a, b in zip(net.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_normalize_weights_holds_each_filter_bank_at_norm_sqrt_out_channels() -> None:
    torch.manual_seed(0)
    net = _conv_net()
    with torch.no_grad():
        net[0].weight.mul_(7)
    opt = Muon(net.parameters(), lr=0.0, normalize_weights=True)
    _loss(net).backward()
    opt.step()
    assert net[0].weight.norm().item() == pytest.approx(8 ** 0.5, rel=1e-5)


def test_normalize_every_renormalises_on_every_nth_step_only() -> None:
    """With lr 0 the weights change only when renormalised: steps 0 and 3 of 6 at normalize_every=3."""
    torch.manual_seed(0)
    net = _conv_net()
    opt = Muon(net.parameters(), lr=0.0, normalize_weights=True, normalize_every=3)
    renormalised = []
    for _ in range(6):
        with torch.no_grad():
            net[0].weight.mul_(2)  # off the norm again before each step
        before = net[0].weight.norm().item()
        opt.zero_grad()
        _loss(net).backward()
        opt.step()
        after = net[0].weight.norm().item()
        renormalised.append(after != pytest.approx(before, rel=1e-6))
        if renormalised[-1]:
            assert after == pytest.approx(8 ** 0.5, rel=1e-5)
    assert renormalised == [True, False, False, True, False, False]
    state = opt.state_dict()["state"]
    assert {s["steps"] for s in state.values() if "steps" in s} == {6}  # counted per parameter, kept in checkpoints


def test_the_builder_keeps_the_classifier_out_and_norm_lr_scale_applies_to_the_sgd_rate() -> None:
    model = build_model("airbench", num_classes=10, in_channels=3, image_size=32, widths=[8, 16, 16])
    cfg = compose_config("optimizer=muon", "optimizer.lr=0.1", "optimizer.other_lr_scale=3",
                         "optimizer.norm_lr_scale=4").optimizer
    opt = build_optimizer(cfg, model.parameters(), model)
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert by_id[id(names["groups.0.conv1.weight"])]["orthogonalize"]
    assert by_id[id(names["groups.0.conv1.weight"])]["lr"] == 0.1
    head = by_id[id(names["fc.weight"])]
    assert not head["orthogonalize"] and head["lr"] == pytest.approx(0.3)
    assert by_id[id(names["groups.0.bn1.bias"])]["lr"] == pytest.approx(1.2)  # 0.1 x 3 x 4
    assert not by_id[id(names["stem.conv.bias"])]["orthogonalize"]
    with pytest.raises(CnnbenchError, match="optimizer=muon trains the classifier with SGD, but cannot find"):
        build_optimizer(cfg, nn.Sequential(nn.Conv2d(3, 4, 3)).parameters(), nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_a_bad_muon_setting_is_one_line_naming_it(tmp_path: Path) -> None:
    for key in ("ns_steps", "normalize_every"):
        proc = run_cli("optimizer=muon", f"optimizer.{key}=0", cwd=tmp_path)
        assert proc.returncode != 0 and f"{key} must be >= 1, got 0" in proc.stderr and "Traceback" not in proc.stderr


def test_muon_trains_lenet_on_the_digits(tmp_path: Path) -> None:
    proc = run_cli("model=lenet5", "optimizer=muon", "trainer.epochs=2", "logger.tensorboard=false",
                   "logger.snapshots=0", "logger.figures=false", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["test_acc"] > 85  # chance is 10%; optimizer=sgd's defaults reach about 70% in these 2 epochs
