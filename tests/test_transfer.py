"""Transfer learning: torchvision weights from the offline cache, earlier runs' checkpoints, head replacement,
input-channel adaptation, and what each strategy trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from conftest import compose_config
from torch import nn

from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.runtime import seed_everything
from cnnbench.errors import CnnbenchError
from cnnbench.models import build_model
from cnnbench.models.surgery import adapt_input_conv, find_heads
from cnnbench.models.torchvision_zoo import arch_kwargs, resolve_weights
from cnnbench.resolve import resolve
from cnnbench.train import run
from cnnbench.transfer.build import apply_weights_preprocessing, build_start_model
from cnnbench.transfer.strategy import TransferPlan, backbone_units

QUIET = ("logger.print_config=false", "logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0",
         "logger.progress=false")
SMALL = ("model=small_resnet", "model.widths=[8,16,32]", "model.blocks_per_stage=1", "data.image_size=16",
         "data.num_test=64")


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch) -> Path:
    """An empty TORCH_HOME, with downloads routed to a closed local port (offline even on a networked machine)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    return home


def cache_weights(home: Path, arch: str, name: str, state: dict | None = None) -> dict:
    """Put a state dict where torchvision looks before downloading ``arch``'s weights ``name``."""
    w = resolve_weights(arch, name)
    if state is None:
        torch.manual_seed(123)
        model = torchvision.models.get_model(arch, weights=None, num_classes=len(w.meta["categories"]),
                                             **arch_kwargs(arch, name, 224))
        state = model.state_dict()
    path = home / "hub" / "checkpoints" / Path(w.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("channels", [3, 1])
def test_torchvision_weights_load_offline_and_the_head_is_replaced(torch_home: Path, channels: int) -> None:
    source = cache_weights(torch_home, "resnet18", "IMAGENET1K_V1")
    cfg = compose_config("model=tv_resnet18", "model.weights=IMAGENET1K_V1", "transfer=finetune")
    model, notes = build_start_model(cfg, num_classes=5, channels=channels, image_size=32)
    state = model.state_dict()
    for key, value in source.items():
        if key.startswith("fc."):
            continue
        if key == "conv1.weight" and channels == 1:  # gray input: the colour kernels summed
            assert torch.equal(state[key], value.sum(1, keepdim=True))
        else:
            assert torch.equal(state[key], value), key
    assert model.fc.out_features == 5 and model.fc.in_features == 512
    assert "fc: Linear(512 -> 1000) replaced by Linear(512 -> 5)" in notes
    assert cfg.model.arch == "resnet18"
    assert model(torch.randn(2, channels, 32, 32)).shape == (2, 5)


def test_uncached_weights_offline_name_the_file(torch_home: Path) -> None:
    cfg = compose_config("model=tv_resnet18", "model.weights=IMAGENET1K_V1", "transfer=finetune")
    with pytest.raises(CnnbenchError) as err:
        build_start_model(cfg, num_classes=5, channels=3, image_size=32)
    msg = str(err.value)
    expected = torch_home / "hub" / "checkpoints" / Path(resolve_weights("resnet18", "IMAGENET1K_V1").url).name
    assert str(expected) in msg and "not cached" in msg and "\n" not in msg


def test_weights_that_do_not_fit_are_listed(torch_home: Path) -> None:
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    del state["layer4.1.bn2.running_var"]
    state["extra.weight"] = torch.zeros(3)
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    cache_weights(torch_home, "resnet18", "IMAGENET1K_V1", state)
    cfg = compose_config("model=tv_resnet18", "model.weights=IMAGENET1K_V1", "transfer=finetune")
    with pytest.raises(CnnbenchError) as err:
        build_start_model(cfg, num_classes=5, channels=3, image_size=32)
    msg = str(err.value)
    assert "missing: layer4.1.bn2.running_var" in msg and "unexpected: extra.weight" in msg
    assert "layer1.0.conv1.weight (64, 64, 1, 1) vs (64, 64, 3, 3)" in msg


def test_a_file_that_is_not_a_state_dict_is_refused(torch_home: Path) -> None:
    path = torch_home / "hub" / "checkpoints" / Path(resolve_weights("resnet18", "IMAGENET1K_V1").url).name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    cfg = compose_config("model=tv_resnet18", "model.weights=IMAGENET1K_V1", "transfer=finetune")
    with pytest.raises(CnnbenchError, match="cannot read the cached weights"):
        build_start_model(cfg, num_classes=5, channels=3, image_size=32)


def test_weights_bring_their_preprocessing_unless_given() -> None:
    cfg = compose_config("model=tv_resnet50", "model.weights=IMAGENET1K_V2", "transfer=freeze_backbone",
                         "data=cifar10")
    note = apply_weights_preprocessing(cfg, explicit=set())
    assert cfg.data.image_size == 224 and list(cfg.data.mean) == [0.485, 0.456, 0.406]
    assert list(cfg.data.std) == [0.229, 0.224, 0.225]
    assert "resizes to 232 then crops 224" in note
    cfg = compose_config("model=tv_resnet50", "model.weights=IMAGENET1K_V2", "transfer=freeze_backbone",
                         "data.image_size=32")
    apply_weights_preprocessing(cfg, explicit={"data.image_size"})
    assert cfg.data.image_size == 32 and len(cfg.data.mean) == 1  # digits are gray: one mean for 3 kernels
    assert cfg.data.mean[0] == pytest.approx((0.485 + 0.456 + 0.406) / 3)


@pytest.mark.slow
def test_every_listed_torchvision_config_builds_its_architecture() -> None:
    for name, arch in [("tv_resnet18", "resnet18"), ("tv_vgg16", "vgg16"), ("tv_efficientnet_b0", "efficientnet_b0"),
                       ("tv_mobilenet_v3_large", "mobilenet_v3_large"), ("tv_vit_b_16", "vit_b_16")]:
        cfg = compose_config(f"model={name}")
        assert cfg.model.arch == arch and cfg.model.weights is None
        size = 224 if arch.startswith("vit") else 64
        with torch.device("meta"):
            model = build_model("tv_model", num_classes=7, in_channels=1, image_size=size, arch=arch)
        head = model.get_submodule(find_heads(model)[0])
        assert head.out_features == 7, name
        first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        assert first_conv.in_channels == 1, name


def test_unknown_torchvision_arch_lists_the_choices() -> None:
    with pytest.raises(CnnbenchError, match="model.arch=resnet9000 is not a torchvision classification model; "
                                            "available: .*resnet18"):
        build_model("tv_model", num_classes=7, in_channels=3, image_size=32, arch="resnet9000")


def test_adapted_input_conv_sees_gray_as_repeated_rgb() -> None:
    torch.manual_seed(0)
    w = torch.randn(8, 3, 3, 3)
    gray = torch.randn(2, 1, 9, 9)
    rgb_out = torch.nn.functional.conv2d(gray.expand(-1, 3, -1, -1), w)
    assert torch.allclose(torch.nn.functional.conv2d(gray, adapt_input_conv(w, 1)), rgb_out, atol=1e-5)
    w1 = torch.randn(8, 1, 3, 3)
    rgb = torch.randn(2, 3, 9, 9)  # gray weights on colour input: as if the input were its channel mean
    assert torch.allclose(torch.nn.functional.conv2d(rgb, adapt_input_conv(w1, 3)),
                          torch.nn.functional.conv2d(rgb.mean(1, keepdim=True), w1), atol=1e-5)


# -- strategies, through the trainer, from an earlier run's checkpoint ----------------------------------------------

@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A small_resnet trained for one epoch on the digits (the 'pretrained' model)."""
    run_dir = tmp_path_factory.mktemp("source")
    run(compose_config(*SMALL, *QUIET, "trainer.epochs=1"), run_dir)
    return run_dir


def _backbone_equal(a: dict, b: dict) -> dict[str, bool]:
    return {k: torch.equal(a[k], b[k]) for k in a if not k.startswith("fc.")}


@pytest.mark.slow
def test_freeze_backbone_keeps_every_backbone_tensor(source_run: Path, tmp_path: Path) -> None:
    overrides = (*QUIET, "transfer=freeze_backbone", f"transfer.checkpoint={source_run}", "trainer.epochs=2",
                 "data.image_size=16", "data.num_test=64")
    results = run(compose_config(*overrides), tmp_path)
    assert results["model"] == "small_resnet" and results["status"] == "completed"
    source = load_checkpoint(source_run / "checkpoints" / "best.pt")["model"]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    same = _backbone_equal(source, ckpt["model"])
    assert any("running_mean" in k for k in same) and any("num_batches_tracked" in k for k in same)
    assert all(same.values()), [k for k, v in same.items() if not v]
    # the head trained: it moved away from its fresh initialisation (same seed, same draws as in run())
    resolved = resolve(compose_config(*overrides), [])
    seed_everything(resolved.cfg.trainer.seed)
    start, _ = build_start_model(resolved.cfg, num_classes=10, channels=1, image_size=16, source=resolved.source)
    assert not torch.equal(start.fc.weight, ckpt["model"]["fc.weight"])
    assert torch.equal(start.stages[0][0].conv1.weight, source["stages.0.0.conv1.weight"])
    # the optimizer holds the head only
    assert len(ckpt["optimizer"]["param_groups"]) == 1
    assert len(ckpt["optimizer"]["param_groups"][0]["params"]) == 2  # fc.weight, fc.bias
    from cnnbench.commands.evaluate import evaluate_run  # a transferred run evaluates like any other

    assert evaluate_run(tmp_path)["acc"] == pytest.approx(results["test_acc"])


def test_gradual_unfreeze_trains_the_head_first_then_the_top_stage(source_run: Path, tmp_path: Path) -> None:
    common = (*QUIET, "transfer=gradual_unfreeze", f"transfer.checkpoint={source_run}", "transfer.head_epochs=1",
              "transfer.backbone_lr_scale=0.25", "scheduler=none", "optimizer.lr=0.002", "data.image_size=16",
              "data.num_test=64")
    source = load_checkpoint(source_run / "checkpoints" / "best.pt")["model"]
    run(compose_config(*common, "trainer.epochs=1"), tmp_path / "head")
    after_head = load_checkpoint(tmp_path / "head" / "checkpoints" / "last.pt")["model"]
    assert all(_backbone_equal(source, after_head).values())  # frozen through the head epochs

    run(compose_config(*common, "trainer.epochs=2", "transfer.stages=2"), tmp_path / "top")
    ckpt = load_checkpoint(tmp_path / "top" / "checkpoints" / "last.pt")
    same = _backbone_equal(source, ckpt["model"])
    assert not same["stages.2.0.conv2.weight"]  # the top stage trained in epoch 2
    assert same["stem.0.weight"] and same["stages.0.0.conv1.weight"]  # the bottom stage is still frozen
    lrs = [g["lr"] for g in ckpt["optimizer"]["param_groups"]]
    assert lrs[0] == 0.002 and all(lr == pytest.approx(0.002 * 0.25) for lr in lrs[1:])


def test_gradual_unfreeze_schedule_and_frozen_batchnorm() -> None:
    model = build_model("small_resnet", num_classes=10, in_channels=3, image_size=32, widths=[8, 16, 32],
                        blocks_per_stage=1)
    cfg = compose_config("transfer=gradual_unfreeze", "transfer.checkpoint=x", "transfer.head_epochs=2",
                         "transfer.stages=3", "transfer.stage_epochs=2").transfer
    plan = TransferPlan(model, cfg)
    n = len(plan.units)
    expected = {0: 0, 1: 0, 2: n // 3, 3: n // 3, 4: 2 * n // 3, 5: 2 * n // 3, 6: n}  # units training per epoch
    for epoch, count in expected.items():
        model.train()
        plan.freeze(epoch)
        training = [all(p.requires_grad for p in u.params) for u in plan.units]
        assert training == [False] * (n - count) + [True] * count, epoch  # unfrozen from the top down
        for unit, trains in zip(plan.units, training, strict=True):
            for m in unit.modules:
                if isinstance(m, nn.BatchNorm2d):
                    assert m.training == trains
        assert all(p.requires_grad for p in model.fc.parameters())


def test_layer_decay_gives_lower_units_smaller_learning_rates() -> None:
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    units = backbone_units(model, find_heads(model))
    assert [u.name for u in units] == ["stem.0", "stem.1"] + [f"stages.{s}.{b}" for s in range(4) for b in (0, 1)]
    cfg = compose_config("transfer=finetune", "transfer.checkpoint=x", "transfer.layer_decay=0.5").transfer
    groups = TransferPlan(model, cfg).param_groups(lr=1.0)
    n = len(units)
    assert [g["lr"] for g in groups] == [1.0] + [0.5 ** (n - i) for i in range(n)]
    in_groups = sorted(id(p) for g in groups for p in g["params"])
    assert in_groups == sorted(id(p) for p in model.parameters())  # every parameter exactly once


def test_rgb_data_on_a_gray_checkpoint(source_run: Path) -> None:
    resolved = resolve(compose_config("transfer=finetune", f"transfer.checkpoint={source_run}"), [])
    cfg = resolved.cfg
    model, notes = build_start_model(cfg, num_classes=3, channels=3, image_size=16, source=resolved.source)
    source = load_checkpoint(source_run / "checkpoints" / "best.pt")["model"]
    assert torch.equal(model.stem[0].weight, source["stem.0.weight"].repeat(1, 3, 1, 1) / 3)
    assert cfg.model.name == "small_resnet" and model.fc.out_features == 3  # the source's model config
    assert any("input channels 1 -> 3" in n for n in notes)


@pytest.mark.slow
def test_cli_freeze_backbone_on_torchvision_weights(cli, torch_home: Path, tmp_path: Path, monkeypatch) -> None:
    cache_weights(torch_home, "resnet18", "IMAGENET1K_V1")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("COLUMNS", "200")
    proc = cli("model=tv_resnet18", "model.weights=IMAGENET1K_V1", "transfer=freeze_backbone",
                   "data.image_size=32", "trainer.max_steps=3", "logger.print_config=false",
                   "logger.snapshots=0", "hydra.run.dir=run", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "fc: Linear(512 -> 1000) replaced by Linear(512 -> 10)" in out
    assert "conv1: input channels 3 -> 1 (pretrained kernel adapted)" in out
    assert "training the head only" in out and "5,130 of 11,175,370 parameters train" in out
    assert "preprocessing of resnet18 IMAGENET1K_V1: mean=[0.449], std=[0.226]" in out
    import json

    from cnnbench.commands.evaluate import evaluate_run  # torchvision's model, adapted to grey: eval rebuilds it

    recorded = json.loads((tmp_path / "run" / "results.json").read_text())
    assert evaluate_run(tmp_path / "run")["acc"] == pytest.approx(recorded["test_acc"])
