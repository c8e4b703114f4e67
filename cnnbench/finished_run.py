"""A finished run as the commands after training load it: its checkpoint, config, input spec and model."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnbench import rundir
from cnnbench.config.artefact import recorded_config
from cnnbench.data.spec import InputSpec
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.engine.host_memory import keep_freed_memory
from cnnbench.engine.runtime import resolve_device, resolve_precision
from cnnbench.errors import CnnbenchError, first_line
from cnnbench.precision import Precision


@dataclass
class FinishedRun:
    checkpoint: Path
    run_dir: Path | None  # the cnnbench run directory holding the checkpoint; None for a checkpoint elsewhere
    cfg: DictConfig  # the run's config, as recorded in its checkpoint
    spec: InputSpec  # what the model takes: channels, sizes, normalisation, class names
    model: nn.Module  # in eval mode, on the CPU, with the checkpoint's weights
    step: int | None
    provenance: dict | None = None  # the software, command line and host that trained it

    @property
    def class_names(self) -> list[str]:
        return list(self.spec.class_names)

    def precision(self, device: torch.device) -> Precision:
        """The run's precision on ``device`` (fp16, a GPU format, becomes auto elsewhere)."""
        name = self.cfg.trainer.precision
        return resolve_precision("auto" if name == "fp16" and device.type != "cuda" else name, device)

    def settle(self, device: str) -> tuple[torch.device, Precision]:
        """Where and how the commands run this model: ``device`` resolved (``auto``: a GPU when there is one), the
        run's precision there, and the run's ``trainer.keep_host_memory`` for this process's allocator (large CPU
        batches reuse freed memory instead of faulting it in again, as in training)."""
        where = resolve_device(device)
        if OmegaConf.select(self.cfg, "trainer.keep_host_memory", default=True):
            keep_freed_memory()
        return where, self.precision(where)

    def output(self, out: Path | None, default: str) -> Path:
        """Where a command writes: ``out``, else ``default`` inside the run directory (recorded there as
        cnnbench's). A checkpoint outside a run directory has no place of its own: ``out=`` is required, and
        nothing is ever written beside such a checkpoint unasked."""
        if out is not None:
            self.check_output(out)
            return out
        if self.run_dir is None:
            raise CnnbenchError(f"{self.checkpoint} is not inside a cnnbench run directory; give out=<file> for "
                                f"what this command writes")
        return self.run_dir / default

    def check_output(self, out: Path) -> None:
        """Refuse an ``out=`` that is this command's own input (the checkpoint) or a file that a run's training
        wrote: no command replaces another's output."""
        if os.path.realpath(out) == os.path.realpath(self.checkpoint):
            raise CnnbenchError(f"out={out} is the checkpoint this command reads; give another file name")
        holder = rundir.training_output(out)
        if holder is not None:
            raise CnnbenchError(f"out={out} is a file that training wrote in {holder}; give a file name of its own "
                                f"(outside checkpoints/, .hydra/ and tensorboard/, not results.json)")

    def results(self) -> dict:
        """The run's results.json (empty for a checkpoint outside a run directory, or when unreadable)."""
        if self.run_dir is None:
            return {}
        return rundir.earlier_results(self.run_dir) or {}


def load_finished_run(run: Path, allow_unfinished: bool = False) -> FinishedRun:
    """The best checkpoint of a run directory (or the given ``.pt``) with its model rebuilt. A missing path, a
    run that failed or never saved a checkpoint, a file cnnbench did not write, or a checkpoint whose recorded
    config does not fit its weights or fails the command line's checks is a one-line error. A run still training,
    or one that did not complete, is refused unless ``allow_unfinished`` (its best checkpoint as it is then)."""
    ckpt_path, run_dir = rundir.locate_checkpoint(Path(run).expanduser(), "run", "best.pt", allow_unfinished)
    ckpt = load_checkpoint(ckpt_path)
    if not ckpt.get("config") or not ckpt.get("meta"):
        raise CnnbenchError(f"{ckpt_path} has no config or input description (not written by this cnnbench); "
                            f"give a run directory or a checkpoint that cnnbench wrote")
    try:
        return _rebuild(ckpt, ckpt_path, run_dir)
    except CnnbenchError:
        raise
    except Exception as e:  # a foreign or edited file: any shape of wrongness, said in one line
        first = first_line(e, 200)
        raise CnnbenchError(f"{ckpt_path}: its recorded config does not fit its weights or is malformed "
                            f"({type(e).__name__}: {first}); give a checkpoint that cnnbench wrote, unchanged"
                            ) from None


def _rebuild(ckpt: dict, ckpt_path: Path, run_dir: Path | None) -> FinishedRun:
    from cnnbench.models import build_from_config

    cfg = recorded_config(ckpt["config"], str(ckpt_path))  # (data, checked as the command line is)
    spec = InputSpec.from_dict(ckpt["meta"])
    model = build_from_config(cfg.model, len(spec.class_names), spec.channels, spec.image_size)
    model.load_state_dict(ckpt["model"])
    return FinishedRun(ckpt_path, run_dir, cfg, spec, model.eval(), ckpt.get("step"), ckpt.get("provenance"))
