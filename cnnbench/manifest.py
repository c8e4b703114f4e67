"""What cnnbench owns in a run directory, and the only ways it touches a path there.

cnnbench records every path it writes in a run directory, before writing it, in the manifest ``.cnnbench-files``
(one path a line, relative to the run directory; a folder written whole ends in ``/``). The manifest and every
other file of a run directory are input like any other: a line is used only when it names a place strictly
inside the run directory, through no ``..`` and no symbolically linked component (``inside``), so no edited or
planted line reaches a file elsewhere. Writes go through no link either (``own`` refuses a path that runs through
one, or a file that cnnbench did not record), removal touches only regular files and empty folders (``clear``),
and reads open only regular files (``read``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from cnnbench import fileio
from cnnbench.errors import CnnbenchError, NotRegularFile

MANIFEST = ".cnnbench-files"


def inside(run_dir: Path, rel: str) -> Path | None:
    """``run_dir/rel`` when ``rel`` names a place strictly inside ``run_dir``: relative, no ``..``, not the run
    directory itself, and no component a symbolic link. None otherwise."""
    parts = [p for p in str(rel).split("/") if p not in ("", ".")]
    if not parts or str(rel).startswith("/") or ".." in parts:
        return None
    path = Path(run_dir)
    for part in parts:
        path = path / part
        if path.is_symlink():
            return None
    return path


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a directory that cnnbench wrote (it holds the manifest, a regular file)."""
    return fileio.is_regular(Path(path) / MANIFEST)


def owned(run_dir: Path) -> list[str]:
    """The paths (relative; a folder written whole ends in ``/``) that cnnbench recorded in ``run_dir``, each
    normalised; lines that name no place inside it (``inside``) are left out."""
    try:
        lines = fileio.read_regular(Path(run_dir) / MANIFEST, follow=False).decode().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    kept = []
    for line in lines:
        if inside(run_dir, line) is not None:
            rel = "/".join(p for p in line.split("/") if p not in ("", "."))
            kept.append(rel + ("/" if line.endswith("/") else ""))
    return list(dict.fromkeys(kept))


def read(run_dir: Path, rel: str) -> bytes | None:
    """The bytes of the run directory's regular file ``rel`` (``inside``; not a link, FIFO or device), or None."""
    path = inside(run_dir, rel)
    if path is None:
        return None
    try:
        return fileio.read_regular(path, follow=False)
    except OSError:
        return None


def _relative(run_dir: Path, path: str | Path) -> str | None:
    """A path to record: a ``str`` is a name inside ``run_dir``; a ``Path`` is where a file is (absolute, or from
    the working directory): None when it lies outside ``run_dir``."""
    if isinstance(path, Path):
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(run_dir))
        if rel == ".." or rel.startswith("../"):
            return None
        return rel
    return os.path.normpath(path) + ("/" if path.endswith("/") else "")


def own(run_dir: Path, *paths: str | Path) -> None:
    """Record ``paths`` as cnnbench's, before they are written: a kill between the record and the write leaves
    nothing unrecorded. A ``str`` is a name inside ``run_dir`` (``checkpoints/last.pt``; a folder that is wholly
    cnnbench's as ``name/``); a ``Path`` is where a file is (paths outside ``run_dir`` are not recorded). A path
    through a symbolic link, one that is not a regular file (or folder), or a file that cnnbench did not write
    is refused: nothing is ever written there."""
    run_dir = Path(run_dir)
    known = set(owned(run_dir))
    new = []
    for path in paths:
        rel = _relative(run_dir, path)
        if rel is None:
            continue
        check_writable(run_dir, rel, known)
        if rel not in known:
            known.add(rel)
            new.append(rel)
    if new:
        _append(run_dir, new)


def check_writable(run_dir: Path, rel: str, known: set[str]) -> None:
    """Refuse to write ``rel`` in ``run_dir`` (one line naming it) when it names no place inside (``inside``),
    stands where a regular file (or a folder, for ``name/``) cannot be written, or is a file that a user put
    there (it exists and ``known``, the manifest's lines, does not hold it)."""
    path = inside(run_dir, rel)
    if path is None:
        raise CnnbenchError(f"{run_dir / rel}: the path runs through a symbolic link or out of the run directory; "
                            f"cnnbench writes only inside a run directory and never through a link")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    want_folder = rel.endswith("/")
    if not (stat.S_ISDIR(mode) if want_folder else stat.S_ISREG(mode)):
        raise CnnbenchError(f"{path} is not a regular {'folder' if want_folder else 'file'}; cnnbench writes only "
                            f"regular files: move it away or choose another hydra.run.dir")
    if rel not in known and not want_folder:
        raise CnnbenchError(f"{path} exists and cnnbench did not write it (not in {run_dir / MANIFEST}); move it "
                            f"away or choose another hydra.run.dir")


def _append(run_dir: Path, rels: list[str]) -> None:
    """Add ``rels`` to the manifest, opened without following a link (and never a FIFO)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    target = run_dir / MANIFEST
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, fileio.FILE_MODE)
    except OSError as e:
        raise NotRegularFile(target, "a symbolic link or a FIFO, not the manifest cnnbench writes") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(target)
        os.write(fd, "".join(f"{rel}\n" for rel in rels).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def clear(run_dir: Path) -> list[str]:
    """Remove what the old run recorded (trainer.overwrite=true): its regular files, and the folders this leaves
    empty. Links, FIFOs, devices, files that cnnbench did not write and the run directory itself stay. Returns the
    regular files that stayed."""
    run_dir = Path(run_dir)
    folders = set()
    for rel in owned(run_dir):
        path = inside(run_dir, rel)
        if path is None:
            continue
        if rel.endswith("/"):
            _remove_tree(path)
        elif fileio.is_regular(path):
            path.unlink()
        folders.update(p for p in Path(rel.rstrip("/")).parents if str(p) != ".")
    for rel in sorted(folders, key=lambda p: len(p.parts), reverse=True):  # deepest first
        with contextlib.suppress(OSError):
            (run_dir / rel).rmdir()  # (only when empty)
    fileio.atomic_write(run_dir / MANIFEST, lambda f: None)  # still a cnnbench run directory, owning nothing yet
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if fileio.is_regular(p) and p.name != MANIFEST)


def _remove_tree(folder: Path) -> None:
    """The regular files under ``folder`` (a real folder, links not followed), then its folders left empty."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for dirpath, dirnames, filenames in os.walk(folder, topdown=False):
        for name in filenames:
            if fileio.is_regular(os.path.join(dirpath, name)):
                os.unlink(os.path.join(dirpath, name))
        for name in dirnames:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(dirpath, name))  # (an empty real folder; a link to a folder fails here)
    with contextlib.suppress(OSError):
        folder.rmdir()
