"""What every console script shares: one error boundary and ``key=value`` arguments.

A user's mistake (``CnnbenchError``, or a Hydra/OmegaConf config error) becomes ``error: <one line>`` on stderr
and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from cnnbench.errors import CnnbenchError, one_line


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` and exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextmanager
def error_boundary() -> Iterator[None]:
    """Turn user errors raised inside the block into one line and exit 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except CnnbenchError as e:
        fail(str(e))
    except (HydraException, OmegaConfBaseException) as e:
        fail(one_line(e))
    except KeyboardInterrupt:  # Ctrl-C before training started (once it has, the trainer stops cleanly)
        fail("interrupted", code=130)


def key_values(argv: list[str], usage: str, keys: set[str], required: set[str] = frozenset(),
               doc: str | None = None) -> dict[str, str]:
    """Parse ``key=value`` arguments; ``-h``/``--help`` prints ``usage`` (and ``doc``) and exits 0.

    An unknown key, a bare word or a missing required key is one line naming it, with the usage."""
    if any(a in ("-h", "--help") for a in argv):
        print(usage + (f"\n\n{doc.strip()}" if doc else ""))
        sys.exit(0)
    bare = [a for a in argv if "=" not in a]
    if bare:
        fail(f"unknown argument {bare[0]!r} (arguments are key=value); {usage}")
    args = dict(a.split("=", 1) for a in argv)
    unknown = sorted(set(args) - keys)
    if unknown:
        fail(f"unknown argument {unknown[0]!r}; {usage}")
    missing = sorted(required - set(args))
    if missing:
        fail(f"missing {missing[0]}=...; {usage}")
    return args


def positive_int(args: dict[str, str], key: str, default: int) -> int:
    """``args[key]`` as a whole number >= 1 (``default`` when absent); anything else is a one-line error."""
    value = args.get(key, str(default))
    if not value.isdigit() or int(value) < 1:
        fail(f"{key} must be a whole number >= 1, got {value!r}")
    return int(value)
