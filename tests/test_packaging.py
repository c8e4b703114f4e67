"""`pip install .` gives a working cnnbench: the built wheel, installed into a fresh virtual environment with no
editable finder and no source tree on the path, runs every console script from another directory."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from conftest import ROOT

SCRIPTS = ("cnnbench", "cnnbench-inspect", "cnnbench-report", "cnnbench-visualize", "cnnbench-eval", "cnnbench-predict",
           "cnnbench-export")


def build_wheel(out: Path) -> Path:
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    if build.returncode != 0 and "setuptools" in build.stderr and "No matching distribution" in build.stderr:
        pytest.skip("no package index to fetch the build backend from")
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = out.glob("cnnbench-*.whl")
    return wheel


def fresh_venv(where: Path) -> Path:
    """A new virtual environment whose only view of this one is its installed dependencies: one .pth line per
    site-packages folder (a .pth line adds the folder without running the .pth files inside it, so the
    editable install's finder stays off)."""
    venv.create(where, with_pip=True, symlinks=True)
    python = where / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "_cnnbench_deps.pth").write_text("\n".join(ours) + "\n")
    return where / "bin"


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_every_command_runs(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {str(PurePosixPath(n).parent).replace("/", ".") for n in names if n.endswith("__init__.py")}
    source = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "cnnbench").rglob("__init__.py")}
    source |= {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "hydra_plugins").rglob("__init__.py")}
    assert source <= shipped, f"the wheel lacks {sorted(source - shipped)}"
    for group in ("model", "data", "optimizer", "scheduler", "transfer", "trainer", "experiment"):
        assert any(n.startswith(f"cnnbench/conf/{group}/") and n.endswith(".yaml") for n in names), group
    assert "cnnbench/conf/config.yaml" in names
    assert "hydra_plugins/cnnbench_sweeper/optuna_sweeper.py" in names  # (where Hydra's plugin scan looks)

    bin_dir = fresh_venv(tmp_path / "venv")
    install = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                              str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    where = subprocess.run([str(bin_dir / "python"), "-c", "import cnnbench; print(cnnbench.__file__); "
                            "from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper; "
                            "print(*(c.__name__ for c in Plugins.instance().discover(Sweeper)))"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.startswith(str(tmp_path / "venv")), where.stdout + where.stderr  # the wheel's copy
    assert "OptunaSweeper" in where.stdout.split(), where.stdout + where.stderr  # found by Hydra's own scan
    helps = {script: subprocess.Popen([str(bin_dir / script), "--help"], cwd=elsewhere, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for script in SCRIPTS}
    for script, proc in helps.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "usage" in out.lower(), f"{script}: {err[-2000:]}"
    proc = subprocess.run([str(bin_dir / "cnnbench"), "trainer=debug", "logger.print_config=false"], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results,) = elsewhere.glob("outputs/*/*/results.json")
