"""`cnnbench.anatomy` and `cnnbench-inspect` agree with the textbook facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import compose_config
from torch import nn

from cnnbench.anatomy import analyze, conv_output_size, receptive_field
from cnnbench.commands.inspect_model import report_for_config


@pytest.mark.parametrize(("n", "k", "p", "s", "out"), [(32, 3, 1, 1, 32), (32, 3, 0, 1, 30), (32, 5, 2, 1, 32),
                                                       (32, 3, 1, 2, 16), (224, 7, 3, 2, 112)])
def test_output_size_formula(n: int, k: int, p: int, s: int, out: int) -> None:
    assert conv_output_size(n, k, p, s) == out
    conv = nn.Conv2d(1, 1, k, stride=s, padding=p)
    assert conv(torch.zeros(1, 1, n, n)).shape[-1] == out  # torch agrees
    assert analyze(conv, (1, n, n)).layers[0].output_shape == (1, out, out)


def test_conv_parameter_counts() -> None:
    assert analyze(nn.Conv2d(3, 64, 3), (3, 8, 8)).params == 1_792  # 3*3*3*64 + 64
    assert analyze(nn.Conv2d(512, 64, 1), (512, 4, 4)).params == 32_832  # 512*64 + 64


def test_three_3x3_convs_see_as_far_as_one_7x7_with_fewer_weights() -> None:
    c = 8
    stack = nn.Sequential(*[nn.Conv2d(c, c, 3, padding=1, bias=False) for _ in range(3)])
    single = nn.Conv2d(c, c, 7, padding=3, bias=False)
    r_stack, r_single = analyze(stack, (c, 16, 16)), analyze(single, (c, 16, 16))
    assert [layer.receptive_field for layer in r_stack.layers] == [3, 5, 7]
    assert r_single.layers[0].receptive_field == 7
    assert r_stack.params == 27 * c * c and r_single.params == 49 * c * c


def test_receptive_field_recurrence() -> None:
    # r_out = r_in + (k - 1) * jump_in, jump_out = jump_in * s
    layers = [(7, 2), (3, 2), (3, 1), (3, 2), (1, 1)]
    assert receptive_field(layers) == (1 + 6 + 2 * 2 + 2 * 4 + 2 * 4 + 0, 8)
    model = nn.Sequential(nn.Conv2d(1, 2, 7, 2, 3), nn.MaxPool2d(3, 2, 1), nn.Conv2d(2, 2, 3, 1, 1),
                          nn.Conv2d(2, 2, 3, 2, 1), nn.Conv2d(2, 2, 1))
    report = analyze(model, (1, 64, 64))
    assert (report.layers[-1].receptive_field, report.layers[-1].jump) == receptive_field(layers)


def test_receptive_field_through_branches_takes_the_larger_path() -> None:
    report = report_for_config(compose_config("model=small_resnet", "data=cifar10"))
    by_name = {layer.name: layer for layer in report.layers}
    # stem 3, each basic block adds two 3x3 convs: 3 + 2 + 2 = 7 after block 0 of stage 0
    assert by_name["stages.0.0.relu"].receptive_field == 7
    assert by_name["stages.0.0.shortcut"].receptive_field == 3  # the identity path sees only its input
    assert by_name["stages.2.1.relu"].jump == 4


def test_cross_correlation_example() -> None:
    x = torch.tensor([[1, 0, 2, 1, 0], [0, 1, 3, 0, 1], [2, 1, 0, 2, 1], [1, 0, 1, 0, 2], [0, 1, 2, 1, 0]],
                     dtype=torch.float32)
    conv = nn.Conv2d(1, 1, 3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=torch.float32))
        out = conv(x[None, None])[0, 0]
    assert out.tolist() == [[-2, -1, 3], [-1, 0, 0], [0, -1, 0]]


def test_max_pool_example() -> None:
    x = torch.tensor([[1, 3, 2, 4], [5, 6, 1, 2], [0, 2, 8, 3], [1, 4, 5, 7]], dtype=torch.float32)
    assert nn.MaxPool2d(2, 2)(x[None, None])[0, 0].tolist() == [[6, 4], [4, 8]]


@pytest.mark.slow
def test_macs_and_memory() -> None:
    report = analyze(nn.Conv2d(3, 16, 3, padding=1, bias=False), (3, 32, 32))
    assert report.macs == 32 * 32 * 16 * 3 * 3 * 3
    assert report.param_bytes == 16 * 27 * 4 and report.activation_bytes == 16 * 32 * 32 * 4
    vgg = report_for_config(compose_config("model=vgg16", "data=imagefolder", "data.image_size=224",
                                           "data.num_classes=1000"))
    assert vgg.params == 138_357_544 and round(vgg.macs / 1e9, 1) == 15.5  # the published 15.5 GMACs
    assert vgg.layers[-5].receptive_field == 212  # VGG-16's last conv sees 212 pixels


def test_inspect_cli(tmp_path: Path, monkeypatch, capsys) -> None:
    from cnnbench.commands.inspect_model import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    main(["model=resnet18", "data=cifar10", "out=false"])
    out = capsys.readouterr().out
    assert "stages.3.1.conv2" in out and "11,173,962" in out and "GMACs" in out
    assert not list(tmp_path.iterdir())  # out=false: inspecting writes nothing
    main(["model=lenet5"])  # by default, the receptive-field picture and nothing else
    picture = Path("outputs/inspect/receptive_field_lenet5_1x32.png")
    assert f"wrote {picture}" in capsys.readouterr().out
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()] == [picture]
    with pytest.raises(SystemExit) as exit_info:
        main(["model=nope"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and "available options" in err
    assert err.count("\n") == 1  # one line
