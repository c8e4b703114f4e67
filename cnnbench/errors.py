"""User-facing errors: one line, no traceback."""

from __future__ import annotations

import errno


class CnnbenchError(Exception):
    """A mistake in the user's input or environment, reported as a single line.

    Every console script catches it (``cnnbench.cli.error_boundary``), prints ``error: <message>`` and exits 2.
    """


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
                  errno.ENOTDIR, errno.EISDIR, errno.ENOENT}


def os_error_message(e: OSError) -> str | None:
    """One line for a file-system failure a user can cause (permissions, read-only or full disk, a file where a
    folder should be), else None."""
    if e.errno not in USER_OS_ERRORS:
        return None
    where = f" {e.filename}" if e.filename else ""
    hint = {errno.EEXIST: "a file stands where a folder is needed", errno.ENOTDIR: "a file stands in the path",
            errno.EISDIR: "it is a folder, not a file", errno.ENOENT: "no such file or folder"}.get(
        e.errno, "check the permissions and free space of the output directory")
    return f"cannot write{where}: {e.strerror or e}; {hint}"
