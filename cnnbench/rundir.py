"""The rules of a run directory: who may write it, what an earlier run left there, where a resume continues.

A run directory holds ``.hydra/`` (the config, Hydra's config and the overrides of the run that wrote it),
``tensorboard/`` (event files), ``checkpoints/{last,best}.pt``, ``figures/``, ``profile/`` and ``results.json``.

- One process owns it at a time: an OS lock (``flock``) on the directory itself, held for the whole run, so a
  second run into it stops at once, naming the holder (under DDP, rank 0 holds it). Taking the lock writes
  nothing.
- cnnbench records every path it writes in a run directory, before writing it, in the manifest
  ``.cnnbench-files`` (``own``). A run starts only in an empty directory or one with a manifest (a cnnbench run
  directory); anything else is refused, so no run writes into, or counts as its own, a folder of other files.
- A directory holding a completed or interrupted run (``results.json``, or a recorded ``last.pt`` left by a
  killed run) is only written again with ``trainer.resume=auto`` (continue it) or ``trainer.overwrite=true``
  (which first removes everything the old run recorded, and nothing else, so nothing of it can be picked up
  later while files a user put there stay). A refused run changes nothing.
- Nothing is written before the run has passed its checks: ``.hydra/`` is written when training starts, and a
  failure before that leaves an earlier run's files as they were.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cnnbench import fileio
from cnnbench.errors import CnnbenchError
from cnnbench.manifest import MANIFEST, check_writable, inside, is_run_dir, own, owned, read

CONTINUE_OR_START = "continue_or_start"  # trainer.resume: continue this directory's run if it has one, else start
RUN_OUTPUTS = ("results.json", "checkpoints/last.pt", "checkpoints/best.pt", ".hydra/config.yaml",
               ".hydra/hydra.yaml", ".hydra/overrides.yaml")  # the files every run writes under these names


def holds_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a ``last.pt`` that a cnnbench run wrote there (a run to continue)."""
    path = inside(run_dir, "checkpoints/last.pt")
    return "checkpoints/last.pt" in owned(run_dir) and path is not None and fileio.is_regular(path)


def foreign_contents(run_dir: Path, limit: int = 3) -> list[str]:
    """Up to ``limit`` entries of a directory without a manifest (so none of them is cnnbench's)."""
    if not run_dir.is_dir() or is_run_dir(run_dir):
        return []
    return sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(run_dir))[:limit]


def earlier_results(run_dir: Path) -> dict | None:
    """The results.json an earlier run left here, if any (a regular file, readable, a JSON object)."""
    text = read(run_dir, "results.json")
    try:
        results = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return results if isinstance(results, dict) else None


def prior_status(run_dir: Path, results: dict | None) -> str | None:
    """What an earlier run left here (``results``: its results.json): completed, interrupted (also killed: a
    last.pt without results), failed, or None."""
    if not is_run_dir(run_dir):
        return None
    status = results.get("status") if results and "results.json" in owned(run_dir) else None
    if status is None and holds_checkpoint(run_dir):
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


def in_use(path: Path) -> str | None:
    """Who holds ``path``'s run-directory lock (a run still training in it), or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # (released when fd closes)
    except BlockingIOError:
        return _lock_holder(path)
    finally:
        os.close(fd)
    return None


def unfinished(run_dir: Path) -> str | None:
    """Why ``run_dir`` is not a finished run to read (still training, or its results.json does not say
    completed), or None when it is one."""
    holder = in_use(run_dir)
    if holder is not None:
        return f"is still training ({holder})"
    status = (earlier_results(run_dir) or {}).get("status")
    if status != "completed":
        return f"did not complete (its results.json says {status})" if status else "has no results.json yet"
    return None


DEFAULT_RUN_DIR = re.compile(r"(^|/)outputs/\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}$")  # conf/config.yaml's


def default_run_dir(run_dir: Path, hydra_overrides: list[str]) -> bool:
    """Whether ``run_dir`` is Hydra's default ``outputs/<date>/<time>`` (no ``hydra.run.dir`` given)."""
    given = any(o.lstrip("+").startswith("hydra.run.dir=") for o in hydra_overrides)
    return not given and DEFAULT_RUN_DIR.search(run_dir.as_posix()) is not None


def lock_free_run_dir(run_dir: Path) -> RunDirLock:
    """The lock, taken, of ``run_dir`` or of ``<run_dir>-2``, ``-3``, ... : the first that is empty and that no
    other run holds (a default run directory, named after the second its run started in, is shared by every run
    started in that second)."""
    candidate, n = run_dir, 1
    while True:
        if not (candidate.is_dir() and any(candidate.iterdir())):
            lock = RunDirLock(candidate)
            with contextlib.suppress(CnnbenchError):  # (taken meanwhile: the next name)
                return lock.__enter__()
        n += 1
        candidate = run_dir.with_name(f"{run_dir.name}-{n}")


class RunDirLock:
    """Hold an exclusive OS lock on a run directory (``with RunDirLock(path):``); released when the process ends,
    however it ends."""

    def __init__(self, path: Path, key: str = "hydra.run.dir") -> None:
        self.path = Path(path)
        self.fd = None
        self.key = key

    def __enter__(self) -> RunDirLock:
        if self.fd is not None:  # (taken already: lock_free_run_dir)
            return self
        if self.path.exists() and not self.path.is_dir():
            raise CnnbenchError(f"{self.path} is a file, not a directory; choose another {self.key}")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise CnnbenchError(f"cannot make the directory {self.path}: a file stands in its path; choose "
                                f"another {self.key}") from None
        self.fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(self.path)
            os.close(self.fd)
            raise CnnbenchError(f"{self.path} is in use by another cnnbench run ({holder}); wait for it to end or "
                                f"choose another {self.key}") from None
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)  # (closing releases the lock)
        self.fd = None


@dataclass(frozen=True)
class ReusePlan:
    """What a run does with its directory: ``fresh`` (empty, or a failed run's), ``continue`` (resume),
    ``replace`` (overwrite), ``skip`` (a sweep's completed job) or ``refuse``; with the reason to print."""

    action: str
    resume: str | None  # trainer.resume as the run uses it
    status: str | None  # what an earlier run left here (``prior_status``)
    prior: dict | None  # its results.json
    reason: str = ""


def plan_reuse(run_dir: Path, t: DictConfig, overrides: list[str], multirun: bool = False,
               skip_completed: bool = False, owner: bool = True, requeueable: bool = False) -> ReusePlan:
    """The reuse rules (the module's docstring) for ``run_dir`` and the ``trainer`` config ``t``; only the
    process that owns the directory (``owner``) reads what an earlier run left there. A ``requeueable`` job
    (submitit's, which a cluster may preempt and requeue) continues its own checkpoint when it has one."""
    if t.overwrite and t.resume:
        return ReusePlan("refuse", t.resume, None, None, f"trainer.overwrite=true replaces the run in {run_dir} and "
                         f"trainer.resume={t.resume} continues one: give one of them")
    prior = earlier_results(run_dir) if owner else None
    status = prior_status(run_dir, prior) if owner else None
    if status == "completed" and multirun and skip_completed and same_job(prior, overrides):
        return ReusePlan("skip", None, status, prior, f"skipping {run_dir}: completed before ({' '.join(overrides)})")
    resume, reason = t.resume, ""
    if multirun and skip_completed and status == "interrupted" and not resume:
        resume, reason = "auto", f"resuming {run_dir}: interrupted before ({' '.join(overrides)})"
    elif resume is None and requeueable:
        resume, reason = CONTINUE_OR_START, ("a submitit job: trainer.resume=continue_or_start (a requeued job "
                                             "continues its checkpoint)")
    if resume == CONTINUE_OR_START:  # (every rank of a restarted torchrun reads the same directory)
        resume = "auto" if holds_checkpoint(run_dir) else None
    refusal = reuse_refusal(run_dir, status, resume, t.overwrite)
    if refusal:
        return ReusePlan("refuse", resume, status, prior, refusal)
    action = "replace" if status is not None and t.overwrite else ("continue" if resume else "fresh")
    return ReusePlan(action, resume, status, prior, reason)


def reuse_refusal(run_dir: Path, status: str | None, resume: str | None, overwrite: bool) -> str | None:
    """Why a run may not start here, or None: a directory of other files (no manifest) whatever the options, a
    completed or interrupted run unless this one continues it (``trainer.resume=auto``) or replaces it
    (``trainer.overwrite=true``)."""
    foreign = foreign_contents(run_dir)
    if foreign:
        return (f"{run_dir} holds files that cnnbench did not write ({', '.join(foreign)}"
                f"{', ...' if len(foreign) >= 3 else ''}); a run needs an empty directory or a cnnbench run "
                f"directory: choose another hydra.run.dir")
    known = set(owned(run_dir))
    for rel in RUN_OUTPUTS:  # (checked now, not when the file is due after hours of training)
        try:
            check_writable(run_dir, rel, known)
        except CnnbenchError as e:
            return str(e)
    if status not in ("completed", "interrupted") or overwrite:
        return None
    held = f"{run_dir} already holds a{'n' if status == 'interrupted' else ''} {status} run"
    if resume and resume != "auto" and checkpoint_in(resume, "last.pt").resolve().parent.parent != run_dir.resolve():
        return (f"{held}: resuming {resume} here would overwrite it; choose another hydra.run.dir (or set "
                f"trainer.overwrite=true to replace it)")
    if not resume:
        more = " with more epochs" if status == "completed" else ""
        return (f"{held}; choose another hydra.run.dir, set trainer.resume=auto to continue it{more}, or "
                f"trainer.overwrite=true to replace it")
    return None


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files of atomic writes that a killed process left behind (``.<name>.<pid>.<random>.tmp``)."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / ".hydra"):
        fileio.remove_stale_temporaries(folder)


def write_hydra_files(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig | None, overrides: list[str]) -> None:
    """``.hydra/{config,hydra,overrides}.yaml`` of the run that now owns the directory (Hydra's own copy is off:
    it would be written before the run's checks, also for a refused run)."""
    files = {"overrides.yaml": OmegaConf.to_yaml(overrides)}
    if hydra_cfg is not None:
        recorded = OmegaConf.create(OmegaConf.to_container(hydra_cfg))
        recorded.runtime.output_dir = str(Path(run_dir).absolute())  # (where the run went: -2 when taken)
        files["hydra.yaml"] = "hydra:\n" + "".join(f"  {line}\n" for line in OmegaConf.to_yaml(recorded).splitlines())
    files["config.yaml"] = OmegaConf.to_yaml(cfg, resolve=True)  # last: its appearance says training started
    own(run_dir, *(f".hydra/{name}" for name in files))
    for name, text in files.items():
        fileio.atomic_write(run_dir / ".hydra" / name, lambda f, text=text: f.write(text.encode()))


def job_overrides(values: list[str]) -> list[str]:
    """A job's (or a sweep's) defining overrides: the sweep.* switches aside."""
    return [o for o in values if not o.startswith("sweep.")]


def same_job(prior: dict, overrides: list[str]) -> bool:
    """Whether earlier results came from the same overrides (sweep.* switches aside)."""
    return job_overrides(prior.get("overrides", [])) == job_overrides(overrides)


def locate_checkpoint(run: Path, key: str, name: str, allow_unfinished: bool = False) -> tuple[Path, Path | None]:
    """The checkpoint that ``key=run`` names (a run directory's ``checkpoints/<name>``, or a .pt file) and the
    cnnbench run directory holding it (None for a file elsewhere); one line for anything else. A run still
    training, or one that did not complete, is refused unless ``allow_unfinished``."""
    if not run.exists():
        raise CnnbenchError(f"{key}={run}: no such run directory or checkpoint")
    if run.is_dir():
        ckpt_path = inside(run, f"checkpoints/{name}")
        if ckpt_path is None or not ckpt_path.is_file():
            status = (earlier_results(run) or {}).get("status")
            said = f" (its results.json says {status})" if status else ""
            raise CnnbenchError(f"{run} has no checkpoints/{name}{said} (a regular file, not through a link); give "
                                "a run directory that cnnbench trained, or a checkpoint file")
        run_dir = run if is_run_dir(run) else None
    elif run.is_file():
        ckpt_path = run
        holder = run.parent.parent
        run_dir = holder if run.parent.name == "checkpoints" and is_run_dir(holder) else None
    else:
        raise CnnbenchError(f"{key}={run} is not a regular file or a folder; give a run directory or a checkpoint")
    why = unfinished(run_dir) if run_dir is not None else None
    if why and not allow_unfinished:
        option = "transfer.allow_unfinished=true" if key.startswith("transfer.") else "allow_unfinished=true"
        raise CnnbenchError(f"{key}={run_dir} {why}; wait for it to end, or give {option} to use its checkpoint as "
                            f"it is now")
    return ckpt_path, run_dir


def training_output(path: Path) -> Path | None:
    """The run directory whose training wrote ``path`` (its results, config, checkpoints, events or manifest:
    files that another command must never replace), or None."""
    real = Path(os.path.realpath(path))
    for holder in list(real.parents)[:3]:
        if is_run_dir(holder):
            rel = real.relative_to(holder).as_posix()
            if rel in (*RUN_OUTPUTS, MANIFEST) or rel.startswith(("checkpoints/", ".hydra/", "tensorboard/")):
                return holder
    return None


def checkpoint_in(path: Path | str, name: str) -> Path:
    """A run directory's ``checkpoints/<name>``, or ``path`` itself when it is not a directory."""
    path = Path(path).expanduser()
    return path / "checkpoints" / name if path.is_dir() else path


def resume_path(resume: str, run_dir: Path) -> Path:
    """The checkpoint that ``trainer.resume`` names: a .pt file, a run directory's last.pt, or ``auto``."""
    source = run_dir if resume == "auto" else Path(resume).expanduser()
    holder = in_use(source) if resume != "auto" and source.is_dir() else None
    if holder is not None:
        raise CnnbenchError(f"trainer.resume={resume} is still training ({holder}); wait for it to end")
    path = checkpoint_in(source, "last.pt")
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
