"""The rules of a run directory: who may write it, what an earlier run left there, where a resume continues.

A run directory holds ``.hydra/`` (the config, Hydra's config and the overrides of the run that wrote it),
``tensorboard/`` (event files), ``checkpoints/{last,best}.pt``, ``figures/``, ``profile/`` and ``results.json``.

- One process owns it at a time: an OS lock (``flock``) on the directory itself, held for the whole run, so a
  second run into it stops at once, naming the holder (under DDP, rank 0 holds it). Taking the lock writes
  nothing.
- A directory holding a completed or interrupted run (``results.json``, or a ``last.pt`` left by a killed run)
  is only written again with ``trainer.resume=auto`` (continue it) or ``trainer.overwrite=true`` (which first
  removes everything the old run wrote, so nothing of it can be picked up later). A refused run changes nothing.
- Nothing is written before the run has passed its checks: ``.hydra/`` is written when training starts, and a
  failure before that leaves an earlier run's files as they were.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cnnbench.errors import CnnbenchError

RUN_FILES = (".hydra", "tensorboard", "checkpoints", "figures", "profile", "results.json")  # what a run writes


def earlier_results(run_dir: Path) -> dict | None:
    """The results.json an earlier run left here, if any (and readable)."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return results if isinstance(results, dict) else None


def prior_status(run_dir: Path, results: dict | None) -> str | None:
    """What an earlier run left here (``results``: its results.json): completed, interrupted (also killed: a
    last.pt without results), failed, or None."""
    status = results.get("status") if results else None
    if status is None and (run_dir / "checkpoints" / "last.pt").is_file():
        return "interrupted"
    return status


def _lock_holder(path: Path) -> str:
    """The PID holding a flock on ``path``, from /proc/locks (Linux), or 'another process'."""
    inode = os.stat(path).st_ino
    try:
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                return f"process {fields[4]}"
    except OSError:
        pass
    return "another process"


class RunDirLock:
    """Hold an exclusive OS lock on a run directory (``with RunDirLock(path):``); released when the process ends,
    however it ends."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = Path(path), None

    def __enter__(self) -> RunDirLock:
        self.path.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(self.path)
            os.close(self.fd)
            raise CnnbenchError(f"{self.path} is in use by another cnnbench run ({holder}); wait for it to end or "
                                f"choose another hydra.run.dir") from None
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # (closing releases the lock)


def check_reuse(run_dir: Path, status: str | None, resume: str | None, overwrite: bool) -> None:
    """Refuse to start a run in a directory that holds a completed or interrupted one, unless it continues that
    run (``trainer.resume=auto``) or replaces it (``trainer.overwrite=true``)."""
    if status not in ("completed", "interrupted") or overwrite:
        return
    held = f"{run_dir} already holds a{'n' if status == 'interrupted' else ''} {status} run"
    if resume and resume != "auto" and checkpoint_in(resume, "last.pt").resolve().parent.parent != run_dir.resolve():
        raise CnnbenchError(f"{held}: resuming {resume} here would overwrite it; choose another hydra.run.dir (or "
                            f"set trainer.overwrite=true to replace it)")
    if not resume:
        more = " with more epochs" if status == "completed" else ""
        raise CnnbenchError(f"{held}; choose another hydra.run.dir, set trainer.resume=auto to continue it{more}, "
                            f"or trainer.overwrite=true to replace it")


def clear(run_dir: Path) -> None:
    """Remove everything a run writes (trainer.overwrite=true), so nothing of the old run is picked up later."""
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of atomic writes that a killed process left behind (``.<name>.<random>.tmp``)."""
    for folder in (run_dir, run_dir / "checkpoints"):
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
            tmp.unlink(missing_ok=True)


def write_hydra_files(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig | None, overrides: list[str]) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` of the run that now owns the directory (Hydra's own copy is off:
    it would be written before the run's checks, also for a refused run)."""
    from cnnbench.fileio import atomic_write

    files = {"overrides.yaml": OmegaConf.to_yaml(overrides)}
    if hydra_cfg is not None:
        files["hydra.yaml"] = "hydra:\n" + "".join(f"  {line}\n" for line in OmegaConf.to_yaml(hydra_cfg).splitlines())
    files["config.yaml"] = OmegaConf.to_yaml(cfg, resolve=True)  # last: its appearance says training started
    for name, text in files.items():
        atomic_write(run_dir / ".hydra" / name, lambda f, text=text: f.write(text.encode()))


USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO}


def os_error_message(e: OSError) -> str | None:
    """One line for a file-system failure a user can cause (permissions, read-only or full disk), else None."""
    if e.errno not in USER_OS_ERRORS:
        return None
    where = f" {e.filename}" if e.filename else ""
    return f"cannot write{where}: {e.strerror or e}; check the permissions and free space of the output directory"


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


def check_same_run(ckpt: dict, cfg: DictConfig, class_names: list[str]) -> None:
    """Refuse a checkpoint trained with another architecture (or other model options), other classes, or another
    optimizer: its state could not continue this run."""
    saved = ckpt.get("config") or {}
    theirs, ours = saved.get("model"), OmegaConf.to_container(cfg.model, resolve=True)
    if theirs != ours:
        raise CnnbenchError(f"the checkpoint was trained with model {theirs}, not {ours}; resume with the same model")
    classes = (ckpt.get("meta") or {}).get("class_names")
    if classes is not None and list(classes) != list(class_names):
        raise CnnbenchError(f"the checkpoint was trained on {len(classes)} classes ({', '.join(classes[:5])}"
                            f"{', ...' if len(classes) > 5 else ''}), this data has {len(class_names)}; resume "
                            f"with the same data, or start a new run with transfer.checkpoint=<that run>")
    optimizer = (saved.get("optimizer") or {}).get("_target_")
    if optimizer is not None and optimizer != cfg.optimizer._target_:
        raise CnnbenchError(f"the checkpoint was trained with optimizer {optimizer}, not {cfg.optimizer._target_}; "
                            f"resume with the same optimizer")
