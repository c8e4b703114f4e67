"""Exact resume: a run killed (SIGKILL) or interrupted (SIGINT, mid-epoch) and resumed ends bit-identical."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli, start_cli

COMMON = ["model=small_resnet", "model.widths=[16,32,64]", "data.num_train=1000", "data.num_test=100",
          "trainer.epochs=3", "trainer.deterministic=true", "logger.tensorboard=false", "logger.snapshots=0",
          "logger.figures=false", "logger.print_config=false"]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"]


def start(tmp_path: Path, run: str, *extra: str) -> subprocess.Popen:
    return start_cli(*COMMON, f"hydra.run.dir={run}", *extra, cwd=tmp_path)


CEILING_S = 3600  # only against a hung process: the wait is on the process, whatever the machine's speed


def wait_for_checkpoint(path: Path, proc: subprocess.Popen, min_step: int = 0) -> dict:
    """The checkpoint at ``path`` once the running ``proc`` has written it at ``min_step`` or later (written
    atomically: safe to read). Fails if the process ends first, saying what it printed."""
    deadline = time.monotonic() + CEILING_S
    while time.monotonic() < deadline:
        if path.is_file():
            ckpt = torch.load(path, weights_only=True)
            if ckpt["step"] >= min_step:
                return ckpt
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (exit {proc.returncode}) before writing {path} at step >= "
                                 f"{min_step}: {err[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no checkpoint {path} at step >= {min_step} after {CEILING_S} s; the run was killed")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("resume_ref")
    proc = run_cli(*COMMON, "hydra.run.dir=full", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "full", json.loads((tmp / "full" / "results.json").read_text())


def assert_same_run(run_dir: Path, reference: tuple[Path, dict]) -> None:
    ref_dir, ref_results = reference
    ours, theirs = final_weights(run_dir), final_weights(ref_dir)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key  # bit for bit
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["steps"] == ref_results["steps"]
    for key in ("test_acc", "test_loss", "best_val_acc"):
        assert results[key] == ref_results[key], key
    assert [h["val/loss"] for h in results["history"]] == [h["val/loss"] for h in ref_results["history"]]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, reference) -> None:
    proc = start(tmp_path, "killed")
    ckpt = wait_for_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt["epoch"] >= 1 and not (tmp_path / "killed" / "results.json").exists()
    resumed = run_cli(*COMMON, "hydra.run.dir=killed", "trainer.resume=auto", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed at epoch" in resumed.stdout
    assert_same_run(tmp_path / "killed", reference)


@pytest.mark.slow
def test_sigkill_at_several_points_mid_epoch_then_resume_matches(tmp_path: Path, reference) -> None:
    """Checkpoints every 5 steps (28 steps per epoch); killed twice mid-epoch, resumed each time."""
    last = tmp_path / "multi" / "checkpoints" / "last.pt"
    steps_seen = []
    for min_step, resume in ((10, ()), (40, ("trainer.resume=auto",))):
        proc = start(tmp_path, "multi", "trainer.checkpoint_every_steps=5", *resume)
        ckpt = wait_for_checkpoint(last, proc, min_step=min_step)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        steps_seen.append((ckpt["step"], ckpt["batch_in_epoch"]))
    assert any(batch > 0 for _, batch in steps_seen), steps_seen  # at least one kill after a mid-epoch save
    resumed = run_cli(*COMMON, "hydra.run.dir=multi", "trainer.resume=auto", "trainer.checkpoint_every_steps=5",
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(tmp_path / "multi", reference)


@pytest.mark.slow
def test_ctrl_c_mid_epoch_checkpoints_and_resumes_exactly(tmp_path: Path, reference) -> None:
    proc = start(tmp_path, "stopped")
    wait_for_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt", proc)  # epoch 1 done, epoch 2 begins
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    results = json.loads((tmp_path / "stopped" / "results.json").read_text())
    assert results["status"] == "interrupted" and "interrupted after step" in out
    ckpt = torch.load(tmp_path / "stopped" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["batch_in_epoch"] > 0 and ckpt["step"] == ckpt["epoch"] * 28 + ckpt["batch_in_epoch"]
    resumed = run_cli(*COMMON, f"trainer.resume={tmp_path / 'stopped'}", "hydra.run.dir=continued", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(tmp_path / "continued", reference)


def test_resume_into_a_new_directory_keeps_the_best_checkpoint(tmp_path: Path, reference) -> None:
    ref_dir, ref_results = reference
    # continuing a finished run trains nothing more: selection must still find the source's best checkpoint
    proc = run_cli(*COMMON, f"trainer.resume={ref_dir}", "hydra.run.dir=again", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "again" / "results.json").read_text())
    assert results["test_acc"] == ref_results["test_acc"] and results["steps"] == ref_results["steps"]


def test_resume_refuses_missing_files_and_other_architectures(tmp_path: Path, reference) -> None:
    proc = run_cli(*COMMON, f"trainer.resume={tmp_path / 'nothing'}", cwd=tmp_path)
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr
    ref_dir, _ = reference
    other = run_cli(*COMMON, "model.widths=[8,16,32]", f"trainer.resume={ref_dir}", cwd=tmp_path)
    assert other.returncode == 2 and "the checkpoint was trained with model" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_completed_run_directory_is_not_overwritten(tmp_path: Path, reference) -> None:
    ref_dir, ref_results = reference
    proc = run_cli(*COMMON, f"hydra.run.dir={ref_dir}", cwd=tmp_path)
    assert proc.returncode == 2 and "already holds a completed run" in proc.stderr
    assert json.loads((ref_dir / "results.json").read_text()) == ref_results


class _Payload:
    """Unpickling this runs code: it would create the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_pickle_is_refused_and_its_payload_never_runs(tmp_path: Path) -> None:
    from cnnbench.engine.checkpoint import load_checkpoint
    from cnnbench.errors import CnnbenchError

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "extra": _Payload(str(marker))}, evil)
    with pytest.raises(CnnbenchError, match="refusing to load"):
        load_checkpoint(evil)
    assert not marker.exists()
    proc = run_cli(*COMMON, f"trainer.resume={evil}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: refusing to load") and not marker.exists()


def test_diverging_loss_stops_with_the_step_and_a_hint(tmp_path: Path) -> None:
    proc = run_cli("optimizer.lr=1e12", "trainer.precision=fp32", "trainer.epochs=3", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert "training loss became nan by step" in proc.stderr or "training loss became inf by step" in proc.stderr
    assert "lower optimizer.lr" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


def kill_and_resume(tmp_path: Path, tricks: list[str], every: int, min_step: int) -> tuple[dict, tuple[Path, dict]]:
    """An uninterrupted run with ``tricks`` (``full``), and one (``killed``) SIGKILLed once it has written last.pt
    (every ``every`` steps) at ``min_step`` or later, then resumed: the checkpoint it was killed after, and the
    reference (run directory, results) to compare the resumed run with."""
    full = run_cli(*COMMON, *tricks, "hydra.run.dir=full", cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-2000:]
    proc = start(tmp_path, "killed", *tricks, f"trainer.checkpoint_every_steps={every}")
    ckpt = wait_for_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt", proc, min_step=min_step)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = run_cli(*COMMON, *tricks, "hydra.run.dir=killed", "trainer.resume=auto",
                      f"trainer.checkpoint_every_steps={every}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    return ckpt, (tmp_path / "full", json.loads((tmp_path / "full" / "results.json").read_text()))


@pytest.mark.slow
def test_lookahead_and_alternating_flip_resume_exactly(tmp_path: Path) -> None:
    """The speedrun's extra state (lookahead's slow weights, the epoch's flip parity) survives a kill."""
    tricks = ["trainer.lookahead_every=3", "data.augment.hflip=true", "data.augment.alternate_flip=true",
              "optimizer.norm_lr_scale=8"]
    ckpt, reference = kill_and_resume(tmp_path, tricks, every=5, min_step=35)  # epoch 2 or later (28 steps each)
    assert ckpt["callbacks"]["lookahead"] and ckpt["epoch"] >= 1
    assert_same_run(tmp_path / "killed", reference)


@pytest.mark.slow
def test_muon_resumes_exactly(tmp_path: Path) -> None:
    """Muon's momentum in both kinds of groups (orthogonalised filters, SGD for the rest) survives a kill."""
    tricks = ["optimizer=muon", "optimizer.normalize_weights=true", "optimizer.weight_decay=1e-3"]
    ckpt, reference = kill_and_resume(tmp_path, tricks, every=5, min_step=35)
    kinds = {g["orthogonalize"] for g in ckpt["optimizer"]["param_groups"]}
    assert kinds == {True, False} and all("momentum_buffer" in s for s in ckpt["optimizer"]["state"].values())
    assert_same_run(tmp_path / "killed", reference)


@pytest.mark.slow
def test_recipe_options_resume_exactly(tmp_path: Path) -> None:
    """Every training-recipe option on at once (EMA, mixup + cutmix, TrivialAugment, random erasing, drop path,
    accumulation, early stopping that does not trigger, no decay on norms and biases): killed mid-epoch,
    resumed, the same weights, EMA and scores bit for bit."""
    tricks = ["trainer.ema_decay=0.9", "trainer.ema_warmup=true", "data.augment.mixup_alpha=0.4",
              "data.augment.cutmix_alpha=1.0", "data.augment.erasing_prob=0.3", "model.drop_path=0.1",
              "trainer.accumulate_steps=2", "trainer.early_stopping.patience=5", "optimizer.decay_norm_bias=false",
              "optimizer.weight_decay=5e-4", "data.augment.auto=trivialaugment"]
    ckpt, reference = kill_and_resume(tmp_path, tricks, every=3, min_step=18)  # epoch 2 or later (14 steps each)
    assert ckpt["ema"] and ckpt["early_stopping"] and ckpt["rng"]["loader"]["mixer"]
    assert_same_run(tmp_path / "killed", reference)
    ours, theirs = (torch.load(d / "checkpoints" / "last.pt", weights_only=True) for d in (tmp_path / "killed",
                                                                                              tmp_path / "full"))
    assert all(torch.equal(ours["ema"][k], theirs["ema"][k]) for k in ours["ema"])
    assert [h["val_ema/acc"] for h in json.loads((tmp_path / "killed" / "results.json").read_text())["history"]] == \
        [h["val_ema/acc"] for h in reference[1]["history"]]
