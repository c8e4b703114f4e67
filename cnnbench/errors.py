"""User-facing errors: one line, no traceback."""

from __future__ import annotations

import errno


class CnnbenchError(Exception):
    """A mistake in the user's input or environment, reported as a single line.

    Every console script catches it (``cnnbench.cli.error_boundary``), prints ``error: <message>`` and exits 2.
    """


class ConfigError(CnnbenchError):
    """A config that fails its checks, found before anything is read or written: a single run leaves nothing."""


def first_line(error: BaseException | str, limit: int = 160) -> str:
    """The first line of an exception's text, cut at a word boundary within ``limit`` characters (with ...)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else ""
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:(")
    return f"{cut} ..."


def require(ok: bool, message: str) -> None:
    """Raise ``CnnbenchError(message)`` unless ``ok``: a check that reads as the rule it enforces."""
    if not ok:
        raise CnnbenchError(message)


class NotRegularFile(OSError):
    """A path that cnnbench would read or replace is a FIFO, a device, a folder or (where links are not followed)
    a symbolic link."""

    def __init__(self, path: object, what: str = "not a regular file") -> None:
        super().__init__(errno.EINVAL, what, str(path))


def one_line(error: BaseException) -> str:
    """Fold a Hydra/OmegaConf error (several lines with key dumps) into one readable line."""
    parts: list[str] = []
    for exc in (error, error.__cause__):
        if exc is None:
            continue
        text = str(exc)
        head, _, options = text.partition("Available options in")
        for line in head.splitlines():
            line = line.strip()
            if line and not line.startswith(("full_key:", "reference_type=", "object_type=", "Config search path")):
                parts.append(line.rstrip(".:"))
        if options:  # Hydra lists a group's options one per line: make it "available ...: a, b, c"
            group, *names = options.split("\n")
            parts.append(f"available options in{group.rstrip(':')}: "
                         + ", ".join(n.strip() for n in names if n.strip() and "search path" not in n.lower()
                                     and not n.strip().startswith("provider=")))
    return "; ".join(dict.fromkeys(parts)) or type(error).__name__


USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EEXIST,
                  errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP}
HINTS = {errno.EEXIST: "a file stands where a folder is needed", errno.ENOTDIR: "a file stands in the path",
         errno.EISDIR: "it is a folder, not a file", errno.ENOENT: "no such file or folder",
         errno.ENAMETOOLONG: "a name in the path is longer than the file system allows (255 bytes a name, 4096 a "
                             "path): choose a shorter one",
         errno.ELOOP: "the path runs through a loop of symbolic links"}


def os_error_message(e: OSError) -> str | None:
    """One line for a file-system failure a user can cause (permissions, read-only or full disk, a file where a
    folder should be, a name too long, a FIFO where a file should be), else None."""
    where = f" {e.filename}" if e.filename else ""
    if isinstance(e, NotRegularFile):
        return f"cannot use{where}: it is {e.strerror}; cnnbench reads and replaces only regular files"
    if e.errno not in USER_OS_ERRORS:
        return None
    hint = HINTS.get(e.errno, "check the permissions and free space of the output directory")
    name = e.filename if isinstance(e.filename, str) else ""
    if e.errno == errno.ENAMETOOLONG and len(name) > 200:  # (the path itself would be the whole line)
        where = f" {name[:80]}...{name[-40:]}"
    verb = "write" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM) \
        else "use"
    return f"cannot {verb}{where}: {e.strerror or e}; {hint}"
