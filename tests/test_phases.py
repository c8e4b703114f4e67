"""The phases of a run: the reuse plan for its directory and the config resolved once, then read-only."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from cnnbench import manifest, rundir
from cnnbench.errors import CnnbenchError
from cnnbench.resolve import resolve


def test_resolve_freezes_a_copy_and_leaves_the_composed_config_alone(tmp_path: Path) -> None:
    composed = compose_config("data=imagefolder", "data.root=photos", "trainer.resume=runs/a")
    resolved = resolve(composed, ["data=imagefolder", "data.root=photos"])
    assert OmegaConf.is_readonly(resolved.cfg)
    with pytest.raises(ReadonlyConfigError):
        resolved.cfg.trainer.epochs = 3
    with pytest.raises(ReadonlyConfigError):
        resolved.cfg.data.augment.crop_padding = 0  # (nested groups too)
    assert resolved.cfg.data.root == os.path.abspath("photos")  # paths made absolute in the copy only
    assert resolved.cfg.trainer.resume == os.path.abspath("runs/a")
    assert composed.data.root == "photos" and not OmegaConf.is_readonly(composed)


def test_resolve_says_which_optimizer_a_transfer_option_chose(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # (resolve makes sure the weights are at hand: they are)
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    overrides = ["transfer=finetune", "model=tv_resnet18", "model.weights=IMAGENET1K_V1"]
    preprocessing, note = resolve(compose_config(*overrides), overrides).notes
    assert preprocessing.startswith("preprocessing of resnet18 IMAGENET1K_V1: image_size=224")
    assert note == "transfer=finetune trains with Adam at lr 0.0001, its default (optimizer=... chooses another)"
    chosen = [*overrides, "optimizer=sgd"]
    assert resolve(compose_config(*chosen), chosen).notes == [preprocessing]  # the user chose: nothing to say
    assert resolve(compose_config(), []).notes == []


def test_resolve_checks_every_value_before_anything_is_built() -> None:
    with pytest.raises(CnnbenchError, match="trainer.epochs must be a positive integer, got 0"):
        resolve(compose_config("trainer.epochs=0"), ["trainer.epochs=0"])


def _trainer(**values):
    return OmegaConf.merge(compose_config().trainer, values)


def _leave_a_run(run_dir: Path, status: str) -> None:
    """What an earlier run leaves: its results.json (and a last.pt), recorded in the manifest."""
    manifest.own(run_dir, "results.json", "checkpoints/last.pt")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"")
    (run_dir / "results.json").write_text(json.dumps({"status": status, "overrides": ["trainer.epochs=2"]}))


def test_reuse_plan_for_each_kind_of_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    assert rundir.plan_reuse(empty, _trainer(), []).action == "fresh"
    done = tmp_path / "done"
    _leave_a_run(done, "completed")
    refused = rundir.plan_reuse(done, _trainer(), [])
    assert refused.action == "refuse" and "already holds a completed run" in refused.reason
    assert "trainer.resume=auto" in refused.reason and "trainer.overwrite=true" in refused.reason
    assert rundir.plan_reuse(done, _trainer(overwrite=True), []).action == "replace"
    assert rundir.plan_reuse(done, _trainer(resume="auto"), []).action == "continue"
    skip = rundir.plan_reuse(done, _trainer(), ["trainer.epochs=2"], multirun=True, skip_completed=True)
    assert skip.action == "skip" and skip.prior["status"] == "completed"
    # another job's overrides in the same directory: not this job's result, so not skipped
    assert rundir.plan_reuse(done, _trainer(), ["trainer.epochs=3"], multirun=True, skip_completed=True
                             ).action == "refuse"


def test_reuse_plan_continues_or_starts(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    _leave_a_run(stopped, "interrupted")
    plan = rundir.plan_reuse(stopped, _trainer(resume="continue_or_start"), [])
    assert (plan.action, plan.resume) == ("continue", "auto")
    plan = rundir.plan_reuse(tmp_path / "new", _trainer(resume="continue_or_start"), [])
    assert (plan.action, plan.resume) == ("fresh", None)
    swept = rundir.plan_reuse(stopped, _trainer(), [], multirun=True, skip_completed=True)
    assert (swept.action, swept.resume) == ("continue", "auto") and "interrupted before" in swept.reason


def test_reuse_plan_refuses_a_folder_of_other_files(tmp_path: Path) -> None:
    (tmp_path / "holiday.jpg").write_bytes(b"x")
    plan = rundir.plan_reuse(tmp_path, _trainer(overwrite=True), [])
    assert plan.action == "refuse" and "holiday.jpg" in plan.reason and "hydra.run.dir" in plan.reason
