"""The config a run uses, resolved once: absolute paths, the pretrained weights' preprocessing, the checked
values and the transfer source's model; then read-only. Everything it decided is a note for the console."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cnnbench.config.checks import check_schema_keys, check_transfer, validate
from cnnbench.config.schema import FROM_SCRATCH
from cnnbench.errors import CnnbenchError
from cnnbench.overrides import parse_overrides
from cnnbench.rundir import CONTINUE_OR_START, checkpoint_in

PATH_KEYS = ("data.root", "data.cache_dir", "transfer.checkpoint", "transfer.teacher", "trainer.resume")


@dataclass(frozen=True)
class Resolved:
    """The final config (read-only), what resolving it decided, the checkpoint ``transfer.checkpoint`` read and
    the ``data`` values taken from it."""

    cfg: DictConfig
    notes: list[str] = field(default_factory=list)
    source: dict | None = None
    inherited: dict = field(default_factory=dict)


def resolve(composed: DictConfig, overrides: list[str], run_dir: Path | None = None) -> Resolved:
    """Turn the composed config and the command's overrides into the run's final config; ``composed`` stays as
    Hydra made it. A run that continues or starts from another (``trainer.resume``, ``transfer.checkpoint``) takes
    that run's input (size, pipeline, normalisation, channels) unless the command sets it; ``run_dir``: where
    ``trainer.resume=auto`` looks."""
    from cnnbench.engine.optim import check_arguments
    from cnnbench.transfer.build import (
        apply_source_spec,
        apply_weights_preprocessing,
        check_sources,
        load_source_checkpoint,
    )

    cfg = copy.deepcopy(composed)
    given = parse_overrides(overrides)
    absolute_paths(cfg)
    preprocessing = apply_weights_preprocessing(cfg, set(given))
    check_schema_keys(cfg)  # (misspelt keys first: they may be why the rest fails)
    check_transfer(cfg.transfer, cfg.model.get("weights"))  # (before its checkpoint is read)
    source = load_source_checkpoint(cfg)
    earlier = source if source is not None else resumed_input(cfg, run_dir)
    inherited, input_note = apply_source_spec(cfg, earlier, set(given)) if earlier is not None else ({}, None)
    validate(cfg)
    check_arguments(cfg.optimizer)
    check_sources(cfg)  # (pretrained weights at hand before any data is read)
    if source is not None:  # the source's model becomes this run's (recorded and rebuilt as such)
        cfg.model = source["config"]["model"]
    OmegaConf.set_readonly(cfg, True)
    notes = [note for note in (preprocessing, input_note, optimizer_note(cfg, given)) if note]
    return Resolved(cfg, notes, source, inherited)


def resumed_input(cfg: DictConfig, run_dir: Path | None) -> dict | None:
    """The input spec of the checkpoint ``trainer.resume`` continues, with its path; None without one (or when
    it is missing or unreadable: the resume itself says so)."""
    from cnnbench.data.spec import InputSpec
    from cnnbench.engine.checkpoint import load_checkpoint

    resume = cfg.trainer.resume
    if not resume or (resume == "auto" and run_dir is None):
        return None
    path = checkpoint_in(run_dir if resume == "auto" else resume, "last.pt")
    try:
        return {"spec": InputSpec.from_dict(load_checkpoint(path)["meta"]), "path": str(path)}
    except (CnnbenchError, KeyError, TypeError, ValueError):
        return None


def absolute_paths(cfg: DictConfig) -> None:
    """The paths a run reads, made absolute before they are recorded: a command that reads the run later, from
    another working directory, finds the same files."""
    from cnnbench.models.registry import is_weights_file

    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, str) and value and value not in ("auto", CONTINUE_OR_START):
            OmegaConf.update(cfg, key, os.path.abspath(os.path.expanduser(value)))
    if is_weights_file(cfg.model.get("weights")):  # (a torchvision weights name stays a name)
        cfg.model.weights = os.path.abspath(os.path.expanduser(cfg.model.weights))


def optimizer_note(cfg: DictConfig, given: dict[str, str]) -> str | None:
    """A transfer option picks its own optimizer (conf/transfer/*.yaml): said when the command did not pick one."""
    if cfg.transfer.strategy in FROM_SCRATCH or "optimizer" in given or "transfer" not in given:
        return None
    name = cfg.optimizer._target_.rsplit(".", 1)[-1]
    lr = "" if "optimizer.lr" in given else f" at lr {cfg.optimizer.lr:g}"
    return f"transfer={given['transfer']} trains with {name}{lr}, its default (optimizer=... chooses another)"
