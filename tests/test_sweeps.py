"""Multirun sweeps: failures recorded, resumable, parallel, and summarised in a leaderboard."""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli, start_cli
from hydra import compose, initialize_config_module
from PIL import Image

from cnnbench.commands.report import main as report_main

CEILING_S = 1800  # against a hung process only
FAST = ["trainer.max_steps=3", "logger.print_config=false", "logger.tensorboard=false"]


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sweep_with_a_failing_job_finishes_the_others_and_reports(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "model=lenet5", "optimizer.lr=0.01,-1", "trainer.seed=0,1", *FAST,
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 1
    assert "error: 2 of 4 sweep jobs failed" in proc.stderr
    runs = results(sweep)
    assert sorted(r["status"] for r in runs.values()) == ["completed", "completed", "failed", "failed"]
    failed = [r for r in runs.values() if r["status"] == "failed"]
    assert all("optimizer.lr must be a positive number" in r["error"] for r in failed)

    (row,) = read_csv(sweep / "leaderboard.csv")  # one configuration, aggregated over the two seeds
    done = [r for r in runs.values() if r["status"] == "completed"]
    assert row["optimizer.lr"] == "0.01" and row["seeds"] == "2" and int(row["params"]) == 61_706
    assert float(row["test_acc"]) == pytest.approx(statistics.fmean(r["test_acc"] for r in done))
    assert float(row["test_acc_std"]) == pytest.approx(statistics.stdev(r["test_acc"] for r in done))
    assert float(row["best_val_acc"]) == pytest.approx(statistics.fmean(r["best_val_acc"] for r in done))
    markdown = (sweep / "leaderboard.md").read_text()
    assert "| optimizer.lr | seeds |" in markdown and " ± " in markdown and "2 of 4 runs did not complete" in markdown
    for png in ("acc_vs_params.png", "acc_vs_time.png"):
        with Image.open(sweep / png) as img:
            assert img.size[0] > 100
    assert "leaderboard" in proc.stdout


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_completed_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "model=lenet5", "trainer.seed=0,1,2", *FAST, f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    before = results(sweep)
    (sweep / "1" / "results.json").unlink()  # job 1 was killed before it finished
    proc = run_cli(*args, "sweep.skip_completed=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = results(sweep)
    assert proc.stdout.count("skipping") == 2 and proc.stdout.count("resuming") == 1
    for job in ("0", "2"):  # untouched
        assert after[job]["finished_at"] == before[job]["finished_at"]
    assert after["1"]["status"] == "completed" and after["1"]["finished_at"] > before["2"]["finished_at"]
    assert len(read_csv(sweep / "leaderboard.csv")) == 1 and read_csv(sweep / "leaderboard.csv")[0]["seeds"] == "3"


@pytest.mark.slow
def test_joblib_launcher_runs_two_jobs_at_once(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer.seed=0,1",
                   "trainer.max_steps=40", "trainer.epochs=5", "logger.print_config=false",
                   f"hydra.sweep.dir={sweep}", cwd=tmp_path, process=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = list(results(sweep).values())
    assert len(runs) == 2
    assert max(r["started_at"] for r in runs) < min(r["finished_at"] for r in runs)  # the runs overlapped
    assert (sweep / "leaderboard.md").is_file()


def test_report_merges_several_directories(tmp_path: Path, capsys) -> None:
    for i, (model, acc) in enumerate([("lenet5", 90.0), ("small_resnet", 95.0), ("lenet5", 92.0)]):
        run = tmp_path / f"sweep{i % 2}" / str(i)
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({
            "status": "completed", "model": model, "params": 10 + i, "macs": 1000, "best_val_acc": acc,
            "test_acc": acc - 1, "train_time_s": 1.0, "train_images_per_s": 100.0,
            "overrides": [f"model={model}", f"trainer.seed={i}"]}))
    report_main([str(tmp_path / "sweep0"), str(tmp_path / "sweep1"), "--out", str(tmp_path / "merged")])
    rows = read_csv(tmp_path / "merged" / "leaderboard.csv")
    assert [r["model"] for r in rows] == ["small_resnet", "lenet5"]  # sorted by validation accuracy
    assert rows[1]["seeds"] == "2" and float(rows[1]["best_val_acc"]) == 91.0
    assert "small_resnet" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "nope")])


@pytest.mark.slow
def test_submitit_runs_a_sweep_as_on_a_cluster(tmp_path: Path) -> None:
    """hydra/launcher=submitit_local: the code path of the SLURM launcher (submitit pickles each job, runs it in
    its own process and hands back its result), on this machine."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "hydra/launcher=submitit_local", "trainer.seed=0,1", "trainer.epochs=1",
                   "trainer.max_steps=5", *FAST[1:], f"hydra.sweep.dir={sweep}", cwd=tmp_path, process=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = results(sweep)
    assert sorted(runs) == ["0", "1"] and all(r["status"] == "completed" for r in runs.values())
    (row,) = read_csv(sweep / "leaderboard.csv")
    assert row["seeds"] == "2"


@pytest.mark.slow
def test_a_preempted_submitit_job_is_requeued_and_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    """Submitit's preemption signal (USR2) mid-training: the job checkpoints at that step, submitit requeues it,
    the requeued job continues, and it ends with the weights of a run never interrupted, bit for bit."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from cnnbench.rundir import _lock_holder

    train = ["trainer.deterministic=true", "trainer.epochs=2", "data.batch_size=16", "trainer.log_every=1",
             "logger.print_config=false", "logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0",
             "logger.progress=false"]
    sweep = tmp_path / "sweep"
    proc = start_cli("-m", "hydra/launcher=submitit_local", *train, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    started = sweep / "0" / ".hydra" / "config.yaml"  # written when training starts
    deadline = time.monotonic() + CEILING_S
    while not started.is_file():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the job did not start training"
        time.sleep(0.05)
    holder = _lock_holder(sweep / "0")  # the job's process holds its run directory
    assert holder.startswith("process "), holder
    os.kill(int(holder.split()[1]), signal.SIGUSR2)
    out, err = proc.communicate(timeout=CEILING_S)
    assert proc.returncode == 0, err[-2000:]
    logs = "".join(p.read_text(errors="replace") for p in sweep.rglob("*_log.out"))
    assert "resumed at epoch" in logs, logs[-2000:]  # the requeued attempt continued the checkpoint
    assert json.loads((sweep / "0" / "results.json").read_text())["status"] == "completed"
    assert run_cli(*train, "hydra.run.dir=reference", cwd=tmp_path).returncode == 0
    ours, reference = (torch.load(d / "checkpoints" / "last.pt", weights_only=True)["model"]
                       for d in (sweep / "0", tmp_path / "reference"))
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def test_slurm_launcher_config_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1
    assert compose_config("hparams_search=digits_optuna").optimizer.lr == 0.01


def test_leaderboard_shows_calibration_and_mfu_when_runs_have_them(tmp_path: Path) -> None:
    from cnnbench.leaderboard import build_leaderboard, find_runs, to_markdown

    for i, (model, ece) in enumerate([("lenet5", 3.0), ("lenet5", 5.0), ("vgg11", None)]):
        run = tmp_path / str(i)
        run.mkdir()
        (run / "results.json").write_text(json.dumps({
            "status": "completed", "model": model, "params": 10, "macs": 1000, "best_val_acc": 90.0 + i,
            "test_acc": 89.0, "train_time_s": 1.0, "train_images_per_s": 100.0, "mfu": 0.25, "scored_step": 7,
            "overrides": [f"model={model}", f"trainer.seed={i}"], **({"test_ece": ece} if ece else {})}))
    (tmp_path / "2" / "eval_test.json").write_text(json.dumps({"split": "test", "step": 7, "ece": 9.0,
                                                                "top5_acc": 99.5}))
    (tmp_path / "2" / "eval_test_corruptions64.json").write_text(json.dumps({
        "split": "test", "step": 7, "corruptions": {"mean_corruption_acc": 61.5}}))
    board = build_leaderboard(find_runs([tmp_path]))
    header = to_markdown(board).splitlines()[0]
    assert "ECE %" in header and "top-5 %" in header and "MFU %" in header and "corruption acc %" in header
    from cnnbench.report_files import plots

    assert "corruption_acc_vs_params.png" in plots(board)
    rows = {r["model"]: r for r in board.rows}
    assert rows["lenet5"]["test_ece"] == 4.0 and rows["vgg11"]["test_ece"] == 9.0  # eval_test.json of the same step
    assert rows["lenet5"]["mfu"] == 0.25
    (tmp_path / "2" / "eval_test.json").write_text(json.dumps({"split": "test", "step": 6, "ece": 1.0}))
    (tmp_path / "2" / "eval_test_corruptions64.json").unlink()
    assert {r["model"]: r for r in build_leaderboard(find_runs([tmp_path])).rows}["vgg11"]["test_ece"] is None
