"""Files written atomically (a reader, or a crash, never sees half a file), and files read only when they are
regular files (a FIFO or a device at a path cnnbench reads would block it forever)."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from cnnbench.errors import NotRegularFile, first_line


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give: every file a run writes has the same mode


TMP_SUFFIX = ".tmp"  # temporaries are ``.<name>.<writer's pid>.<random>.tmp`` in the destination's folder


def remove_stale_temporaries(folder: Path) -> int:
    """Remove the temporaries in ``folder`` whose writing process is gone (killed mid-write); those of live
    writers stay. Returns how many were removed."""
    removed = 0
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}") if Path(folder).is_dir() else ():
        pid = tmp.name.rsplit(".", 3)[-3] if tmp.name.count(".") >= 4 else ""
        if pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
            continue
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def read_regular(path: Path | str, follow: bool = True) -> bytes:
    """The bytes of ``path`` when it is a regular file (``follow=False``: and not a symbolic link). Anything else
    raises ``NotRegularFile`` without blocking: the file is opened non-blocking and checked before it is read."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ELOOP and not follow:
            raise NotRegularFile(path, "a symbolic link, which cnnbench does not follow here") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(path)
        os.set_blocking(fd, True)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def is_regular(path: Path | str) -> bool:
    """Whether ``path`` itself (not what a link points to) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in the same folder, fsync, then rename over ``path`` (a link there is
    replaced, never followed). The file gets the mode a plain ``open()`` would (0644 under the usual umask), not
    mkstemp's 0600. A failed write (a full disk) names the file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TMP_SUFFIX)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.filename is None:  # (a write's error names no file: say which)
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` ``obj`` to ``path`` atomically. torch reports a failed write (a full disk) as a RuntimeError
    of its stream writer: that becomes the OSError it is."""
    import errno

    import torch

    try:
        atomic_write(path, lambda f: torch.save(obj, f))
    except RuntimeError as e:
        if "PytorchStreamWriter" not in str(e) and "unexpected pos" not in str(e):
            raise
        raise OSError(errno.ENOSPC if "unexpected pos" in str(e) else errno.EIO,
                      f"writing failed ({first_line(e, 80)}); is the disk full?", str(path)) from None


def save_image(image: Any, path: Path) -> None:
    """Save a PIL image atomically, in the format its suffix names (a link at ``path`` is replaced, not
    followed)."""
    from PIL import Image

    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    atomic_write(path, lambda f: image.save(f, format=fmt))


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy a file atomically (the destination is either absent or complete)."""
    atomic_write(dst, lambda f: f.write(Path(src).read_bytes()))


def atomic_write_json(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))
