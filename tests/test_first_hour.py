"""A newcomer's first hour: small sets that train, run names and HParams columns that tell runs apart, a kept
head, a load warning that watches the whole run, a short config, legible reports and listings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from hydra import compose, initialize_config_module

from cnnbench.data.build import train_batch_size
from cnnbench.data.sampler import BatchSampler
from cnnbench.tracking import NAME_LIMIT, run_name


def test_a_small_training_set_trains_in_several_steps_and_every_image() -> None:
    cfg = compose_config("data=imagefolder", "data.root=/x").data  # batch 128
    assert train_batch_size(cfg, 221) == 28  # 221 photos: 8 steps, not 1
    assert train_batch_size(cfg, 50_000) == 128  # a large set keeps its batch
    cfg.min_steps_per_epoch = 0
    assert train_batch_size(cfg, 221) == 128
    g = torch.Generator()
    small = BatchSampler(221, 28, shuffle=True, generator=g)  # 7 full batches + 25 (11% of the set): kept
    assert len(small) == 8 and small.images_per_pass == 221
    assert sorted(torch.cat(list(small)).tolist()) == list(range(221))
    digits = BatchSampler(1294, 32, shuffle=True, generator=g)  # 14 left over (1.1%): dropped, as before
    assert len(digits) == 40 and digits.images_per_pass == 1280
    one = BatchSampler(225, 28, shuffle=True, generator=g)  # a batch of 1 would break BatchNorm: dropped
    assert len(one) == 8 and one.images_per_pass == 224


def test_run_names_are_short_distinct_and_readable() -> None:
    overrides = {"model": "resnet18", "data.root": "/very/long/path/to/hymenoptera_data/", "optimizer.lr": "0.05",
                 "trainer.epochs": "3", "logger.tensorboard": "false", "trainer.resume": "auto"}
    assert run_name("resnet18", overrides) == "resnet18,root=hymenoptera_data,lr=0.05,epochs=3"
    assert run_name("resnet18", overrides, keys=["trainer.epochs"]) == "resnet18,epochs=3"  # a sweep's keys
    clash = {"data.seed": "1", "trainer.seed": "2"}  # one last part, two keys: the full keys
    assert run_name("m", clash) == "m,data.seed=1,trainer.seed=2"
    # (issue 40) another library's models are named by their architecture; a long name loses whole parts, never
    # the architecture, and a model option a sweep varies stays in the name
    from cnnbench.models.registry import model_label

    timm = {"model": "timm", "model.arch": "convnext_atto", "data": "imagefolder", "data.root": "/p/hymenoptera_data",
            "data.image_size": "112", "trainer.max_steps": "8", "optimizer.lr": "0.05"}
    named = {run_name(model_label({"name": "timm", "arch": arch}), {**timm, "model.arch": arch})
             for arch in ("convnext_atto", "resnet18")}
    assert all(n.split(",")[0] in ("timm_convnext_atto", "timm_resnet18") for n in named) and len(named) == 2
    assert all("~" not in n.split(",")[-1].split("~")[0] for n in named)  # (no part cut in its middle)
    assert run_name("vgg11", {"model.dropout": "0.3", "trainer.seed": "1"}, keys=["model.dropout"]) == \
        "vgg11,dropout=0.3"
    long = {f"trainer.option_{i}": "x" * 12 for i in range(6)}
    names = {run_name("vgg11_bn", {**long, "trainer.seed": str(s)}) for s in range(20)}
    assert len(names) == 20 and all(len(n) <= NAME_LIMIT for n in names)


def test_every_run_has_a_value_in_every_hparams_column() -> None:
    from cnnbench.results import hparams

    digits = hparams(compose_config(), [], 32, 32)
    photos = hparams(compose_config("data=imagefolder", "data.root=/p", "model=resnet18"),
                     ["data=imagefolder", "data.root=/p", "model=resnet18"], 28, 224)
    assert list(digits) == list(photos)  # the same columns, in one order
    timm = hparams(compose_config("model=timm", "model.arch=convnext_atto"), [], 32, 224, epochs=(30, 2))
    assert timm["model"] == "timm_convnext_atto" and (timm["epochs planned"], timm["epochs run"]) == (30, 2)
    assert all(v not in ("", None) for v in [*digits.values(), *photos.values()])
    assert photos["data.image_size"] == 224 and photos["data.batch_size"] == 28
    assert photos["overrides"] == "data=imagefolder data.root=/p model=resnet18" and digits["overrides"] == "(defaults)"
    swept = hparams(compose_config("optimizer.lr=0.1", "data.num_train=100"), ["optimizer.lr=0.1",
                    "data.num_train=100"], 32, 32, swept=["data.num_train"])
    assert swept["data.num_train"] == 100  # a sweep's keys are columns of its runs, typed


@pytest.mark.slow
def test_a_transfer_source_trained_on_the_same_classes_keeps_its_head(tmp_path: Path) -> None:
    from cnnbench.config import to_container
    from cnnbench.data.pipeline import Pipeline
    from cnnbench.data.spec import InputSpec
    from cnnbench.models import build_from_config
    from cnnbench.transfer.build import build_start_model

    cfg = compose_config("transfer=finetune")
    source_model = build_from_config(to_container(cfg.model), 10, 1, 32)
    names = [str(i) for i in range(10)]
    spec = InputSpec(1, Pipeline.pad(32), (0.5,), (0.5,), tuple(names))
    source = {"model": source_model.state_dict(), "path": "earlier/best.pt", "spec": spec}
    kept, notes = build_start_model(cfg, 10, 1, 32, source, names)
    assert any("classifier head kept" in n for n in notes)
    assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), source_model.state_dict().values(),
                                                  strict=True))
    other, notes = build_start_model(cfg, 10, 1, 32, source, list("abcdefghij"))  # same count, other classes
    assert any("replaced by" in n for n in notes)


def test_the_load_warning_watches_every_epoch_and_names_the_slowdown() -> None:
    from cnnbench.engine.placement import LoadWatch

    said = []

    class Probe:
        cpus = {0, 1}

        def __init__(self, competing: float) -> None:
            self.value = competing

        def competing(self) -> float:
            return self.value

    def watch_over(loads: list[float]) -> list[str]:
        said.clear()
        watch = LoadWatch(type("R", (), {"info": lambda self, m: said.append(m)})())
        for epoch, busy in enumerate(loads, start=1):
            watch.probe = Probe(busy)
            watch.on_epoch_end(None, epoch, {"train/images_per_s": 3000.0 if busy < 0.5 else 300.0})
        watch.on_fit_end(None)
        return list(said)

    said: list[str] = []
    lines = watch_over([0.1, 1.4, 0.0])
    assert len(lines) == 2 and "during epoch 2 other processes kept 1.4 of 2 cores busy" in lines[0]
    assert "300 images/s, 10.0x slower than the fastest epoch so far (3,000 images/s)" in lines[0]
    assert "ended before epoch 3; 1 epoch(s) trained beside them (2)" in lines[1]
    # (issue 40) a load that lasts is said when it starts, changes or ends: 30 epochs, not 30 lines
    lines = watch_over([0.0, 0.0] + [1.0] * 10 + [1.8] * 8 + [0.0] * 10)
    assert len(lines) == 3 and "(was 1.0)" in lines[1] and "18 epoch(s) trained beside them (3-20)" in lines[2]
    lines = watch_over([1.0] * 30)
    assert len(lines) == 2 and "competed for the cores to the end; 30 epoch(s) trained beside them (1-30)" in lines[1]


def test_the_printed_config_is_what_differs_from_the_defaults() -> None:
    from cnnbench.config import register_configs
    from cnnbench.train import config_text

    register_configs()
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["trainer.epochs=3", "optimizer.lr=0.02"])
        text, title = config_text(cfg, full=False)
        full, _ = config_text(cfg, full=True)
    assert "what differs from the defaults" in title
    assert "epochs: 3" in text and "lr: 0.02" in text and "model:" not in text and "scheduler:" not in text
    assert len(text.splitlines()) < 8 < len(full.splitlines())


def test_report_cells_and_plot_labels_are_filled_for_runs_of_several_folders(tmp_path: Path) -> None:
    from cnnbench.leaderboard import build_leaderboard, find_runs, to_markdown

    for i, (overrides, model, data) in enumerate([(["model=small_resnet"], "small_resnet", "digits"),
                                                  ([], "lenet5", "digits"),
                                                  (["data=imagefolder", "data.root=/p"], "lenet5", "imagefolder")]):
        run = tmp_path / f"folder{i}" / "run"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({
            "status": "completed", "model": model, "data": data, "params": 10 + i, "best_val_acc": 50.0 + i,
            "test_acc": 40.0 + i, "train_time_s": 1.0, "overrides": overrides, "run_name": f"name{i}"}))
    board = build_leaderboard(find_runs([tmp_path]))
    markdown = to_markdown(board)
    assert "|  |" not in markdown and "| digits | - | lenet5 |" in markdown  # no empty cells
    assert sorted(r["label"] for r in board.rows) == ["name0", "name1", "name2"]


def test_visualize_lists_blocks_and_layers_and_help_is_plain_text(tmp_path: Path, capsys) -> None:
    from cnnbench.commands.evaluate import main as eval_main
    from cnnbench.commands.visualize import layer_table
    from cnnbench.models import build_from_config
    from cnnbench.pictures.layers import trace

    model = build_from_config({"name": "small_resnet"}, 10, 1, 32)
    table = layer_table(trace(model.eval(), torch.zeros(1, 1, 32, 32))).splitlines()
    names = [line.split()[0] for line in table[1:]]
    assert "stages.0.1" in names and "stem.0" in names and names.index("stem.0") < names.index("stages.0.1")
    assert any(line.split()[:3] == ["stages.0.1", "basic", "64x32x32"] for line in table)
    with pytest.raises(SystemExit):
        eval_main(["--help"])
    assert "``" not in capsys.readouterr().out


def test_decoding_off_a_terminal_prints_no_blank_lines(tmp_path: Path, capfd) -> None:
    from PIL import Image

    from cnnbench.data.decode import Resize
    from cnnbench.data.parallel import decode_all

    paths = []
    for i in range(40):  # more than are decoded in-process: the pool and its progress bar
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("L", (8, 8), i).save(paths[-1])
    assert decode_all(paths, 1, Resize("square", 8), workers=2).shape == (40, 1, 8, 8)
    assert capfd.readouterr().out == ""
