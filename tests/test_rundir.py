"""Run directories never lose or mix results (issue: locking, no silent overwrite, no NaN checkpoints).

Each test is named after what it protects. Runs that need signals or two processes run as subprocesses and are
awaited through what the run writes (``.hydra/config.yaml`` appears when training starts) or their exit, never
through a fixed delay.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import faults
import pytest
import torch
from conftest import ROOT, run_forked, start_cli

QUIET = ["logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.print_config=false",
         "logger.progress=false"]
SHORT = [*QUIET, "trainer.epochs=1"]
LONG = [*QUIET, "data.batch_size=4", "trainer.epochs=1", "trainer.max_steps=4000", "trainer.log_every=1"]
CEILING_S = 3600  # against a hung process only


def snapshot(run_dir: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``run_dir``: its modification time and content hash."""
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _written(path: Path) -> int:
    return path.stat().st_mtime_ns if path.is_file() else 0


def wait_until_training(run_dir: Path, proc: subprocess.Popen) -> None:
    """Until ``proc`` has started training in ``run_dir`` (it writes .hydra/config.yaml then, anew)."""
    deadline = time.monotonic() + CEILING_S
    marker = run_dir / ".hydra" / "config.yaml"
    before = _written(marker)
    while _written(marker) == before:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before training: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, "the run did not start training"
        time.sleep(0.02)


@pytest.fixture
def completed(cli, tmp_path: Path) -> Path:
    """A completed run in tmp_path/run."""
    proc = cli(*SHORT, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "run"


def test_overwrite_leaves_nothing_of_the_old_run_to_be_scored(completed: Path, tmp_path: Path) -> None:
    old = json.loads((completed / "results.json").read_text())
    proc = start_cli(*LONG, "hydra.run.dir=run", "trainer.overwrite=true", cwd=tmp_path)
    wait_until_training(completed, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=CEILING_S)
    assert proc.returncode == 130, err
    results = json.loads((completed / "results.json").read_text())
    assert results["status"] == "interrupted" and results["started_at"] > old["finished_at"]
    assert results["test_acc"] is None  # no best.pt of its own yet: not scored on the old one
    assert not (completed / "checkpoints" / "best.pt").exists()


def test_a_failure_before_training_leaves_a_completed_run_intact(cli, completed: Path, tmp_path: Path) -> None:
    before = snapshot(completed)
    for bad in (["optimizer.lr=-1"], ["data=imagefolder", f"data.root={tmp_path / 'missing'}"]):
        proc = cli(*SHORT, "hydra.run.dir=run", "trainer.resume=auto", *bad, cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.startswith("error: "), proc.stderr
        assert snapshot(completed) == before


def test_resuming_another_run_into_a_completed_directory_is_refused(cli, completed: Path, tmp_path: Path) -> None:
    assert cli(*SHORT, "hydra.run.dir=other", cwd=tmp_path).returncode == 0
    before = snapshot(completed)
    proc = cli(*SHORT, "hydra.run.dir=run", f"trainer.resume={tmp_path / 'other'}", cwd=tmp_path)
    assert proc.returncode == 2 and "would overwrite it" in proc.stderr
    assert snapshot(completed) == before


def test_an_interrupted_run_directory_is_protected_like_a_completed_one(cli, completed: Path, tmp_path: Path
                                                                         ) -> None:
    shutil.copytree(completed, tmp_path / "killed")
    (tmp_path / "killed" / "results.json").unlink()  # killed before it finished: a last.pt, no results.json
    before = snapshot(tmp_path / "killed")
    proc = cli(*SHORT, "hydra.run.dir=killed", cwd=tmp_path)
    assert proc.returncode == 2 and "interrupted run" in proc.stderr and "trainer.resume=auto" in proc.stderr
    assert "trainer.overwrite=true" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert snapshot(tmp_path / "killed") == before
    assert cli(*SHORT, "hydra.run.dir=killed", "trainer.resume=auto", cwd=tmp_path).returncode == 0


@pytest.mark.slow
def test_two_processes_cannot_share_a_run_directory(tmp_path: Path) -> None:
    # The first trains until it is stopped below: however long the second takes to start, it finds it running.
    first = start_cli(*QUIET, "data.batch_size=4", "trainer.epochs=1000", "hydra.run.dir=run", cwd=tmp_path)
    try:
        wait_until_training(tmp_path / "run", first)
        second = start_cli(*SHORT, "hydra.run.dir=run", "trainer.overwrite=true", cwd=tmp_path)
        out, err = second.communicate(timeout=CEILING_S)
        assert second.returncode == 2 and f"in use by another cnnbench run (process {first.pid})" in err, err
        assert len(err.strip().splitlines()) == 1
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=CEILING_S)
    assert first.returncode == 130
    hydra_cfg = (tmp_path / "run" / ".hydra" / "config.yaml").read_text()
    assert "epochs: 1000" in hydra_cfg  # the directory describes the run that owned it


def test_a_refused_rerun_changes_nothing(cli, completed: Path, tmp_path: Path) -> None:
    before = snapshot(completed)
    proc = cli(*SHORT, "hydra.run.dir=run", "trainer.seed=7", cwd=tmp_path)
    assert proc.returncode == 2 and "already holds a completed run" in proc.stderr
    assert snapshot(completed) == before and "seed: 0" in (completed / ".hydra" / "config.yaml").read_text()


@pytest.mark.slow
def test_non_finite_weights_are_never_checkpointed(cli, tmp_path: Path) -> None:
    proc = cli(*QUIET, "optimizer.lr=1e30", "trainer.precision=fp32", "trainer.checkpoint_every_steps=2",
               "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2 and ("non-finite" in proc.stderr or "loss became" in proc.stderr), proc.stderr
    for ckpt in (tmp_path / "run" / "checkpoints").glob("*.pt"):
        weights = torch.load(ckpt, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()), ckpt.name


@pytest.mark.slow
def test_ctrl_c_in_the_first_epoch_is_interrupted_and_resumable(cli, tmp_path: Path) -> None:
    proc = start_cli(*LONG, "hydra.run.dir=run", cwd=tmp_path)
    wait_until_training(tmp_path / "run", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=CEILING_S)
    assert proc.returncode == 130, err
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "interrupted" and results["epochs_completed"] == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["batch_in_epoch"] == ckpt["step"] > 0
    resumed = cli(*LONG[:-2], "trainer.max_steps=" + str(ckpt["step"] + 5), "hydra.run.dir=run", "trainer.resume=auto",
                  cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == ckpt["step"] + 5


def test_stale_temporary_files_of_killed_writes_are_removed(cli, completed: Path, tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = completed / "checkpoints" / f".last.pt.{dead.stdout.strip()}.abc123.tmp"  # its writer is gone
    stale.write_bytes(b"x" * 1000)
    assert cli(*SHORT, "hydra.run.dir=run", "trainer.resume=auto", "trainer.epochs=2", cwd=tmp_path).returncode == 0
    assert not stale.exists() and not list((tmp_path / "run").rglob("*.tmp"))


@pytest.mark.slow
def test_every_file_of_a_run_has_the_same_mode(cli, tmp_path: Path) -> None:
    assert cli("trainer.epochs=1", "logger.print_config=false", "hydra.run.dir=run",
               "data=imagefolder", f"data.root={tmp_path / 'none'}", cwd=tmp_path).returncode == 2  # (warm-up)
    assert cli(*SHORT[1:], "logger.figures=true", "hydra.run.dir=good", cwd=tmp_path).returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in (tmp_path / "good").rglob("*")
             if p.is_file()}
    assert any(k.endswith("best.pt") for k in modes) and any(k.endswith("results.json") for k in modes)
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


# -- every failure a user can cause is one line, exit 2 ------------------------------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["data.augment.crop_padding=100", "data.augment.padding_mode=reflect"], "crop_padding=100 must be smaller"),
    (["data.augment.cutout=1000"], "cutout=1000 must be smaller than the image side"),
    (["data.batch_size=5000", "data.min_steps_per_epoch=0"],  # (by default it is capped, and said)
     "data.batch_size=5000 is larger than the training split (1294 images)"),
])
def test_out_of_range_values_are_one_line(cli, tmp_path: Path, args: list[str], message: str) -> None:
    proc = cli(*SHORT, *args, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, \
        proc.stderr


def test_resuming_with_other_classes_or_another_optimizer_is_one_line(cli, completed: Path, tmp_path: Path) -> None:
    for args, message in ((["optimizer=adam"], "trained with optimizer torch.optim.SGD, not torch.optim.Adam"),
                          (["data=synthetic", "data.channels=1", "data.num_classes=5", "data.mean=[0.5]",
                            "data.std=[0.5]"], "trained on 10 classes")):
        proc = cli(*SHORT, f"trainer.resume={completed}", "hydra.run.dir=new", *args, cwd=tmp_path)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_full_disk_is_one_line(cli, tmp_path: Path, monkeypatch) -> None:
    import torch as torch_module

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/3: file write failed, unexpected pos 123 vs 456")

    monkeypatch.setattr(torch_module, "save", full)
    proc = cli(*SHORT, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot write" in proc.stderr and "is the disk full?" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not list((tmp_path / "run").rglob("*.tmp"))


def test_a_decompression_bomb_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    from cnnbench.data.decode import read_image
    from cnnbench.errors import CnnbenchError

    Image.new("RGB", (64, 64)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4,096 pixels > 2 x the limit: PIL's bomb error
    with pytest.raises(CnnbenchError, match="cannot decode image .*bomb.png.*decompression bomb"):
        read_image(tmp_path / "bomb.png", 3, 32)


@pytest.mark.slow
def test_a_bad_image_in_a_streamed_folder_is_one_line(cli, cifar_subset: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(cifar_subset, root)
    (root / "train" / "cat" / "zz_broken.jpg").write_bytes(b"not a jpeg")
    proc = cli(*SHORT, "data=imagefolder", f"data.root={root}", "data.max_memory_gb=0.00001", "data.batch_size=16",
               "model=small_resnet", "model.widths=[8,16,32]", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2 and "cannot decode image" in proc.stderr and "zz_broken.jpg" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    error = json.loads((tmp_path / "run" / "results.json").read_text())["error"]
    assert "\n" not in error and "Traceback" not in error


def test_visualize_refuses_a_checkpoint_without_config(tmp_path: Path, capsys) -> None:
    from cnnbench.commands.visualize import main

    torch.save({"model": {}}, tmp_path / "bare.pt")
    with pytest.raises(SystemExit) as code:
        main([f"run={tmp_path / 'bare.pt'}", f"image={ROOT / 'docs' / 'feature_maps.png'}", "layer=x"])
    err = capsys.readouterr().err
    assert code.value.code == 2 and "has no config" in err and len(err.strip().splitlines()) == 1


# -- the fault matrix ----------------------------------------------------------------------------------------------
FAULT_RUN = [*QUIET, "trainer.epochs=2", "trainer.checkpoint_every_steps=10", "trainer.deterministic=true"]
STEPS_PER_EPOCH = 40  # digits: 1,294 training images at batch 32


def _complete_files(run_dir: Path) -> dict | None:
    """Every checkpoint loads and results.json parses (old or new, never half); returns the results."""
    for ckpt in (run_dir / "checkpoints").glob("*.pt"):
        torch.load(ckpt, weights_only=True)
    path = run_dir / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sigkill", "sigint", "sigterm", "exception", "disk_full", "read_only"])
@pytest.mark.parametrize("point", ["start", "mid_epoch", "checkpoint", "evaluation", "results"])
def test_fault_matrix_leaves_complete_files_honest_results_and_a_way_on(cli, tmp_path: Path, point: str,
                                                                       kind: str) -> None:
    faulty = run_forked((*FAULT_RUN, "hydra.run.dir=run"), tmp_path,
                        prepare=lambda: faults.install(point, kind, STEPS_PER_EPOCH))
    assert (tmp_path / "fault.fired").is_file(), faulty.stderr[-2000:]  # the run met its fault
    run_dir = tmp_path / "run"
    results = _complete_files(run_dir)
    if results is not None and results.get("test_acc") is not None:  # test scores belong to best.pt's weights
        best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
        assert results["scored_step"] == best["step"], (results, faulty.stderr[-1000:])
    resumed = cli(*FAULT_RUN, "hydra.run.dir=run", "trainer.resume=auto", cwd=tmp_path)
    if resumed.returncode == 0:  # continued to the end
        final = _complete_files(run_dir)
        assert final["status"] == "completed" and final["steps"] == 2 * STEPS_PER_EPOCH
        assert final["scored_step"] == torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)["step"]
    else:  # or refused in one line (nothing to resume from, or a completed run)
        assert resumed.returncode == 2 and len(resumed.stderr.strip().splitlines()) == 1, resumed.stderr
        assert "Traceback" not in resumed.stderr
