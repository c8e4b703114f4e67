"""User-facing errors: one line, no traceback."""

from __future__ import annotations


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
