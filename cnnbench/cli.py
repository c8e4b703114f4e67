"""What every console script shares: one error boundary and ``key=value`` arguments.

A user's mistake (``CnnbenchError``, a Hydra/OmegaConf config error, or a path that cannot be written)
becomes ``error: <one line>`` on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cnnbench.errors import CnnbenchError, first_line, one_line, os_error_message
from cnnbench.versions import install_problem


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` and exit."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


@contextmanager
def error_boundary() -> Iterator[None]:
    """Turn user errors raised inside the block into one line and exit 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    problem = install_problem()  # (torch and torchvision that do not load together: from metadata, no import)
    if problem:
        fail(problem)
    try:
        yield
    except CnnbenchError as e:
        fail(str(e))
    except (HydraException, OmegaConfBaseException) as e:
        fail(one_line(e))
    except OSError as e:  # a path the user gave that cannot be written (a file in the way, no permission, full)
        message = os_error_message(e)
        if message is None:
            raise
        fail(message)
    except RuntimeError as e:  # the machine's memory (torch's OutOfMemoryError is a RuntimeError too)
        if "torchvision::" in str(e):  # (builds that the metadata did not tell apart)
            fail(f"torchvision does not load beside this torch ({first_line(e, 80)}); reinstall both from one index: "
                 f"pip install --force-reinstall torch torchvision")
        if not out_of_memory(e):
            raise
        fail(f"out of memory: {first_line(e, 160)}; lower data.batch_size, data.eval_batch_size or data.image_size")
    except KeyboardInterrupt:  # Ctrl-C before training started (once it has, the trainer stops cleanly)
        fail("interrupted", code=130)


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is an allocation that the device or the host could not serve."""
    return type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in str(e) or \
        "out of memory" in str(e).lower()


def key_values(argv: list[str], usage: str, keys: set[str], required: set[str] = frozenset(),
               doc: str | None = None) -> dict[str, str]:
    """Parse ``key=value`` arguments; ``-h``/``--help`` prints ``usage`` (and ``doc``) and exits 0.

    An unknown key, a bare word or a missing required key is one line naming it, with the usage."""
    if any(a in ("-h", "--help") for a in argv):
        print(usage + (f"\n\n{doc.strip()}" if doc else "").replace("``", ""))  # (plain text, not reST)
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


def output_file(value: str, key: str, suffixes: tuple[str, ...], overwrite: bool = False) -> Path:
    """``key=value`` as a file to write, checked before any work (so that nothing computed is lost): one of
    ``suffixes``, not a folder, in a folder that exists or can be made and is writable, and not an existing file
    unless ``overwrite``."""
    try:
        return _output_file(value, key, suffixes, overwrite)
    except OSError as e:  # (a name too long, a loop of links: the path cannot be used at all)
        fail(os_error_message(e) or f"{key}={value}: {e.strerror or e}")


def _output_file(value: str, key: str, suffixes: tuple[str, ...], overwrite: bool) -> Path:
    path = Path(value).expanduser()
    if path.is_dir() or value.endswith(("/", os.sep)):
        fail(f"{key}={value} is a folder; give a file name ending in {' or '.join(suffixes)}")
    if path.suffix.lower() not in suffixes:
        fail(f"{key}={value} must end in {' or '.join(suffixes)}")
    if path.is_symlink() and not overwrite:
        fail(f"{key}={value} is a symbolic link; give a new file name or overwrite=true to replace the link")
    if path.exists() and not path.is_file():
        fail(f"{key}={value} is not a regular file; give a new file name")
    if path.exists() and not overwrite:
        fail(f"{key}={value} exists; give a new file name or overwrite=true to replace it")
    writable_folder(path.parent, f"{key}={value}")
    return path


def writable_folder(folder: Path, what: str) -> None:
    """Fail in one line unless ``folder`` exists and is writable, or can be made (its nearest existing parent is
    a writable folder)."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        fail(f"{what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        fail(f"{what}: {existing} is not writable")


def flag(args: dict[str, str], key: str, default: bool = False) -> bool:
    """``args[key]`` as true or false; anything else is a one-line error."""
    value = args.get(key, str(default)).lower()
    if value not in ("true", "false"):
        fail(f"{key} must be true or false, got {args[key]!r}")
    return value == "true"


def positive_int(args: dict[str, str], key: str, default: int) -> int:
    """``args[key]`` as a whole number >= 1 (``default`` when absent); anything else is a one-line error."""
    value = args.get(key, str(default))
    if not value.isdigit() or int(value) < 1:
        fail(f"{key} must be a whole number >= 1, got {value!r}")
    return int(value)


def continue_command(run_dir: Path) -> str:
    """This command, copy-pasteable, continuing the run in ``run_dir`` (``trainer.resume=auto`` there)."""
    own = ("hydra.run.dir=", "trainer.resume=", "trainer.overwrite=")
    kept = [a for a in sys.argv[1:] if not a.lstrip("+~").startswith(own)]
    return shlex.join(["cnnbench", *kept, f"hydra.run.dir={run_dir}", "trainer.resume=auto"])
