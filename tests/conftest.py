"""Shared fixtures: Hydra composition, the CLI in-process or in a subprocess, and a small real CIFAR-10 subset."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from cnnbench.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TAR = ROOT.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

register_configs()


def compose_config(*overrides: str) -> DictConfig:
    """The config `cnnbench <overrides>` would run, composed in-process."""
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `python -m cnnbench ARGS` in ``cwd`` and capture its output."""
    full_env = {**os.environ, "CNNBENCH_CACHE": str(cwd / "cache"), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "cnnbench", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli(monkeypatch):
    """Run the ``cnnbench`` command in this process (as ``main()`` with ``sys.argv``) in ``cwd``; returns what
    ``run_cli`` does. For tests of what the command prints and exits with, where a new process is not the point."""
    from cnnbench.train import main

    def call(*args: str, cwd: Path) -> subprocess.CompletedProcess:
        monkeypatch.chdir(cwd)
        monkeypatch.setenv("CNNBENCH_CACHE", str(cwd / "cache"))
        monkeypatch.setattr(sys, "argv", ["cnnbench", *args])
        out, err, code = io.StringIO(), io.StringIO(), 0
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
        return subprocess.CompletedProcess(["cnnbench", *args], code, out.getvalue(), err.getvalue())

    return call


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory) -> Path:
    """The first 20 train and 10 test JPEGs of each class of the real CIFAR-10, in ImageFolder layout."""
    if not CIFAR_TAR.is_file():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR_TAR}")
    out = tmp_path_factory.mktemp("cifar_subset")
    quota = {"train": 20, "test": 10}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(CIFAR_TAR) as tar:
        for member in tar:
            parts = Path(member.name).parts  # cifar10/<split>/<class>/<file>.jpg
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if taken.get(key, 0) < quota.get(parts[1], 0):
                taken[key] = taken.get(key, 0) + 1
                target = out / parts[1] / parts[2] / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
            if len(taken) == 20 and all(taken[k] >= quota[k[0]] for k in taken):
                break
    return out


def tensorboard_run(run_dir: Path) -> Path:
    """The one folder of event files under ``<run dir>/tensorboard/`` (named after the run)."""
    folders = [p for p in (run_dir / "tensorboard").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``cuda`` skip, with the reason, where no CUDA GPU is visible."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/gpu_check.sh runs these on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
