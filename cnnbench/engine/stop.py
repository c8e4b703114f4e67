"""Stopping cleanly on Ctrl-C or SIGTERM: finish the step, save a resumable checkpoint, exit 130.

Under submitit (a SLURM job, or its local executor), its preemption and time-out signal (USR2, or
``SUBMITIT_PREEMPT_SIGNAL``) stops the run the same way first; the command then hands the signal back to
submitit, which requeues the job (``preemption_signal``).
"""

from __future__ import annotations

import os
import signal

import torch

from cnnbench.engine.distributed import any_rank
from cnnbench.signals import Terminated


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loop checks after each step; a second SIGINT stops at once.

    With several processes, ``stopping`` turns true on all of them at the same step (see ``agree``)."""

    preempted: int | None = None  # the submitit signal that stopped a run of this process, to hand back

    def __init__(self, distributed: bool = False) -> None:
        self.requested = False
        self.distributed = distributed
        self.agreed = False
        self._previous: dict[int, object] = {}

    @property
    def stopping(self) -> bool:
        return self.agreed if self.distributed else self.requested

    def agree(self, device: torch.device) -> None:
        """Data parallel: stop everywhere once any process was asked to (one tiny all-reduce)."""
        if self.distributed:
            self.agreed = any_rank(self.requested, device)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signum == preemption_signal():
            StopRequest.preempted = signum
        else:
            Terminated.received = signum  # (a sweep starts no other job; the command exits 128 + signum)
        self.requested = True

    def __enter__(self) -> StopRequest:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM, preemption_signal()):
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def preemption_signal() -> int | None:
    """The signal with which submitit announces a preemption or time-out, when this process is a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper(), None)
