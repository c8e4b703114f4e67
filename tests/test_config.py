"""Every config option composes and validates; bad values fail before any work with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose_config, run_cli

from cnnbench.config import validate
from cnnbench.errors import CnnbenchError

GROUPS = ["model", "data", "optimizer", "scheduler", "transfer", "trainer", "logger", "experiment", "hparams_search"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((ROOT / "conf" / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    overrides = [f"{group}={option}"]
    if option == "imagefolder":
        overrides.append("data.root=/some/folder")
    if group == "transfer" and option not in ("scratch", "distill"):  # pretrained strategies need a source
        overrides.append("transfer.checkpoint=/some/run")
    if option == "distill":
        overrides.append("transfer.teacher=/some/run")
    if option == "hf":
        overrides.append("data.path=/some/dataset")
    if option == "tv_model":
        overrides.append("model.arch=resnet18")
    cfg = compose_config(*overrides)
    validate(cfg)
    if group not in ("experiment", "trainer", "hparams_search"):
        assert cfg[group] is not None


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert any(g == group for g, _ in OPTIONS), group


def test_cifar10_reference_is_the_reference_recipe() -> None:
    cfg = compose_config("experiment=cifar10_reference")
    assert cfg.model.name == "small_resnet" and list(cfg.model.widths) == [64, 128, 256]
    assert cfg.model.blocks_per_stage == 2
    assert cfg.data.name == "cifar10" and cfg.data.batch_size == 128
    assert cfg.data.augment.crop_padding == 4 and cfg.data.augment.hflip and cfg.data.augment.cutout == 0
    assert list(cfg.data.mean) == [0.4914, 0.4822, 0.4465] and list(cfg.data.std) == [0.2470, 0.2435, 0.2616]
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.1, 0.9, 5e-4)
    assert cfg.optimizer.nesterov is False
    assert cfg.scheduler.name == "cosine" and cfg.scheduler.interval == "epoch"
    assert cfg.trainer.epochs == 200 and cfg.trainer.eval_every == 10


def test_cifar10_speedrun_is_airbench94_in_cnnbench_terms() -> None:
    cfg = compose_config("experiment=cifar10_speedrun")
    validate(cfg)
    m, d, o, s, t = cfg.model, cfg.data, cfg.optimizer, cfg.scheduler, cfg.trainer
    assert m.name == "airbench" and list(m.widths) == [64, 256, 256] and m.whiten and m.dirac and not m.bn_scale
    assert m.stem_bias_epochs == 3 and d.batch_size == 1024 and d.val_fraction == 0
    assert (d.augment.crop_padding, d.augment.padding_mode, d.augment.alternate_flip) == (2, "reflect", True)
    # airbench: lr 11.5 per summed loss with momentum 0.85 -> 11.5 / (1 + 1 / 0.15) per mean loss
    assert o.lr == pytest.approx(11.5 / (1 + 1 / 0.15), rel=1e-3) and o.momentum == 0.85 and o.nesterov
    assert o.lr * o.weight_decay == pytest.approx(0.0153 * 1024 / (1024 * (1 + 1 / 0.15)), rel=1e-2)
    assert o.norm_lr_scale == 64
    assert (s.name, s.anneal_strategy, s.pct_start, s.cycle_momentum) == ("onecycle", "linear", 0.23, False)
    assert 1 / s.div_factor == 0.2 and 1 / (s.div_factor * s.final_div_factor) == pytest.approx(0.07, rel=1e-3)
    assert (t.epochs, t.label_smoothing, t.lookahead_every, t.lookahead_decay, t.tta) == (10, 0.2, 5, 0.95, 2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-0.1", "optimizer.lr must be a positive number"),
        ("optimizer.lr=0", "optimizer.lr must be a positive number"),
        ("data.batch_size=0", "data.batch_size must be a positive integer"),
        ("trainer.epochs=0", "trainer.epochs must be a positive integer"),
        ("trainer.max_steps=-5", "trainer.max_steps must be positive"),
        ("trainer.device=tpu", "is not a device"),
        ("data.val_fraction=1.5", "data.val_fraction must be in [0, 1)"),
        ("trainer.label_smoothing=1.0", "trainer.label_smoothing"),
        ("scheduler.min_lr=-1", "scheduler.min_lr"),
        ("+scheduler.gamma=0.5", "scheduler.gamma is not an option of scheduler=cosine"),
        ("optimizer.momentum=-1", "rejected its config"),
        ("+optimizer.foo=1", "unexpected keyword argument 'foo'"),
        ("data.std=[0.0]", "data.std values must be positive"),
        ("+transfer.layer_decay=0.5", "transfer.layer_decay is not an option of transfer=scratch"),
        ("transfer=finetune", "transfer=finetune needs one source of pretrained weights"),
        ("transfer.checkpoint=/x/run", "transfer.checkpoint=/x/run needs a transfer strategy"),
        ("optimizer.norm_lr_scale=0", "optimizer.norm_lr_scale must be a positive number"),
        ("trainer.lookahead_decay=1.0", "trainer.lookahead_decay must be in [0, 1)"),
        ("trainer.lookahead_every=-1", "trainer.lookahead_every must be >= 0"),
        ("scheduler=onecycle scheduler.anneal_strategy=step", "scheduler.anneal_strategy must be cos or linear"),
        ("data.augment.mixup_alpha=-1", "data.augment.mixup_alpha and cutmix_alpha must be >= 0"),
        ("data.augment.cutmix_alpha=-0.5", "data.augment.mixup_alpha and cutmix_alpha must be >= 0"),
        ("data.augment.mix_prob=1.5", "data.augment.mix_prob must be in [0, 1]"),
        ("data.augment.mix_switch_prob=-0.1", "data.augment.mix_switch_prob must be in [0, 1]"),
        ("data.augment.erasing_prob=2", "data.augment.erasing_prob must be in [0, 1]"),
        ("data.augment.auto=autoaugment", "data.augment.auto must be null or one of trivialaugment, randaugment"),
        ("data.augment.auto=randaugment data.augment.auto_magnitude=31", "auto_magnitude in [0, auto_bins)"),
        ("data.augment.auto=randaugment data.augment.auto_num_ops=0", "auto_num_ops >= 1"),
        ("trainer.ema_decay=1.0", "trainer.ema_decay must be in [0, 1)"),
        ("trainer.accumulate_steps=0", "trainer.accumulate_steps must be an integer >= 1"),
        ("trainer.early_stopping.patience=-1", "trainer.early_stopping.patience must be >= 0"),
        ("trainer.early_stopping.min_delta=-1", "trainer.early_stopping.min_delta must be >= 0"),
        ("trainer.early_stopping.monitor=test/acc", "trainer.early_stopping.monitor must be one of val/acc"),
        ("trainer.early_stopping.patience=2 trainer.early_stopping.monitor=val_ema/acc",
         "trainer.early_stopping.monitor=val_ema/acc needs trainer.ema_decay > 0"),
        ("model=small_resnet model.drop_path=1.0", "model.drop_path must be in [0, 1)"),
        ("trainer.compile=true trainer.compile_mode=fast", "trainer.compile_mode must be one of default, reduce-"),
        ("trainer.compile_mode=reduce-overhead", "trainer.compile_mode=reduce-overhead needs trainer.compile=true"),
        ("model=vit_tiny model.drop_path=-0.1", "model.drop_path must be in [0, 1)"),
        # numbers out of range or not finite: refused up front, never a traceback or a "divergence" later
        ("optimizer.lr=inf", "optimizer.lr=inf is not a finite number"),
        ("optimizer.lr=1e308", "optimizer.lr=1e+308 is not a finite number within float32's range"),
        ("optimizer.weight_decay=nan", "optimizer.weight_decay=nan is not a finite number"),
        ("data.mean=[inf]", "data.mean.0=inf is not a finite number"),
        ("trainer.seed=99999999999999999999", "trainer.seed must be in [0, 4294967295]"),
        ("trainer.seed=-1", "trainer.seed must be in [0, 4294967295]"),
        ("data.split_seed=4294967296", "data.split_seed must be in [0, 4294967295]"),
        ("data.image_size=100000", "data.image_size must be a whole number in [1, 4096]"),
        ("data=imagefolder data.root=/x data.image_size=64 data.store_size=1", "data.store_size=1 (training photos"),
        ("data=imagefolder data.root=/x data.image_size=112 data.resize_size=100", "data.resize_size=100 (the side"),
        ("data.num_workers=-1", "data.num_workers must be 0 (load in this process) or more, got -1"),
        ("data.mean=[0.1,0.2] data.std=[1,1]", "data.mean and data.std need 1 value each, got [0.1, 0.2]"),
        ("data.cache_dir=/tmp/photos/cache data=imagefolder data.root=/tmp/photos", "lies inside data.root"),
    ],
)
def test_bad_values_fail_with_one_line(override: str, message: str) -> None:
    from cnnbench.resolve import resolve

    cfg = compose_config(*override.split())
    with pytest.raises(CnnbenchError, match=None) as err:
        resolve(cfg, override.split())
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=no_such_model"], "available options in 'model': airbench, alexnet, efficientnet_b0"),
        (["optimizer=no_such_opt"], "available options in 'optimizer': adam, adamw, muon, sgd"),
        (["trainer.epochs=abc"], "could not be converted to Integer"),
        (["trainer.precision=fp64"], "expected one of [auto, fp32, bf16, fp16]"),
        (["optimizer.lr=-1"], "optimizer.lr must be a positive number, got -1"),
        (["data.batch_size=0"], "data.batch_size must be a positive integer, got 0"),
        (["trainer.device=cuda:7"], "trainer.device=cuda:7"),
        (["data=imagefolder"], "data=imagefolder needs data.root="),
        (["+model.depth=3"], "model.depth is not an option of model=lenet5"),
        (["model=vgg16", "model.dropuot=0.1"], "model.dropuot is not a key of model; did you mean model.dropout?"),
        (["scheduler.mn_lr=0.1"], "scheduler.mn_lr is not a key of scheduler; did you mean scheduler.min_lr?"),
        (["scheduler=step", "scheduler.gamma=abc"], "Value 'abc' of type 'str' could not be converted to Float"),
        (["model=tv_resnet18", "model.weights=DEFAULT"], "model.weights=DEFAULT needs a transfer strategy"),
        (["model=tv_resnet18", "model.weights=NOPE", "transfer=finetune"],
         "model.weights=NOPE is not a weight set of resnet18; available: IMAGENET1K_V1"),
        (["transfer=gradual_unfreeze", "transfer.checkpoint=/x", "transfer.stages=0"],
         "transfer.stages must be an integer >= 1"),
        (["transfer=freeze_backbone", "transfer.checkpoint=/no/such/run"], "checkpoint=/no/such/run: no such run"),
    ],
)
def test_cli_bad_input_is_one_line_without_traceback(cli, tmp_path: Path, args: list[str], message: str) -> None:
    proc = cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/checkpoints"))  # failed before any training


MISSPELT = [  # (issue 40) a misspelt key in every group, set or appended: one line naming the closest key
    ("trainer.epoch=3", "trainer.epoch is not a key of trainer; did you mean trainer.epochs?"),
    ("data.batch_sze=8", "data.batch_sze is not a key of data; did you mean data.batch_size?"),
    ("data.augment.hflp=true", "data.augment.hflp is not a key of data.augment; did you mean data.augment.hflip?"),
    ("logger.snapshot=2", "logger.snapshot is not a key of logger; did you mean logger.snapshots?"),
    ("sweep.skip=true", "sweep.skip is not a key of sweep; did you mean sweep.skip_completed?"),
    ("trainer.early_stopping.patiance=2", "trainer.early_stopping.patiance is not a key of "
     "trainer.early_stopping; did you mean trainer.early_stopping.patience?"),
    ("optimizer.momentun=0.9", "did you mean optimizer.momentum?"),
    ("scheduler.min_l=0", "did you mean scheduler.min_lr?"),
    ("model=small_resnet model.widht=3", "did you mean model.widths?"),
    ("transfer=finetune transfer.layer_dcay=0.5", "did you mean transfer.layer_decay?"),
]


@pytest.mark.parametrize("appended", [False, True])
@pytest.mark.parametrize(("override", "message"), MISSPELT)
def test_a_misspelt_key_in_any_group_names_the_closest_one(cli, tmp_path: Path, override: str, message: str,
                                                           appended: bool) -> None:
    """`cnnbench trainer.epoch=3` and `cnnbench +trainer.epoch=3` both exit 2 in one line naming trainer.epochs,
    never with Hydra's hint to append the key."""
    *choices, key = override.split()
    proc = cli(*choices, f"+{key}" if appended else key, cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr and "append" not in proc.stderr, proc.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.json"))


def test_open_maps_take_new_keys() -> None:
    """model.kwargs (timm's keyword arguments) and an optimizer's own keywords are the user's."""
    from cnnbench.config.checks import check_values

    check_values(compose_config("model=timm", "model.arch=resnet18", "+model.kwargs.drop_rate=0.1"))
    check_values(compose_config("optimizer=sgd", "+optimizer.differentiable=false"))


def test_help_imports_no_torch(tmp_path: Path) -> None:
    """`cnnbench --help` answers without importing torch, torchvision or Optuna (python -X importtime shows it)."""
    code = ("import sys; sys.argv = ['cnnbench', '--help']\nfrom cnnbench.train import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('imported:', *(m for m in ('torch', 'torchvision', 'optuna') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "imported:", proc.stdout[-500:]


def test_torch_and_torchvision_that_do_not_belong_together_are_one_line(tmp_path: Path) -> None:
    """A torchvision built for another torch (or a CUDA build beside a CPU-only torch): every command, --help too,
    exits 2 in one line naming both versions and the command that fixes them; found from the metadata alone."""
    from importlib.metadata import version

    from cnnbench.versions import mismatch

    assert mismatch("2.14.1", "0.29.1") is None and mismatch("2.14.1+cpu", "0.29.1+cpu") is None
    assert "--index-url https://download.pytorch.org/whl/cpu" in mismatch("2.14.1+cpu", "0.29.1")
    assert "torchvision==0.29.*" in mismatch("2.14.1", "0.24.1")
    fake = tmp_path / "site" / "torchvision-0.24.1.dist-info"  # what `pip install torchvision==0.24.1` records
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: torchvision\nVersion: 0.24.1\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    for command in (["-m", "cnnbench", "--help"], ["-m", "cnnbench", "trainer=debug"]):
        proc = subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
        assert f"torch {version('torch')} and torchvision 0.24.1 do not belong together" in proc.stderr
        assert "pip install --force-reinstall 'torchvision==" in proc.stderr


@pytest.mark.slow
def test_help_lists_groups_and_options(tmp_path: Path) -> None:
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for text in ("cnnbench", "vgg16_bn, vgg19, vgg19_bn, vit_b_16, vit_small, vit_tiny",
                 "optimizer: adam, adamw, muon, sgd",
                 "experiment: cifar10_reference, cifar10_speedrun, cifar10_speedrun_2s, cifar10_speedrun_muon, "
                 "modern_recipe",
                 "scheduler: cosine, linear, none, onecycle, step", "data: cifar10, cifar100, digits"):
        assert text in proc.stdout, text
    groups = proc.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    assert "schema" not in groups and "model_" not in groups  # the option schemas are not options


def test_model_schemas_are_the_builders_signatures() -> None:
    from cnnbench.config.model_options import MODEL_OPTIONS
    from cnnbench.models.registry import option_table

    assert option_table() == MODEL_OPTIONS  # else: python -m scripts.dev.model_options
    assert dict(compose_config("model=vgg16").model) == {"name": "vgg16", "dropout": 0.5, "weights": None}  # (a file)
    assert compose_config("model=efficientnet_b3", "model.stochastic_depth=0.1").model.stochastic_depth == 0.1


@pytest.mark.slow
def test_yaml_options_do_not_restate_schema_defaults() -> None:
    """Each default is written once: an option's YAML file sets only what differs from its schema."""
    import dataclasses

    import yaml
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    restated = []
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):  # (once: it costs 0.2 s)
        composed = {(group, path): compose(config_name="config", overrides=[
            f"{group}={path.stem}", *(["transfer.checkpoint=x"] if group == "transfer" and path.stem != "scratch"
                                      else [])])[group]
            for group in ("model", "scheduler", "optimizer", "transfer", "trainer", "logger", "data")
            for path in sorted((ROOT / "conf" / group).glob("*.yaml"))}
    for (group, path), node in composed.items():
        raw = yaml.safe_load(path.read_text()) or {}
        raw = raw.get(group, raw) if group == "transfer" else raw  # (@package _global_ files)
        schema = OmegaConf.get_type(node)
        defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else
                             f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                    for f in dataclasses.fields(schema)}
        for key, value in raw.items():
            if key != "defaults" and key in defaults and value == defaults[key] and value is not None:
                restated.append(f"{path.relative_to(ROOT)}: {key}")
    assert restated == []
