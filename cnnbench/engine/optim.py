"""Optimizers (any torch.optim class through Hydra's ``_target_``) and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.optim import lr_scheduler as lrs

from cnnbench.errors import CnnbenchError


def build_optimizer(cfg: DictConfig, params: Iterable) -> torch.optim.Optimizer:
    """Instantiate ``cfg._target_`` (e.g. torch.optim.SGD) with the config's keywords over ``params``."""
    try:
        return instantiate(cfg, params=params, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ or e
        msg = str(cause).splitlines()[0]
        raise CnnbenchError(f"optimizer {cfg.get('_target_')} rejected its config: {msg}") from None


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int, total_steps: int
) -> lrs.LRScheduler:
    """A torch scheduler stepped once per unit: per optimizer step (interval=step) or per epoch.

    ``total_steps`` is the length of the whole run, so cosine and one-cycle end exactly when training does
    (also when trainer.max_steps cuts it short). A linear warm-up can precede any schedule.
    """
    per_epoch = cfg.interval == "epoch"
    total = math.ceil(total_steps / steps_per_epoch) if per_epoch else total_steps
    unit = 1 if per_epoch else steps_per_epoch
    warmup = min(round(cfg.warmup_epochs * unit), max(total - 1, 0))
    name = cfg.name
    if name == "cosine":
        main = lrs.CosineAnnealingLR(optimizer, T_max=max(total - warmup, 1), eta_min=cfg.min_lr)
    elif name == "step":
        main = lrs.StepLR(optimizer, step_size=max(round(cfg.step_size * unit), 1), gamma=cfg.gamma)
    elif name == "onecycle":
        lrs_max = [g["lr"] for g in optimizer.param_groups]
        main = lrs.OneCycleLR(optimizer, max_lr=lrs_max, total_steps=max(total, 2), pct_start=cfg.pct_start)
    else:  # none
        main = lrs.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    warm = lrs.LinearLR(optimizer, start_factor=cfg.warmup_start_factor, total_iters=warmup)
    return lrs.SequentialLR(optimizer, [warm, main], milestones=[warmup])
