"""Decoding many image files on all cores, with a progress bar and an estimate of the time left.

Pillow holds Python's lock for much of a small image's work, so threads do not scale on thumbnails; the files
are split into chunks decoded by a pool of forked processes (as torch's DataLoader workers are made), each
returning one uint8 array per chunk. Small jobs, and ``workers=1``, stay in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import torch

from cnnbench.data.decode import Resize, decode, probe
from cnnbench.signals import helper_process

IN_PROCESS_BELOW = 32  # files: fewer are decoded here (forking a pool costs about as much as 32 thumbnails)
MAX_CHUNK = 256  # files per task at most: large enough to amortise each hand-off, small for a smooth progress bar


def default_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _decode_chunk(paths: Sequence[str], channels: int, spec: Resize) -> np.ndarray:
    return np.stack([decode(p, channels, spec) for p in paths])


def _probe_chunk(paths: Sequence[str]) -> np.ndarray:
    return np.array([probe(p) for p in paths], dtype=np.int64).reshape(-1, 2)


def _chunks(chunk_fn: Callable, paths: Sequence[str], args: tuple, workers: int | None, what: str
            ) -> Iterator[tuple[int, np.ndarray]]:
    """(first position, ``chunk_fn(chunk, *args)``) for chunks of ``paths``, as they finish, on ``workers``
    processes."""
    workers = workers or default_workers()
    size = max(1, min(MAX_CHUNK, -(-len(paths) // (4 * workers))))  # at least 4 tasks per process: balanced ends
    starts = range(0, len(paths), size)
    if workers == 1 or len(paths) < IN_PROCESS_BELOW:
        yield from ((i, chunk_fn(paths[i:i + size], *args)) for i in starts)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    pool = ProcessPoolExecutor(min(workers, len(starts)), mp_context=multiprocessing.get_context("fork"),
                               initializer=helper_process, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(chunk_fn, paths[i:i + size], *args): i for i in starts}  # (forked before the bar)
        columns = (TextColumn(f"{what} {{task.total}} images on {workers} processes"), BarColumn(),
                   MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn())
        console = Console()
        with Progress(*columns, transient=True, console=console, disable=not console.is_terminal) as bar:  # (off
            # a terminal, a transient bar would leave a blank line)
            task = bar.add_task(what, total=len(paths))
            for future in as_completed(futures):
                result = future.result()  # a file's CnnbenchError arrives here, naming the file
                yield futures[future], result
                bar.advance(task, len(result))
        pool.shutdown()
    finally:
        stop_pool(pool)  # (after an error, a signal or a consumer that stopped early; a no-op after shutdown)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """End the pool now, its workers too: after an error or a signal nothing waits for the files left."""
    workers = list((pool._processes or {}).values())  # (the executor keeps no public list of them)
    manager = pool._executor_manager_thread  # (it reaps the workers as they end: wait for it, not beside it, or a
    # worker it has just reaped reads as alive here for a moment)
    pool.shutdown(wait=False, cancel_futures=True)
    for process in workers:
        if process.is_alive():
            process.terminate()
    if manager is not None:
        manager.join(timeout=5)
    for process in workers:
        if process.is_alive():  # (a worker that outlived SIGTERM: nothing it does is wanted any more)
            process.kill()
            process.join(timeout=5)
    if manager is not None:
        manager.join(timeout=5)


def gather(chunks: Iterator[tuple[int, np.ndarray | torch.Tensor]], n: int, arrange: Callable = lambda rows: rows
           ) -> torch.Tensor:
    """The chunks' rows (arrays or tensors), each chunk ``arrange``d, put in place in one tensor of ``n`` rows
    allocated once (no concatenated copy: a data set near data.max_memory_gb must not need that much memory
    twice)."""
    out = None
    for start, rows in chunks:
        rows = arrange(torch.as_tensor(rows))
        if out is None:
            out = torch.empty((n, *rows.shape[1:]), dtype=rows.dtype)
        out[start:start + len(rows)] = rows
    return out


def decode_all(paths: Sequence[str], channels: int, spec: Resize, workers: int | None = None) -> torch.Tensor:
    """Every file of ``paths`` decoded per ``spec``: uint8 (N, C, size, size)."""
    chunks = _chunks(_decode_chunk, list(paths), (channels, spec), workers, "decoding")
    return gather(chunks, len(paths), lambda rows: rows.permute(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W)


def probe_all(paths: Sequence[str], workers: int | None = None) -> torch.Tensor:
    """(height, width) of every file of ``paths`` as decoded upright, from the headers: int64 (N, 2)."""
    return gather(_chunks(_probe_chunk, list(paths), (), workers, "reading the sizes of"), len(paths))
