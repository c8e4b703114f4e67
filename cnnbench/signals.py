"""SIGTERM outside the training loop, and processes that end with their parent.

Inside the loop the trainer turns SIGINT and SIGTERM into a clean stop (``cnnbench.engine.stop``). Everywhere
else a ``cnnbench`` process raises ``Terminated`` on SIGTERM, so that it says what it was doing and how to go
on instead of vanishing with exit 143. A sweep's own process (``cnnbench -m``) passes the signal on to the
processes running its jobs (``cnnbench.sweep``), which stop and record themselves as interrupted.
Helper processes (the decoding pool) ask the kernel to end them when their parent ends, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Terminated(Exception):
    """SIGTERM (or another stop signal) arrived outside the training loop."""

    received: int | None = None  # the stop signal (SIGINT, SIGTERM) this process received, if any

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def raise_terminated(signum: int, frame: object) -> None:  # noqa: ARG001
    Terminated.received = signum
    raise Terminated(signum)


def note_terminated(signum: int, frame: object) -> None:  # noqa: ARG001
    """Remember the signal, raise nothing: between a sweep's jobs (the next job sees it and does not start)."""
    Terminated.received = signum


def install(handler: Callable[[int, object], None] = raise_terminated) -> None:
    """Handle SIGTERM with ``handler`` in this process (only the main thread may; elsewhere nothing changes)."""
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, handler)


def helper_process(parent: int) -> None:
    """What a forked helper process (the decoding pool's) runs first: SIGTERM back to its default, so that the
    pool's stop ends it whatever handler the parent had installed (``note_terminated`` raises nothing and
    would keep it alive), and its end tied to the parent's."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent)


def die_with_parent(parent: int, signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``signum`` to this process when its parent (process ``parent``) ends, however it
    ends (Linux; elsewhere nothing): a worker must not outlive the process it works for."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # (the parent ended before the request took effect)
            os.kill(os.getpid(), signum)
