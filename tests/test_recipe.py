"""The training-recipe options: mixup/cutmix, random erasing, EMA of the weights, drop path, gradient
accumulation, early stopping, no weight decay on norms and biases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli
from torchvision.transforms import v2

from cnnbench.config.schema import AugmentConfig
from cnnbench.data.augment import brightness_contrast, random_erasing
from cnnbench.data.mixing import Mixer
from cnnbench.engine.early_stopping import EarlyStopping
from cnnbench.engine.ema import ModelEma
from cnnbench.engine.optim import build_optimizer
from cnnbench.models import build_model

QUIET = ("logger.tensorboard=false", "logger.snapshots=0", "logger.figures=false", "logger.print_config=false",
         "logger.progress=false")


def results_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# -- mixup and cutmix ------------------------------------------------------------------------------------------------
def test_mixup_blends_each_image_with_the_reversed_batch_and_its_targets_alike() -> None:
    mixer = Mixer(AugmentConfig(mixup_alpha=1.0), num_classes=4, seed=0)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    lams = []
    for _ in range(400):
        mixed, target = mixer(x, y)
        lam = target[0, 0].item() if y[0] != y[-1] else None  # image 0 (class 0) is mixed with image 5 (class 1)
        assert torch.allclose(target.sum(1), torch.ones(6))
        assert lam is not None and torch.allclose(mixed, lam * x + (1 - lam) * x.flip(0), atol=1e-5)
        lams.append(lam)
    lams_t = torch.tensor(lams)
    # Beta(1, 1) is uniform on [0, 1]: mean 1/2, variance 1/12
    assert abs(lams_t.mean().item() - 0.5) < 0.05 and abs(lams_t.var().item() - 1 / 12) < 0.02


def test_cutmix_pastes_a_box_and_weighs_the_targets_by_its_area() -> None:
    mixer = Mixer(AugmentConfig(cutmix_alpha=1.0), num_classes=2, seed=1)
    x = torch.stack([torch.zeros(1, 16, 16), torch.ones(1, 16, 16)])  # image 0 all 0, image 1 all 1
    y = torch.tensor([0, 1])
    boxes = 0
    for _ in range(200):
        mixed, target = mixer(x, y)
        pasted = mixed[0].mean().item()  # the fraction of image 0 that came from image 1
        assert target[0, 1].item() == pytest.approx(pasted, abs=1e-6)
        assert target[1, 0].item() == pytest.approx(1 - mixed[1].mean().item(), abs=1e-6)
        boxes += pasted > 0
    assert boxes > 150  # most draws paste a non-empty box


def test_mix_prob_and_switch_prob_choose_what_happens() -> None:
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    never = Mixer(AugmentConfig(mixup_alpha=1.0, mix_prob=0.0), num_classes=4, seed=0)
    mixed, target = never(x, y)
    assert torch.equal(mixed, x) and torch.equal(target, torch.eye(4))
    both = Mixer(AugmentConfig(mixup_alpha=1.0, cutmix_alpha=1.0, mix_switch_prob=0.5), num_classes=4, seed=0)
    kinds = []
    for _ in range(300):
        mixed, target = both(x, y)
        blended = torch.allclose(mixed, target[0, 0] * x + target[0, 3] * x.flip(0), atol=1e-5)
        kinds.append(blended)
    assert 0.35 < sum(kinds) / len(kinds) < 0.65  # half mixup (a blend of the whole image), half cutmix


@pytest.mark.slow
def test_mixed_targets_reach_the_loss_and_train_accuracy_uses_the_larger_weight(tmp_path: Path) -> None:
    proc = run_cli(*QUIET, "trainer.epochs=2", "data.augment.mixup_alpha=0.4", "data.augment.cutmix_alpha=1.0",
                   "trainer.label_smoothing=0.1", "data.augment.erasing_prob=0.25", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = results_of(tmp_path / "run")
    assert r["status"] == "completed" and r["test_acc"] > 30
    assert all(0 <= h["train/acc"] <= 100 for h in r["history"])


# -- random erasing --------------------------------------------------------------------------------------------------
def _erased(x: torch.Tensor) -> torch.Tensor:
    """Per image: the fraction of pixels set to 0, and the erased box's height / width (B, 2)."""
    zero = (x == 0).all(1)  # (B, H, W)
    rows, cols = zero.any(2).sum(1).float(), zero.any(1).sum(1).float()
    return torch.stack([zero.flatten(1).float().mean(1), rows / cols.clamp_min(1)], 1)


def test_random_erasing_draws_as_torchvision_does() -> None:
    """Ours batched against torchvision's RandomErasing one image at a time: the share of images erased, the
    erased area's distribution and the boxes' aspect, on 4000 images each."""
    torch.manual_seed(0)
    x = torch.rand(4000, 3, 32, 32) + 0.5  # no pixel is 0 before erasing
    ours = _erased(random_erasing(x, 0.5, torch.Generator().manual_seed(0)))
    erase = v2.RandomErasing(p=0.5, value=0)
    theirs = _erased(torch.stack([erase(img) for img in x]))
    for stats in (ours, theirs):
        hit = stats[:, 0] > 0
        assert 0.46 < hit.float().mean() < 0.54
        area = stats[hit, 0]
        assert area.min() >= 0.015 and area.max() <= 0.36  # scale (0.02, 0.33), up to rounding of the sides
        assert stats[hit, 1].min() > 0.2 and stats[hit, 1].max() < 4.0  # ratio (0.3, 3.3) as h / w, rounded sides
    hit_o, hit_t = ours[:, 0] > 0, theirs[:, 0] > 0
    assert ours[hit_o, 0].mean().item() == pytest.approx(theirs[hit_t, 0].mean().item(), abs=0.01)
    assert ours[hit_o, 1].log().mean().item() == pytest.approx(theirs[hit_t, 1].log().mean().item(), abs=0.06)


def test_brightness_and_contrast_shift_then_scale_each_image_within_their_ranges() -> None:
    """Per image: x -> (x + s) * k with s ~ U(-b, b), k ~ U(1 - c, 1 + c), the same for every pixel and channel;
    the draws cover their ranges."""
    x = torch.randn(2000, 3, 8, 8)
    out = brightness_contrast(x, 0.14, 0.13, torch.Generator().manual_seed(0))
    # solve each image's (s, k) from two pixels, then check every other pixel obeys them
    a, b = x.flatten(1)[:, :2], out.flatten(1)[:, :2]
    k = (b[:, 0] - b[:, 1]) / (a[:, 0] - a[:, 1])
    s = b[:, 0] / k - a[:, 0]
    assert torch.allclose((x + s[:, None, None, None]) * k[:, None, None, None], out, atol=1e-4)
    assert s.abs().max() <= 0.14 + 1e-4 and s.abs().max() > 0.13 and s.mean().abs() < 0.01
    assert (k - 1).abs().max() <= 0.13 + 1e-4 and (k - 1).abs().max() > 0.12 and (k - 1).mean().abs() < 0.01
    assert torch.equal(brightness_contrast(x, 0.0, 0.0, torch.Generator()), x)


# -- EMA -------------------------------------------------------------------------------------------------------------
def test_ema_follows_the_weights_by_its_decay() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = ModelEma(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # BatchNorm's running statistics and batch count change too
    ema.update(model, step=1)
    for k, v in ema.state_dict().items():
        now = model.state_dict()[k]
        expected = 0.9 * start[k] + 0.1 * now if v.is_floating_point() else now
        assert torch.allclose(v, expected), k
    assert [ModelEma(model, 0.999, warmup=True).decay_at(s) for s in (0, 10, 10_000)] == [
        pytest.approx(0.1), pytest.approx(11 / 20), 0.999]


@pytest.mark.slow
def test_ema_is_validated_beside_the_weights_and_the_better_is_tested(tmp_path: Path) -> None:
    proc = run_cli(*QUIET, "trainer.epochs=3", "trainer.ema_decay=0.9", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = results_of(tmp_path / "run")
    assert all("val_ema/acc" in h and "val/acc" in h for h in r["history"])
    best = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert r["scored_weights"] == best["weights"] in ("raw", "ema")
    kept = max(r["history"], key=lambda h: max(h["val/acc"], h["val_ema/acc"]))
    assert r["best_val_acc"] == max(kept["val/acc"], kept["val_ema/acc"])
    if best["weights"] == "ema" and best["step"] == last["step"]:
        assert all(torch.equal(best["model"][k], last["ema"][k]) for k in last["ema"])


# -- drop path -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["small_resnet", "resnet50", "se_resnet18", "vit_tiny"])
def test_drop_path_rises_linearly_with_depth_and_is_off_in_eval(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=3, image_size=32, drop_path=0.3)
    if name == "vit_tiny":
        torch.nn.init.normal_(model.head.weight)  # (zero at init: every output would be the bias)
    blocks = list(model.blocks) if name == "vit_tiny" else [b for stage in model.stages for b in stage]
    rates = [getattr(b.drop_path, "p", 0.0) for b in blocks]
    n = len(rates)
    assert rates == pytest.approx([0.3 * i / (n - 1) for i in range(n)])
    plain = build_model(name, num_classes=10, in_channels=3, image_size=32)
    plain.load_state_dict(model.state_dict())  # the same parameters: drop path adds none
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), plain.eval()(x))
        model.train()
        outs = [model(x) for _ in range(4)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])  # training drops branches at random


# -- gradient accumulation -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_accumulated_micro_batches_step_like_one_large_batch(tmp_path: Path) -> None:
    """LeNet-5 has no batch statistics: 2 micro-batches of 32 give the update of one batch of 64 (fp32)."""
    common = (*QUIET, "trainer.precision=fp32", "data.augment.crop_padding=0", "trainer.max_steps=3",
              "trainer.epochs=1", "optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0.9")
    for name, extra in (("big", ["data.batch_size=64"]),
                        ("accumulated", ["data.batch_size=32", "trainer.accumulate_steps=2"])):
        proc = run_cli(*common, *extra, f"hydra.run.dir={name}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    big, acc = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("big", "accumulated"))
    assert big["step"] == acc["step"] == 3
    start = build_model("lenet5", num_classes=10, in_channels=1, image_size=32).state_dict()
    for k, v in big["model"].items():
        assert torch.allclose(v, acc["model"][k], atol=1e-6), k
        assert not torch.allclose(v, start[k]) or "bias" in k  # (it trained)


@pytest.mark.slow
def test_accumulation_counts_optimizer_steps(tmp_path: Path) -> None:
    proc = run_cli(*QUIET, "trainer.epochs=2", "trainer.accumulate_steps=3", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = results_of(tmp_path / "run")
    batches = 1294 // 32  # the digits' training split at batch 32, partial batch dropped
    assert r["steps"] == 2 * math.ceil(batches / 3)
    assert r["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine ends at the last optimizer step


# -- early stopping --------------------------------------------------------------------------------------------------
def test_early_stopping_counts_epochs_without_improvement() -> None:
    es = EarlyStopping("val/acc", patience=2, min_delta=0.5)
    values = [50.0, 60.0, 60.4, 60.3, 61.0]  # +0.4 and -0.1 are no improvement at min_delta 0.5
    stops = [es.update(epoch, {"val/acc": v}) for epoch, v in enumerate(values, start=1)]
    assert stops == [False, False, False, True, True] and (es.best, es.best_epoch, es.stopped_epoch) == (60.0, 2, 4)
    loss = EarlyStopping("val/loss", patience=1)
    assert [loss.update(e, {"val/loss": v}) for e, v in enumerate([1.0, 0.9, 0.95], 1)] == [False, False, True]
    last = EarlyStopping("val/loss", patience=1)
    last.update(1, {"val/loss": 1.0})
    assert not last.update(2, {"val/loss": 2.0}, last=True)  # the last epoch ends the run anyway


@pytest.mark.slow
def test_early_stopping_ends_the_run_and_a_resume_stays_stopped(tmp_path: Path) -> None:
    frozen = (*QUIET, "trainer.epochs=6", "optimizer.lr=1e-12", "trainer.early_stopping.patience=2",
              "trainer.early_stopping.monitor=val/loss", "trainer.early_stopping.min_delta=0.01")
    proc = run_cli(*frozen, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "early stopping after epoch 3" in proc.stdout + proc.stderr
    r = results_of(tmp_path / "run")
    assert r["status"] == "completed" and r["epochs_completed"] == 3
    assert r["early_stopping"] | {"best": None} == {
        "monitor": "val/loss", "patience": 2, "min_delta": 0.01, "best": None, "best_epoch": 1, "bad_epochs": 2,
        "stopped_epoch": 3, "stopped": True}
    again = run_cli(*frozen, "hydra.run.dir=run", "trainer.resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert results_of(tmp_path / "run")["epochs_completed"] == 3


@pytest.mark.slow
def test_early_stopping_on_validation_needs_a_validation_split(tmp_path: Path) -> None:
    proc = run_cli(*QUIET, "data.val_fraction=0", "trainer.early_stopping.patience=2", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 2 and "needs a validation split" in proc.stderr and "Traceback" not in proc.stderr


# -- weight decay on norms and biases --------------------------------------------------------------------------------
def _decay_by_name(opt: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, tuple[float, float]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}


def test_decay_norm_bias_false_exempts_norm_layers_and_biases() -> None:
    model = build_model("small_resnet", num_classes=10, in_channels=3, image_size=32, widths=[8, 16, 32])
    cfg = compose_config("optimizer.lr=0.1", "optimizer.weight_decay=5e-4", "optimizer.decay_norm_bias=false").optimizer
    groups = _decay_by_name(build_optimizer(cfg, model.parameters(), model), model)
    assert groups["stem.0.weight"] == (0.1, 5e-4) and groups["fc.weight"] == (0.1, 5e-4)
    assert groups["fc.bias"] == (0.1, 0.0) and groups["stem.1.weight"] == (0.1, 0.0)
    assert groups["stem.1.bias"] == (0.1, 0.0)
    # composed with norm_lr_scale and with parameter groups of their own (a transfer plan's lr per unit)
    cfg = compose_config("optimizer.lr=0.1", "optimizer.weight_decay=5e-4", "optimizer.decay_norm_bias=false",
                         "optimizer.norm_lr_scale=4").optimizer
    head = [model.fc.weight, model.fc.bias]
    body = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    groups = _decay_by_name(build_optimizer(cfg, [{"params": body, "lr": 0.01}, {"params": head}], model), model)
    assert groups["stem.1.weight"] == (pytest.approx(0.04), 0.0) and groups["stem.0.weight"] == (0.01, 5e-4)
    assert groups["fc.bias"] == (0.1, 0.0) and groups["fc.weight"] == (0.1, 5e-4)
    # the default keeps torch's behaviour: one group, every parameter decayed
    plain = build_optimizer(compose_config("optimizer.weight_decay=5e-4").optimizer, model.parameters(), model)
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["weight_decay"] == 5e-4
