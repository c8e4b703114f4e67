"""`pip install .` (a real wheel, not the editable install) ships conf/ and runs from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_wheel_ships_configs_and_runs_from_another_directory(tmp_path: Path) -> None:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"),
                            str(ROOT)], capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "setuptools" in build.stderr and "No matching distribution" in build.stderr:
        pytest.skip("no package index to fetch the build backend from")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("cnnbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for group in ("model", "data", "optimizer", "scheduler", "transfer", "trainer", "experiment"):
        assert any(n.startswith(f"cnnbench/conf/{group}/") and n.endswith(".yaml") for n in names), group
    assert "cnnbench/conf/config.yaml" in names

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-m", "cnnbench", "trainer=debug", "logger.print_config=false"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results,) = elsewhere.glob("outputs/*/*/results.json")
    assert str(site) in subprocess.run([sys.executable, "-c", "import cnnbench; print(cnnbench.__file__)"],
                                       cwd=elsewhere, env=env, capture_output=True, text=True).stdout
