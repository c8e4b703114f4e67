"""Where a result came from: the software versions, the project's commit, the command line and the host, recorded
in results.json, every checkpoint and the export card, so two rows of a leaderboard from different software
can be told apart (``cnnbench-report`` marks them)."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from pathlib import Path

SOFTWARE_KEYS = ("python", "torch", "torchvision", "cuda", "cudnn", "cnnbench", "commit")  # what decides a result


@cache
def git_commit() -> dict | None:
    """The commit of the checkout cnnbench runs from and whether its tree has changes; None when it is not run
    from a git checkout (an installed wheel) or git is missing."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if commit.returncode:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


def software() -> dict[str, str | bool | None]:
    """The versions a run used: Python, torch, torchvision, CUDA and cuDNN (None without), cnnbench and, from a
    checkout, its git commit (with ``+dirty`` when the tree had changes)."""
    import importlib.metadata

    import torch
    import torchvision

    try:
        version = importlib.metadata.version("cnnbench")
    except importlib.metadata.PackageNotFoundError:
        version = None
    git = git_commit()
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    # plain str: torch.__version__ is a str subclass that a weights_only checkpoint load refuses
    return {"python": sys.version.split()[0], "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__),
            "cuda": str(torch.version.cuda) if torch.version.cuda else None,
            "cudnn": str(cudnn) if cudnn else None, "cnnbench": version,
            "commit": (git["commit"] + ("+dirty" if git["dirty"] else "")) if git else None}


def record(command: list[str] | None = None) -> dict:
    """Software, the command line (``command``, default this process's) and the host's CPU and GPUs."""
    import torch

    from cnnbench.engine.hardware import cpu_info

    model, flags = cpu_info()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else []
    return {"software": software(), "command": " ".join(command if command is not None else sys.argv),
            "host": {"cpu": model, "cpu_flags": list(flags), "gpus": gpus}}


def signature(provenance: dict | None) -> str | None:
    """A short text of the software that decides a result (``torch 2.14.1, ...``); None when not recorded."""
    soft = (provenance or {}).get("software")
    if not isinstance(soft, dict):
        return None
    return ", ".join(f"{k} {soft[k]}" for k in SOFTWARE_KEYS if soft.get(k))
