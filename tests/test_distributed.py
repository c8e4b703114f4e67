"""Data parallel training with torchrun: two CPU processes (gloo) on the digits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_env, run_cli

CEILING_S = 1800  # against a hung process only
COMMON = ["trainer.epochs=10", "trainer.precision=fp32", "trainer.deterministic=true", "logger.print_config=false",
          "logger.snapshots=0", "logger.progress=false"]


def start_torchrun(tmp_path: Path, *args: str, launch: tuple[str, ...] = ("--standalone", "--nproc_per_node=2")
                   ) -> subprocess.Popen:
    """``torchrun LAUNCH -m cnnbench trainer.strategy=ddp ARGS`` started in ``tmp_path``, one thread per rank."""
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launch, "-m", "cnnbench",
                             "trainer.strategy=ddp", *args], cwd=tmp_path, env=cli_env(tmp_path, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    proc = start_torchrun(tmp_path, *args)
    out, err = proc.communicate(timeout=CEILING_S)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def same_weights(a: Path, b: Path) -> bool:
    ours, theirs = (torch.load(p / "checkpoints" / "last.pt", weights_only=True)["model"] for p in (a, b))
    return all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp")
    proc = torchrun(tmp, *COMMON, "data.batch_size=16")  # 2 x 16 = the single run's batch of 32
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_two_processes_write_one_run_and_match_one_process(ddp_run: Path, tmp_path: Path) -> None:
    results = list(ddp_run.glob("outputs/**/results.json"))
    assert len(results) == 1, results  # rank 1 wrote nothing (and its own Hydra directory is gone)
    assert len([p for p in ddp_run.glob("outputs/*/*") if p.is_dir()]) == 1
    ddp = json.loads(results[0].read_text())
    assert ddp["status"] == "completed" and ddp["processes"] == 2

    single = run_cli(*COMMON, "data.batch_size=32", "hydra.run.dir=single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    one = json.loads((tmp_path / "single" / "results.json").read_text())
    assert ddp["steps"] == one["steps"] == 10 * (1294 // 32)
    assert abs(ddp["test_acc"] - one["test_acc"]) <= 1.0, (ddp["test_acc"], one["test_acc"])
    assert ddp["test_acc"] > 90
    # Averaged gradients of the two halves = the gradient of the whole batch: the weights agree up to rounding.
    # (Unsynchronised processes, each on its half, end far apart.)
    ours = torch.load(results[0].parent / "checkpoints" / "last.pt", weights_only=True)["model"]
    theirs = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key in theirs:
        assert torch.allclose(ours[key], theirs[key], atol=1e-5), (key, (ours[key] - theirs[key]).abs().max())


@pytest.mark.slow
def test_ddp_resumes_its_own_checkpoint(ddp_run: Path) -> None:
    run_dir = next(ddp_run.glob("outputs/*/*"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 10 * (1294 // 32)
    proc = torchrun(ddp_run, *COMMON, "data.batch_size=16", "trainer.epochs=12", f"trainer.resume={run_dir}",
                    "hydra.run.dir=continued")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed at epoch 10" in proc.stdout
    resumed = json.loads((ddp_run / "continued" / "results.json").read_text())
    assert resumed["epochs_completed"] == 12 and resumed["steps"] == 12 * (1294 // 32)


@pytest.mark.slow
def test_a_ddp_run_evaluates_and_exports_like_any_other(ddp_run: Path, tmp_path: Path) -> None:
    from cnnbench.commands.evaluate import evaluate_run
    from cnnbench.commands.export import export_run

    run_dir = next(ddp_run.glob("outputs/*/*"))
    recorded = json.loads((run_dir / "results.json").read_text())
    result = evaluate_run(run_dir, out=tmp_path / "eval.json")
    assert result["acc"] == pytest.approx(recorded["test_acc"]) and result["images"] == 359
    assert export_run(run_dir, "torchscript", tmp_path / "m.pt")["parity"]["max_abs_logit_diff"] <= 1e-4


def rank_pid(agent: int, local_rank: int) -> int | None:
    """The process id of the worker with ``local_rank`` that the torchrun agent ``agent`` started (Linux /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == agent and f"LOCAL_RANK={local_rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_torchrun_restarts_a_killed_rank_and_the_run_ends_as_an_uninterrupted_one(ddp_run: Path) -> None:
    """``torchrun --max-restarts=1`` with rank 1 killed mid-epoch: the group restarts, continues from the last
    checkpoint (``trainer.resume=continue_or_start``) and ends with the uninterrupted run's weights, bit for bit."""
    if not Path("/proc/self/environ").is_file():
        pytest.skip("finds the rank's process through /proc")
    proc = start_torchrun(ddp_run, *COMMON, "data.batch_size=16", "trainer.checkpoint_every_steps=10",
                          "trainer.resume=continue_or_start", "hydra.run.dir=elastic",
                          launch=("--standalone", "--nproc_per_node=2", "--max-restarts=1"))
    deadline = time.monotonic() + CEILING_S
    while not (ddp_run / "elastic" / "checkpoints" / "last.pt").is_file() or not (
            victim := rank_pid(proc.pid, local_rank=1)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=CEILING_S)
    assert proc.returncode == 0, err[-3000:]
    assert "resumed at epoch" in out and json.loads((ddp_run / "elastic" / "results.json").read_text())[
        "status"] == "completed"
    assert same_weights(ddp_run / "elastic", next(ddp_run.glob("outputs/*/*")))


@pytest.mark.slow
def test_two_torchrun_agents_as_two_nodes_train_as_one_standalone_group(ddp_run: Path) -> None:
    """The documented multi-node command, with two "nodes" on this machine: two agents, one process each, meet at a
    c10d rendezvous on 127.0.0.1 and train exactly as the two processes of one standalone agent."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = ("--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
              "--rdzv_id=cnnbench-test")
    nodes = [start_torchrun(ddp_run, *COMMON, "data.batch_size=16", "hydra.run.dir=two_nodes", "trainer.threads=1",
                            launch=launch) for _ in range(2)]  # (one thread, as each of the standalone two)
    for node in nodes:
        out, err = node.communicate(timeout=CEILING_S)
        assert node.returncode == 0, err[-3000:]
    assert json.loads((ddp_run / "two_nodes" / "results.json").read_text())["processes"] == 2
    assert same_weights(ddp_run / "two_nodes", next(ddp_run.glob("outputs/*/*")))


def test_ddp_outside_torchrun_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("trainer.strategy=ddp", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: trainer.strategy=ddp runs under torchrun: torchrun --nproc_per_node=N -m "
                                   "cnnbench trainer.strategy=ddp ... (or use trainer.strategy=single)")


@pytest.mark.slow
@pytest.mark.parametrize("model", [("model=lenet5",), ("model=timm", "model.arch=vit_tiny_patch16_224")])
def test_ddp_with_accumulation_steps_like_one_large_batch(tmp_path: Path, model: tuple[str, ...]) -> None:
    """2 processes x 2 micro-batches of 8 (gradients synchronised on the second only) = one batch of 32; for
    cnnbench's models and timm's (a ViT: no BatchNorm, whose statistics would differ per half batch)."""
    exact = [*model, "trainer.precision=fp32", "trainer.deterministic=true", "data.augment.crop_padding=0",
             "trainer.max_steps=5", "logger.print_config=false", "logger.snapshots=0", "logger.progress=false",
             "logger.tensorboard=false", "logger.figures=false"]
    proc = torchrun(tmp_path, *exact, "data.batch_size=8", "trainer.accumulate_steps=2", "hydra.run.dir=ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = run_cli(*exact, "data.batch_size=32", "hydra.run.dir=single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    ours, theirs = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True) for d in ("ddp", "single"))
    assert ours["step"] == theirs["step"] == 5
    for key in theirs["model"]:
        assert torch.allclose(ours["model"][key], theirs["model"][key], atol=1e-5), key
