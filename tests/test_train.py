"""End-to-end runs of the CLI and the pieces of the training loop."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli, tensorboard_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnbench.engine.checkpoint import atomic_save, load_checkpoint
from cnnbench.engine.lookahead import Lookahead
from cnnbench.engine.optim import build_optimizer, build_scheduler
from cnnbench.errors import CnnbenchError
from cnnbench.train import run

RESULT_KEYS = {"status", "model", "data", "params", "test_acc", "best_val_acc", "test_loss", "epochs_completed",
               "steps", "train_time_s", "train_images_per_s", "device", "precision", "seed", "overrides"}


def read_run(run_dir: Path) -> tuple[dict, dict]:
    results = json.loads((run_dir / "results.json").read_text())
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    return results, ckpt


@pytest.mark.slow
def test_default_run_trains_lenet5_on_digits(tmp_path: Path) -> None:
    """`cnnbench` with no arguments: the acceptance run (>= 95% test accuracy, well under 90 s)."""
    proc = run_cli(cwd=tmp_path, timeout=180, process=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    results, ckpt = read_run(run_dir)
    assert RESULT_KEYS <= set(results)
    assert results["status"] == "completed" and results["model"] == "lenet5" and results["data"] == "digits"
    assert results["params"] == 61_706 and results["epochs_completed"] == 30
    assert results["test_acc"] >= 95.0, results["test_acc"]
    assert 0 <= results["best_val_acc"] <= 100 and results["train_images_per_s"] > 0
    assert results["train_time_s"] < 90
    # checkpoints: plain containers, loadable with weights_only=True, and the best one restores the model
    assert {"model", "optimizer", "scheduler", "epoch", "step", "config"} <= set(ckpt)
    assert ckpt["epoch"] == 30 and ckpt["step"] == results["steps"] and ckpt["config"]["model"]["name"] == "lenet5"
    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    assert set(best["model"]) == set(ckpt["model"])
    assert not list(run_dir.rglob("*.tmp"))
    # Hydra's record of the composed config, and the console summary
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert "test acc" in proc.stdout and "Traceback" not in proc.stderr
    # TensorBoard scalars
    acc = EventAccumulator(str(tensorboard_run(run_dir))).Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "lr", "train/images_per_s"} <= tags
    assert len(acc.Scalars("val/acc")) == 30
    assert acc.Scalars("test/acc")[-1].value == pytest.approx(results["test_acc"], abs=1e-3)


@pytest.mark.slow
def test_max_steps_stops_and_still_evaluates(cli, tmp_path: Path) -> None:
    proc = cli("trainer.max_steps=7", "trainer.epochs=5", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results, ckpt = read_run(tmp_path / "run")
    assert results["steps"] == 7 and ckpt["step"] == 7 and results["epochs_completed"] == 1
    assert results["status"] == "completed" and results["test_acc"] is not None
    assert results["overrides"] == ["trainer.max_steps=7", "trainer.epochs=5"]
    assert ckpt["scheduler"]["last_epoch"] == 7  # cosine stepped once per optimizer step


@pytest.mark.slow
def test_small_resnet_on_real_cifar10_imagefolder(cifar_subset: Path, tmp_path: Path) -> None:
    run(compose_config("data=imagefolder", f"data.root={cifar_subset}", "model=small_resnet", "trainer.max_steps=3",
                       "data.batch_size=32", f"data.cache_dir={tmp_path / 'cache'}", "logger.progress=false"),
        tmp_path / "run")
    results, ckpt = read_run(tmp_path / "run")
    assert results["model"] == "small_resnet" and results["steps"] == 3 and results["params"] == 2_777_674
    assert ckpt["model"]["fc.weight"].shape == (10, 256)


@pytest.mark.slow
def test_compile_wraps_the_model_the_trainer_runs(tmp_path: Path) -> None:
    """``trainer.compile=true``: the trainer steps (and the test scores) the torch.compile'd module, whose
    parameters are the model's. Built only: compiling happens at the first call, which the cuda tests make. A
    mode that replays CUDA graphs on a GPU is plain compilation on the CPU: the compiled module also evaluates."""
    from cnnbench.assemble import build_run
    from cnnbench.engine.distributed import DistInfo
    from cnnbench.engine.runtime import resolve_precision
    from cnnbench.tracking import Reporter

    device = torch.device("cpu")
    for mode in ("default", "reduce-overhead"):
        cfg = compose_config("trainer.compile=true", f"trainer.compile_mode={mode}", "logger.tensorboard=false",
                             "logger.snapshots=0")
        with Reporter(tmp_path, tensorboard=False, progress=False, quiet=True) as reporter:
            built = build_run(cfg, tmp_path, device, resolve_precision("fp32", device), DistInfo(), reporter)
        assert built.compiled is not None and built.trainer.net is built.compiled
        assert built.compiled._orig_mod is built.model
        assert built.trainer.eval_net is built.compiled and not built.trainer.cuda_graphs


def test_failed_run_writes_results_with_error(tmp_path: Path) -> None:
    proc = run_cli("data=imagefolder", f"data.root={tmp_path / 'missing'}", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "does not exist" in results["error"]


@pytest.mark.slow
def test_per_class_metrics_do_not_depend_on_the_pictures(tmp_path: Path) -> None:
    results = run(compose_config("trainer.epochs=2", "logger.tensorboard=false", "logger.figures=false",
                                 "logger.snapshots=0", "logger.print_config=false", "logger.progress=false"),
                  tmp_path)
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "figures").exists()
    per_class = results["test_per_class"]
    assert list(per_class) == [str(i) for i in range(10)] and sum(c["images"] for c in per_class.values()) == 359
    assert results["test_acc_per_class"] == {name: c["recall"] for name, c in per_class.items()}
    hits = sum(c["recall"] * c["images"] / 100 for c in per_class.values())
    assert 100 * hits / 359 == pytest.approx(results["test_acc"], abs=1e-4)  # (per-class values in float32)
    assert 0 < results["test_macro_f1"] <= 100 and results["test_top5_acc"] >= results["test_acc"]


def test_metrics_match_a_hand_count() -> None:
    from cnnbench.evaluation.metrics import metrics
    from cnnbench.evaluation.scores import Scores

    # 3 classes; true labels 0,0,0,1,1,2 and top-1 predictions 0,0,1,1,2,2
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    top = torch.tensor([[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0]])
    m = metrics(Scores(0.5, top, labels), ["a", "b", "c"])
    assert m["acc"] == pytest.approx(400 / 6)
    # recall a 2/3, b 1/2, c 1/1; precision a 2/2, b 1/2, c 1/2
    assert m["balanced_acc"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 1) / 3)
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 * 1 / 1.5]
    assert m["macro_f1"] == pytest.approx(100 * sum(f1) / 3)
    assert m["per_class"]["a"] == pytest.approx({"precision": 100.0, "recall": 200 / 3, "f1": 100 * f1[0],
                                                 "images": 3})
    assert "top5_acc" not in m  # only with more than 5 classes
    many = metrics(Scores(0.0, torch.tensor([[1, 2, 3, 4, 5], [6, 0, 1, 2, 3]]), torch.tensor([5, 6])),
                   [str(i) for i in range(7)])
    assert many["acc"] == 50.0 and many["top5_acc"] == 100.0
    assert many["balanced_acc"] == 50.0  # averaged over the two classes that have images


# -- schedules ---------------------------------------------------------------------------------------------------
def _lrs(*overrides: str, steps_per_epoch: int = 10, total_steps: int = 100) -> list[float]:
    cfg = compose_config(*overrides)
    opt = build_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(1))])
    sched = build_scheduler(opt, cfg.scheduler, steps_per_epoch, total_steps)
    per_epoch = cfg.scheduler.interval == "epoch"
    lrs = []
    for step in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if not per_epoch or (step + 1) % steps_per_epoch == 0:
            sched.step()
    return lrs


def test_cosine_anneals_to_min_lr_at_the_last_step() -> None:
    lrs = _lrs("optimizer.lr=0.1", "scheduler.min_lr=0.001")
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(0.001, abs=2e-4)
    assert lrs[50] == pytest.approx(0.0505, abs=2e-3)  # half-way is the mean of both ends
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_warmup_then_cosine() -> None:
    lrs = _lrs("optimizer.lr=0.1", "scheduler.warmup_epochs=2")
    assert lrs[0] == pytest.approx(0.01) and max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert lrs.index(max(lrs)) == 20 and lrs[-1] < 0.001


def test_step_and_onecycle_and_constant() -> None:
    step = _lrs("scheduler=step", "scheduler.step_size=3", "optimizer.lr=1.0")
    assert step[29] == pytest.approx(1.0) and step[30] == pytest.approx(0.1) and step[60] == pytest.approx(0.01)
    one = _lrs("scheduler=onecycle", "optimizer.lr=0.5")
    assert max(one) == pytest.approx(0.5, rel=1e-3) and one.index(max(one)) == pytest.approx(25, abs=1)
    assert one[0] < 0.05 and one[-1] < 1e-3
    assert _lrs("scheduler=none", "optimizer.lr=0.3") == pytest.approx([0.3] * 100)


def test_linear_falls_from_lr_to_end_factor_at_the_last_step() -> None:
    lrs = _lrs("scheduler=linear", "optimizer.lr=0.2")
    assert lrs == pytest.approx([0.2 * (1 - s / 100) for s in range(100)])  # airbench94_muon's lr x (1 - s / steps)
    warm = _lrs("scheduler=linear", "optimizer.lr=0.2", "scheduler.warmup_epochs=2", "scheduler.end_factor=0.5")
    assert warm[0] == pytest.approx(0.02) and warm[20] == pytest.approx(0.2) and warm[-1] > 0.1


def test_onecycle_whose_rise_ends_at_the_first_step_does_not_divide_by_zero() -> None:
    # pct_start x total = 1: torch's OneCycleLR alone raises ZeroDivisionError at its first step
    lrs = _lrs("scheduler=onecycle", "scheduler.pct_start=0.01", "optimizer.lr=0.2", "scheduler.div_factor=1",
               "scheduler.anneal_strategy=linear")
    assert lrs[0] == pytest.approx(0.2) and lrs[1] < lrs[0] and lrs == sorted(lrs, reverse=True)


def test_onecycle_as_airbench_triangle_keeps_momentum() -> None:
    cfg = ("scheduler=onecycle", "optimizer.lr=1.0", "scheduler.anneal_strategy=linear", "scheduler.div_factor=5",
           "scheduler.final_div_factor=2.857", "scheduler.pct_start=0.23", "scheduler.cycle_momentum=false")
    lrs = _lrs(*cfg)
    # OneCycleLR peaks at step pct_start * total - 1 = 22: linear from 0.2 up to 1, then linear down to 0.07
    assert lrs[0] == pytest.approx(0.2) and lrs[11] == pytest.approx(0.6) and lrs[22] == pytest.approx(1.0)
    assert lrs[99] == pytest.approx(0.2 / 2.857) and lrs[60] == pytest.approx(1 - (1 - 0.07) * 38 / 77, rel=1e-3)
    opt = build_optimizer(compose_config(*cfg).optimizer, [torch.nn.Parameter(torch.zeros(1))])
    sched = build_scheduler(opt, compose_config(*cfg).scheduler, 10, 100)
    for _ in range(30):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["momentum"] == 0.9  # cycle_momentum=false leaves SGD's momentum alone


def test_norm_lr_scale_puts_normalisation_parameters_in_their_own_group() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    cfg = compose_config("optimizer.lr=0.1", "optimizer.weight_decay=1e-3", "optimizer.norm_lr_scale=64").optimizer
    opt = build_optimizer(cfg, list(model.parameters()), model)
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    for p in (model[1].weight, model[1].bias):
        assert by_id[id(p)]["lr"] == pytest.approx(6.4) and by_id[id(p)]["weight_decay"] == pytest.approx(1e-3 / 64)
    for p in (model[0].weight, model[0].bias, model[2].weight):
        assert by_id[id(p)]["lr"] == pytest.approx(0.1) and by_id[id(p)]["weight_decay"] == pytest.approx(1e-3)
    assert len(by_id) == 6
    # groups given by a transfer strategy keep their own rates, scaled
    groups = [{"params": [model[1].bias, model[2].weight], "lr": 0.01}]
    opt = build_optimizer(cfg, groups, model)
    assert [(len(g["params"]), g["lr"]) for g in opt.param_groups] == [(1, 0.01), (1, pytest.approx(0.64))]


def test_lookahead_pulls_weights_towards_the_slow_copy_on_its_schedule() -> None:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    la = Lookahead(model, every=2, decay=0.9, total_steps=4)
    with torch.no_grad():
        model.weight.fill_(1.0)  # "trained" to 1
    la.step(1)
    assert model.weight.item() == 1.0  # not a lookahead step
    la.step(2)  # d = 0.9^2 * (2/4)^3 = 0.10125: slow = 0 + (1 - d) * (1 - 0)
    assert model.weight.item() == pytest.approx(1 - 0.10125) and la.slow["weight"].item() == pytest.approx(0.89875)
    with torch.no_grad():
        model.weight.fill_(2.0)
    la.step(4)  # d = 0.81: slow = 0.89875 + 0.19 * (2 - 0.89875)
    assert model.weight.item() == pytest.approx(0.89875 + 0.19 * (2 - 0.89875))
    with torch.no_grad():
        model.weight.fill_(5.0)
    la.finish()
    assert model.weight.item() == pytest.approx(0.89875 + 0.19 * (2 - 0.89875))  # the model ends on the slow copy


# -- checkpoints ---------------------------------------------------------------------------------------------------
def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save({"model": {"w": torch.ones(2)}}, path)
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):
        atomic_save({"model": {"w": torch.zeros(2)}, "bad": lambda: None}, path)  # lambdas do not pickle
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_load_checkpoint_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(CnnbenchError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CnnbenchError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CnnbenchError, match="not a cnnbench checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_tta_level_2_adds_one_pixel_shifts() -> None:
    from cnnbench.evaluation.scores import tta_logits

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 3))
    x = torch.randn(5, 3, 8, 8)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, x.flip(3), padded[..., :8, :8], padded[..., :8, :8].flip(3), padded[..., 2:, 2:],
             padded[..., 2:, 2:].flip(3)]
    weights = [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    with torch.no_grad():
        expected = sum(w * model(v) for w, v in zip(weights, views, strict=True))
        assert torch.allclose(tta_logits(model, x, 2), expected, atol=1e-6)


def test_flip_tta_averages_the_logits_of_each_image_and_its_mirror() -> None:
    from cnnbench.data import DeviceLoader, ImageSet
    from cnnbench.evaluation.scores import predict
    from cnnbench.precision import Precision

    torch.manual_seed(0)
    images = ImageSet(torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8), torch.randint(0, 3, (10,)))
    loader = DeviceLoader(images, 4, torch.device("cpu"), [0.5] * 3, [0.25] * 3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 36, 3))
    x = loader.normalize(images.images)
    with torch.no_grad():
        logits = (model(x) + model(x.flip(3))) / 2
    scores = predict(model, loader, Precision("fp32", "cpu"), tta=1)
    assert torch.equal(scores.preds, logits.argmax(1)) and torch.equal(scores.labels, images.labels)
    assert scores.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, images.labels).item(), rel=1e-5)
    plain = predict(model, loader, Precision("fp32", "cpu"), tta=0)
    with torch.no_grad():
        assert torch.equal(plain.preds, model(x).argmax(1))



@pytest.mark.slow
def test_a_compiled_run_after_another_in_one_process_trains_as_a_fresh_one(tmp_path: Path) -> None:
    """torch.compile keeps per-process state that changes the next compilation's kernels (a sweep's jobs run in
    one process): each run compiles from a clean slate, so a second run trains bit for bit as it does alone."""
    run = ("model=small_resnet", "model.widths=[16,32,64]", "data.num_train=1024", "data.num_test=128",
           "data.batch_size=64", "trainer.epochs=2", "trainer.precision=fp32", "trainer.deterministic=true",
           "trainer.accumulate_steps=2", "trainer.lookahead_every=2", "trainer.ema_decay=0.9", "trainer.compile=true",
           "logger.tensorboard=false", "logger.snapshots=0", "logger.figures=false", "logger.print_config=false")
    for name in ("first", "second"):  # in this process, one after the other
        assert run_cli(*run, f"hydra.run.dir={name}", cwd=tmp_path).returncode == 0
    alone = run_cli(*run, "hydra.run.dir=alone", cwd=tmp_path, process=True)
    assert alone.returncode == 0, alone.stderr[-2000:]
    second, fresh = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["model"]
                     for d in ("second", "alone"))
    for key, value in second.items():
        assert torch.equal(value, fresh[key]), key
