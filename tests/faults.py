"""Fault injection for tests/test_rundir.py's fault matrix, installed in a cnnbench subprocess before it starts.

``install(point, kind)`` makes the run fail once at ``point`` (start: the 3rd step, before any checkpoint;
mid_epoch: the 5th step of the second epoch; checkpoint: inside the write of the second last.pt;
evaluation: the second validation; results: writing results.json) in the way ``kind`` says (sigkill, sigint,
sigterm, exception, disk_full, read_only). Only functions are wrapped; cnnbench's code is unchanged.
"""

from __future__ import annotations

import errno
import os
import signal

FIRED = "fault.fired"  # written in the working directory when the fault is made: a test checks that it was


def _fail(kind: str, where: str = "") -> None:
    with open(FIRED, "w") as f:
        f.write(f"{kind} at {where}\n")
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind in ("sigint", "sigterm"):  # handled: the run stops cleanly where it is
        os.kill(os.getpid(), signal.SIGINT if kind == "sigint" else signal.SIGTERM)
    elif kind == "exception":
        raise RuntimeError(f"injected fault at {where}")
    elif kind == "disk_full":
        raise OSError(errno.ENOSPC, "No space left on device", where)
    elif kind == "read_only":  # (what a read-only mount gives; as root, file modes cannot make one)
        raise OSError(errno.EROFS, "Read-only file system", where)


def install(point: str, kind: str, steps_per_epoch: int) -> None:
    import cnnbench.fileio as fileio
    import cnnbench.results as results
    from cnnbench.engine import trainer

    calls = {"n": 0}

    def once(condition: bool, where: str) -> None:
        if condition and not calls.get("done"):
            calls["done"] = True
            _fail(kind, where)

    if point in ("start", "mid_epoch"):
        at = 3 if point == "start" else steps_per_epoch + 5
        original_step = trainer.Trainer._step

        def step(self):  # (the optimizer step that becomes state.step + 1)
            original_step(self)
            once(self.state.step + 1 == at, f"step {at}")
        trainer.Trainer._step = step
    elif point == "checkpoint":
        original_write = fileio.atomic_write

        def write(path, fn):
            if path.name == "last.pt":
                calls["n"] += 1

                def partial(f, failing=calls["n"] == 2):
                    if failing:  # half a file in the temporary, then the fault
                        f.write(b"PK\x03\x04 half a checkpoint")
                        f.flush()
                        once(True, str(path))
                        f.seek(0)
                        f.truncate()
                    fn(f)
                return original_write(path, partial)
            return original_write(path, fn)
        fileio.atomic_write = write
    elif point == "evaluation":
        original_predict = trainer.predict

        def predict(*args, **kwargs):
            calls["n"] += 1
            once(calls["n"] == 2, "validation")
            return original_predict(*args, **kwargs)
        trainer.predict = predict
    elif point == "results":
        original_json = results.atomic_write_json

        def write_json(obj, path):
            once(True, str(path))
            return original_json(obj, path)
        results.atomic_write_json = write_json
