"""The rules of a run directory: what an earlier run left there, and where a resumed run continues from.

A run directory holds ``.hydra/`` (the composed config and overrides), ``tensorboard/`` (event files),
``checkpoints/{last,best}.pt``, ``figures/`` and ``results.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cnnbench.errors import CnnbenchError


def completed_before(run_dir: Path) -> dict | None:
    """The results.json of an earlier completed run in this directory, if any."""
    try:
        prior = json.loads((run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return prior if prior.get("status") == "completed" else None


def same_job(prior: dict, overrides: list[str]) -> bool:
    """Whether earlier results came from the same overrides (sweep.* switches aside)."""
    def job(values: list[str]) -> list[str]:
        return [o for o in values if not o.startswith("sweep.")]

    return job(prior.get("overrides", [])) == job(overrides)


def checkpoint_in(path: Path | str, name: str) -> Path:
    """A run directory's ``checkpoints/<name>``, or ``path`` itself when it is not a directory."""
    path = Path(path).expanduser()
    return path / "checkpoints" / name if path.is_dir() else path


def resume_path(resume: str, run_dir: Path) -> Path:
    """The checkpoint that ``trainer.resume`` names: a .pt file, a run directory's last.pt, or ``auto``."""
    path = checkpoint_in(run_dir if resume == "auto" else resume, "last.pt")
    if not path.is_file():
        where = "this run directory (pass hydra.run.dir=<the run to continue>)" if resume == "auto" else resume
        raise CnnbenchError(f"trainer.resume={resume}: no checkpoint at {path}; give a run directory, a .pt file, "
                            f"or auto with {where}")
    return path


def check_same_model(ckpt: dict, cfg: DictConfig) -> None:
    """Refuse a checkpoint trained with another architecture (or other model options)."""
    theirs = (ckpt.get("config") or {}).get("model")
    ours = OmegaConf.to_container(cfg.model, resolve=True)
    if theirs != ours:
        raise CnnbenchError(f"the checkpoint was trained with model {theirs}, not {ours}; resume with the same model")
