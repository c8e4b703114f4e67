"""Stopping cleanly on Ctrl-C or SIGTERM: finish the step, save a resumable checkpoint, exit 130."""

from __future__ import annotations

import signal

import torch

from cnnbench.engine.distributed import any_rank


class StopRequest:
    """SIGINT/SIGTERM set a flag that the loop checks after each step; a second SIGINT stops at once.

    With several processes, ``stopping`` turns true on all of them at the same step (see ``agree``)."""

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
        self.requested = True

    def __enter__(self) -> StopRequest:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
