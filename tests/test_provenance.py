"""Where results come from (versions, commit, command line, host) and the continue-or-start resume mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cnnbench.leaderboard import build_leaderboard, find_runs, to_markdown

TINY = ["logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.print_config=false",
        "logger.progress=false", "trainer.epochs=1", "trainer.max_steps=4"]


@pytest.mark.slow
def test_results_and_checkpoints_record_the_software_command_and_host(cli, tmp_path: Path) -> None:
    import torchvision

    assert cli(*TINY, "trainer.seed=3", "hydra.run.dir=run", cwd=tmp_path).returncode == 0
    record = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    soft = record["software"]
    assert soft["torch"] == torch.__version__ and soft["torchvision"] == torchvision.__version__
    assert soft["python"].count(".") == 2 and soft["cnnbench"]
    assert record["command"].startswith("cnnbench ") and "trainer.seed=3" in record["command"]
    assert record["host"]["cpu"]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["provenance"]["software"]["torch"] == torch.__version__


def test_report_marks_runs_whose_software_differs(tmp_path: Path) -> None:
    def write(name: str, torch_version: str, seed: int) -> None:
        run = tmp_path / name
        run.mkdir()
        (run / "results.json").write_text(json.dumps({
            "status": "completed", "model": "lenet5", "params": 10, "best_val_acc": 90.0, "test_acc": 89.0,
            "overrides": [f"optimizer.lr={0.1 if name == 'b' else 0.01}", f"trainer.seed={seed}"],
            "provenance": {"software": {"python": "3.11.7", "torch": torch_version, "cnnbench": "0.1.0"}}}))

    write("a", "2.14.1", 0)
    write("b", "2.14.1", 0)
    assert not build_leaderboard(find_runs([tmp_path])).software  # the same software: no column
    write("c", "2.11.0", 1)  # a seed of a's configuration, under another torch
    board = build_leaderboard(find_runs([tmp_path]))
    assert board.software == ["torch"]
    rows = {r["optimizer.lr"]: r["software"] for r in board.rows}
    assert rows == {"0.1": "torch 2.14.1", "0.01": "mixed: torch 2.11.0 | torch 2.14.1"}
    assert "The runs differ in software (torch)" in to_markdown(board)


@pytest.mark.slow
def test_continue_or_start_starts_an_empty_directory_and_continues_its_own_run(cli, tmp_path: Path) -> None:
    args = [*TINY, "trainer.resume=continue_or_start"]
    first = cli(*args, "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0 and "resumed at" not in first.stdout, first.stderr
    shutil.copytree(tmp_path / "run", tmp_path / "killed")
    (tmp_path / "killed" / "results.json").unlink()  # killed before it finished
    again = cli(*[a for a in args if not a.startswith(("trainer.max_steps", "trainer.epochs"))],
                "trainer.epochs=2", "trainer.max_steps=8", "hydra.run.dir=killed", cwd=tmp_path)
    assert again.returncode == 0 and "resumed at epoch" in again.stdout, again.stderr
    assert json.loads((tmp_path / "killed" / "results.json").read_text())["steps"] == 8
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    refused = cli(*args, "hydra.run.dir=foreign", cwd=tmp_path)
    assert refused.returncode == 2 and "holds files that cnnbench did not write" in refused.stderr
