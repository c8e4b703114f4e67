"""The second hour (issue 40): runs built on others keep their input, models from other libraries are named by
their architecture, HParams shows what ran, and a missing weights file is said before any data is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tensorboard_run
from PIL import Image
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2

QUIET = ["logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.print_config=false",
         "logger.progress=false"]
PHOTOS = ["data=imagefolder", "model=small_resnet", "model.widths=[8,16,32]", "data.batch_size=8"]


def photo_tree(root: Path) -> Path:
    """12 photos per class, 80x60 px (the crop pipeline's kind), two classes, in train/ and test/."""
    for split, count in (("train", 12), ("test", 4)):
        for c, shade in (("ants", 60), ("bees", 190)):
            for i in range(count):
                path = root / split / c / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (80, 60), (shade, (37 * i) % 256, 90)).save(path)
    return root


def test_a_missing_weights_file_is_said_before_any_data_is_read(cli, tmp_path: Path) -> None:
    photos = photo_tree(tmp_path / "photos")
    proc = cli(*QUIET, *PHOTOS, f"data.root={photos}", "transfer=finetune", f"model.weights={tmp_path / 'no.pth'}",
               cwd=tmp_path)
    assert proc.returncode == 2 and "no such file" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "data:" not in proc.stdout  # (nothing was decoded first)


@pytest.mark.slow
def test_a_run_built_on_another_takes_its_input_unless_the_command_sets_it(cli, tmp_path: Path) -> None:
    """transfer.checkpoint=<a run at 48 px> trains at 48 px (results.json and the console say so), at 32 px with
    data.image_size=32 (said as kept); trainer.resume=<that run> in a new directory continues at 48 px too."""
    photos = photo_tree(tmp_path / "photos")
    common = [*QUIET, *PHOTOS, f"data.root={photos}", "trainer.max_steps=2"]
    assert cli(*common, "data.image_size=48", "hydra.run.dir=source", cwd=tmp_path).returncode == 0
    source = tmp_path / "source"
    derived = cli(*common, "transfer=finetune", f"transfer.checkpoint={source}", "hydra.run.dir=derived",
                  cwd=tmp_path)
    assert derived.returncode == 0, derived.stderr[-2000:]
    results = json.loads((tmp_path / "derived" / "results.json").read_text())
    assert results["input_from_source"]["image_size"] == 48 and "input as " in derived.stdout
    assert torch.load(tmp_path / "derived" / "checkpoints" / "best.pt", weights_only=True)["meta"]["image_size"] == 48
    told = cli(*common, "transfer=finetune", f"transfer.checkpoint={source}", "data.image_size=32",
               "hydra.run.dir=told", cwd=tmp_path)
    assert told.returncode == 0 and "yours kept: data.image_size" in told.stdout
    assert torch.load(tmp_path / "told" / "checkpoints" / "best.pt", weights_only=True)["meta"]["image_size"] == 32
    resumed = cli(*[a for a in common if not a.startswith("trainer.max_steps")], "trainer.max_steps=4",
                  f"trainer.resume={source}", "hydra.run.dir=resumed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=True)["meta"]["image_size"] == 48


def hparams_of(run_dir: Path) -> dict[str, object]:
    """The HParams columns a run recorded, and its trial's group name (``_group``)."""
    values: dict[str, object] = {}
    for event in EventFileLoader(str(next(tensorboard_run(run_dir).glob("events.*")))).Load():
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    start = data.session_start_info
                    values["_group"] = start.group_name
                    for key, v in start.hparams.items():
                        values[key] = v.string_value or v.number_value
    return values


@pytest.mark.slow
def test_two_timm_architectures_get_their_own_readable_names_and_columns(cli, tmp_path: Path) -> None:
    """Two timm runs differ by architecture in their names (not a hash), summaries and HParams; HParams shows the
    epochs planned and run (max_steps ends these in the first epoch), and names the trial after the run."""
    names = {}
    for arch in ("resnet10t", "convnext_atto"):
        proc = cli("logger.figures=false", "logger.snapshots=0", "logger.print_config=false", "logger.progress=false",
                   "model=timm", f"model.arch={arch}", "data.image_size=32", "data.channels=3",
                   "trainer.max_steps=2", f"hydra.run.dir={arch}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        names[arch] = tensorboard_run(tmp_path / arch).name
        assert f"cnnbench: timm_{arch} on digits" in proc.stdout
        columns = hparams_of(tmp_path / arch)
        assert columns["model"] == f"timm_{arch}" and columns["epochs run"] == 1 and columns["epochs planned"] == 1
        assert str(columns["_group"]).startswith(f"timm_{arch}")
    assert names["resnet10t"].startswith("timm_resnet10t") and names["convnext_atto"].startswith("timm_convnext_atto")
    assert "~" not in names["resnet10t"] + names["convnext_atto"]
