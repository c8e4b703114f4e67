"""Weights from a file the user brings (model.weights=<path>), for the zoo's, torchvision's and timm's models:
loaded bit for bit, the head replaced when the classes differ, the first conv adapted to grey input, and every
file that does not fit refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from safetensors.torch import save_file

from cnnbench.errors import CnnbenchError
from cnnbench.models import build_model
from cnnbench.transfer.build import build_start_model


def start(tmp: Path, *overrides: str, classes: int = 10, channels: int = 1, size: int = 32):
    cfg = compose_config("transfer=finetune", *overrides)
    return build_start_model(cfg, classes, channels, size, None, [str(i) for i in range(classes)])


def equal_except(ours: dict, saved: dict, skip: tuple[str, ...] = ()) -> bool:
    return all(torch.equal(ours[k], saved[k]) for k in saved if not k.startswith(skip))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_a_timm_model_loads_a_file_bit_for_bit(tmp_path: Path, suffix: str) -> None:
    torch.manual_seed(0)
    trained = build_model("timm", num_classes=10, in_channels=1, image_size=32, arch="resnet18")
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    file = tmp_path / f"resnet18{suffix}"
    save_file(state, file) if suffix == ".safetensors" else torch.save(state, file)
    model, notes = start(tmp_path, "model=timm", "model.arch=resnet18", f"model.weights={file}")
    assert equal_except(model.state_dict(), state)
    assert any("classifier head kept" in n for n in notes) and f"pretrained weights: {file}" in notes[0]


def test_another_class_count_replaces_the_head_and_grey_data_adapts_the_first_conv(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("small_resnet", num_classes=100, in_channels=3, image_size=32)
    file = tmp_path / "cifar100.pt"
    torch.save({"model": source.state_dict(), "epoch": 7}, file)  # a checkpoint holding the state dict
    model, notes = start(tmp_path, "model=small_resnet", f"model.weights={file}", classes=10, channels=1)
    ours, theirs = model.state_dict(), source.state_dict()
    assert equal_except(ours, theirs, skip=("fc.", "stem.0."))
    assert ours["fc.weight"].shape == (10, 256) and any("fc: Linear(256 -> 100) replaced" in n for n in notes)
    torch.testing.assert_close(ours["stem.0.weight"], theirs["stem.0.weight"].sum(1, keepdim=True))  # RGB -> grey


def test_ddp_and_compile_prefixes_and_torchvision_architectures(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    source = torchvision.models.resnet18(num_classes=10)
    file = tmp_path / "tv.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, file)
    model, _ = start(tmp_path, "model=tv_model", "model.arch=resnet18", f"model.weights={file}", channels=3)
    assert equal_except(model.state_dict(), source.state_dict())


def test_files_that_do_not_fit_are_refused_in_one_line(tmp_path: Path) -> None:
    unrelated = tmp_path / "other.safetensors"
    save_file({"encoder.layer.0.weight": torch.zeros(3, 3)}, unrelated)
    with pytest.raises(CnnbenchError, match="do not fit .*missing: .*unexpected: encoder.layer.0.weight") as e:
        start(tmp_path, "model=small_resnet", f"model.weights={unrelated}")
    assert "\n" not in str(e.value)
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CnnbenchError, match="not a PyTorch or safetensors weights file"):
        start(tmp_path, "model=small_resnet", f"model.weights={tmp_path / 'broken.pth'}")
    with pytest.raises(CnnbenchError, match="no such file"):
        start(tmp_path, "model=small_resnet", f"model.weights={tmp_path / 'missing.pth'}")
    torch.save({"step": torch.tensor(3), "notes": "no weights"}, tmp_path / "empty.pt")
    with pytest.raises(CnnbenchError, match="holds no state dict"):
        start(tmp_path, "model=small_resnet", f"model.weights={tmp_path / 'empty.pt'}")


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(__file__).parent / "PAYLOAD_RAN",))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path: Path) -> None:
    import pickle

    marker = Path(__file__).parent / "PAYLOAD_RAN"
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"fc.weight": Payload()}))
    torch.save({"model": {"fc.weight": torch.zeros(1)}, "extra": Payload()}, tmp_path / "evil2.pt")
    marker.unlink(missing_ok=True)
    for file in (evil, tmp_path / "evil2.pt"):
        with pytest.raises(CnnbenchError, match="refused|not a PyTorch"):
            start(tmp_path, "model=small_resnet", f"model.weights={file}")
    assert not marker.exists()


def test_a_weights_file_needs_a_transfer_strategy_and_is_recorded_absolute(cli, tmp_path: Path) -> None:
    file = tmp_path / "w.pth"
    torch.save(build_model("lenet5", num_classes=10, in_channels=1, image_size=32).state_dict(), file)
    proc = cli("model.weights=w.pth", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2 and f"model.weights={file} needs a transfer strategy" in proc.stderr
    proc = cli("model.weights=w.pth", "transfer=finetune", "trainer.max_steps=2", "trainer.epochs=1",
               "logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.print_config=false",
               "logger.progress=false", "hydra.run.dir=run2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "classifier head kept" in proc.stdout
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["status"] == "completed"
    ckpt = torch.load(tmp_path / "run2" / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["config"]["model"]["weights"] == str(file)  # absolute: the run reads the same file from anywhere
