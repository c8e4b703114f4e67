"""Host memory: glibc's malloc keeps what a training step frees, for the next step to reuse.

glibc serves every allocation above its mmap threshold (128 KiB, growing to at most 32 MiB) with a fresh
``mmap`` and hands it back to the kernel on ``free``. A training step on the CPU allocates and frees its
activations every step (about 3 GB for airbench at batch 2,000), so each step faults every page in again and
the kernel zeroes each one: measured on 2 cores of an AMD EPYC (bf16), a third of the process's time went to
the kernel. ``trainer.keep_host_memory`` (on by default) makes freed memory stay in the process, as the
jemalloc/tcmalloc settings of ``torch.backends.xeon.run_cpu`` do: no ``mmap`` for large blocks, and the heap's
top is trimmed only above 2 GiB. The price is a resident size that stays near the run's peak.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameters (glibc's malloc.h)
KEEP_AT_TOP = 2**31 - 1  # the largest trim threshold mallopt takes (an int)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse; False where the C library has no ``mallopt``."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # this process's C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, KEEP_AT_TOP) == 1
