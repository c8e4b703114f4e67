"""torch and torchvision that belong together, checked from their packages' metadata (nothing is imported).

torchvision 0.N is built for torch 2.(N - 15), and a build for one accelerator does not load beside another's:
torchvision's CUDA wheels beside torch's CPU-only one fail at their first operator (``operator torchvision::nms
does not exist``), long after ``cnnbench --help`` looked fine. Every command checks first and names both versions
and the command that fixes them.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version

INDEX = "https://download.pytorch.org/whl"  # PyTorch's own package index: /cpu, /cu128, ...


def expected_torchvision(torch_version: str) -> str | None:
    """The torchvision minor series (``0.29``) built for ``torch_version`` (2.x), or None for other majors."""
    major, minor = (torch_version.split("+")[0].split(".") + ["0"])[:2]
    if major != "2" or not minor.isdigit():
        return None
    return f"0.{int(minor) + 15}"


def mismatch(torch_version: str, torchvision_version: str) -> str | None:
    """Why these two do not load together (a one-line error with the fix), or None when they belong together."""
    series = expected_torchvision(torch_version)
    torch_build = torch_version.partition("+")[2]
    vision_build = torchvision_version.partition("+")[2]
    same_series = series is None or torchvision_version.split("+")[0].startswith(series + ".")
    cpu_apart = (torch_build == "cpu") != (vision_build == "cpu")
    builds_apart = bool(torch_build and vision_build and torch_build != vision_build)
    if same_series and not cpu_apart and not builds_apart:
        return None
    wanted = f"torchvision=={series}.*" if series else "torchvision"
    index = f" --index-url {INDEX}/{torch_build}" if torch_build else ""
    what = "is built for another torch" if not same_series else (
        f"is a {vision_build or 'PyPI (CUDA)'} build beside torch's {torch_build or 'PyPI (CUDA)'} build")
    return (f"torch {torch_version} and torchvision {torchvision_version} do not belong together: torchvision {what}; "
            f"fix with: pip install --force-reinstall '{wanted}'{index}")


@functools.cache
def install_problem() -> str | None:
    """A one-line error when this environment's torch and torchvision do not belong together, else None."""
    try:
        return mismatch(version("torch"), version("torchvision"))
    except PackageNotFoundError as e:
        return f"{e.name} is not installed; install cnnbench with pip (it brings torch and torchvision)"
