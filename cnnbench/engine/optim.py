"""Optimizers (any torch.optim class through Hydra's ``_target_``) and learning-rate schedules."""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import lr_scheduler as lrs

from cnnbench.engine.muon import Muon, as_groups
from cnnbench.errors import CnnbenchError
from cnnbench.models.surgery import find_heads

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


OWN_KEYS = ("norm_lr_scale", "decay_norm_bias")  # cnnbench's optimizer keys; the rest go to the optimizer


def build_optimizer(cfg: DictConfig, params: Iterable, model: nn.Module | None = None) -> torch.optim.Optimizer:
    """Instantiate ``cfg._target_`` (e.g. torch.optim.SGD) with the config's keywords over ``params``.

    Two keys are cnnbench's, not the optimizer's, and act with ``model`` given: ``norm_lr_scale`` trains the
    parameters of its normalisation layers at lr x scale and weight_decay / scale, the same decay per step
    (airbench runs its BatchNorm biases 64x faster); ``decay_norm_bias=false`` exempts those parameters and
    every bias from weight decay (timm's and torchvision's recipes do)."""
    scale, decay_norm_bias = cfg.get("norm_lr_scale", 1.0), cfg.get("decay_norm_bias", True)
    kwargs = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in OWN_KEYS])
    if model is not None and (scale != 1.0 or not decay_norm_bias):
        params = split_norm_bias(params, model, scale, cfg.lr, cfg.get("weight_decay", 0.0), decay_norm_bias)
    if model is not None and _is_muon(cfg.get("_target_")):
        params = split_heads(params, model)
    try:
        return instantiate(kwargs, params=params, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ or e
        msg = str(cause).splitlines()[0]
        raise CnnbenchError(f"optimizer {cfg.get('_target_')} rejected its config: {msg}{_closest(cfg, msg)}") \
            from None


def _closest(cfg: DictConfig, message: str) -> str:
    """``; did you mean optimizer.<key>?`` for an unexpected keyword close to one the optimizer class takes."""
    import difflib
    import inspect

    found = re.search(r"unexpected keyword argument '(\w+)'", message)
    if found is None:
        return ""
    try:
        accepted = list(inspect.signature(get_class(cfg._target_)).parameters)
    except (ValueError, TypeError, ImportError):
        return ""
    close = difflib.get_close_matches(found.group(1), [*accepted, *OWN_KEYS], n=1)
    return f"; did you mean optimizer.{close[0]}?" if close else ""


def check_arguments(cfg: DictConfig) -> None:
    """Let the optimizer check its own keywords now, on a dummy parameter, instead of after the data loads."""
    build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])


def split_norm_bias(params: Iterable, model: nn.Module, scale: float, lr: float, weight_decay: float,
                    decay_norm_bias: bool = True) -> list[dict]:
    """Split ``params`` (tensors or parameter groups, e.g. a transfer plan's) so that normalisation-layer
    parameters form their own groups with the learning rate multiplied and the weight decay divided by
    ``scale``; without ``decay_norm_bias`` they and the other biases get no weight decay at all."""
    norm_ids = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    bias_ids = {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    exempt = set() if decay_norm_bias else bias_ids  # biases outside normalisation layers, undecayed
    groups = [g if isinstance(g, dict) else {"params": [g]} for g in params]
    out = []
    for g in groups:
        tensors = list(g["params"])
        decay = g.get("weight_decay", weight_decay)
        norm = [p for p in tensors if id(p) in norm_ids]
        bias = [p for p in tensors if id(p) in exempt and id(p) not in norm_ids]
        other = [p for p in tensors if id(p) not in norm_ids and id(p) not in exempt]
        if other:
            out.append({**g, "params": other})
        if bias:
            out.append({**g, "params": bias, "weight_decay": 0.0})
        if norm:
            out.append({**g, "params": norm, "lr": g.get("lr", lr) * scale,
                        "weight_decay": decay / scale if decay_norm_bias else 0.0})
    return out


def _is_muon(target: str | None) -> bool:
    try:
        return isinstance(target, str) and issubclass(get_class(target), Muon)
    except (ImportError, ValueError, TypeError):
        return False  # a bad _target_ is reported by instantiate, with the optimizer's own message


def split_heads(params: Iterable, model: nn.Module) -> list[dict]:
    """Split ``params`` (tensors or groups) so that the classifier's parameters form groups of their own with
    ``orthogonalize=False``: Muon is for hidden layers, and the output layer trains with SGD (Jordan 2024)."""
    try:
        head_ids = {id(p) for name in find_heads(model) for p in model.get_submodule(name).parameters()}
    except CnnbenchError as e:
        raise CnnbenchError(f"optimizer=muon trains the classifier with SGD, but {e}") from None
    out = []
    for g in as_groups(params):
        tensors = list(g["params"])
        hidden = [p for p in tensors if id(p) not in head_ids]
        head = [p for p in tensors if id(p) in head_ids]
        out += [{**g, "params": hidden}] if hidden else []
        out += [{**g, "params": head, "orthogonalize": False}] if head else []
    return out


@dataclass
class Schedule:
    """A learning-rate scheduler and when it steps: after every optimizer step, or after every epoch."""

    scheduler: lrs.LRScheduler
    per_step: bool

    def after_step(self) -> None:
        if self.per_step:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if not self.per_step:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)

    def fast_forward(self, steps: int, epochs: int) -> None:
        """Step a freshly built schedule to where a run of ``steps`` optimizer steps (``epochs`` epochs) is: what
        resuming with a changed plan does, so that the schedule follows the new plan from there."""
        units = steps if self.per_step else epochs
        last = getattr(self.scheduler, "total_steps", None)  # (one-cycle refuses a step past its end)
        with warnings.catch_warnings():  # ("scheduler stepped before optimizer": deliberate here)
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(min(units, last - 1) if last else units):
                self.scheduler.step()


def build_schedule(optimizer: torch.optim.Optimizer, cfg: DictConfig, steps_per_epoch: int, total_steps: int
                   ) -> Schedule:
    """``build_scheduler`` stepped at the config's ``interval``."""
    return Schedule(build_scheduler(optimizer, cfg, steps_per_epoch, total_steps), cfg.interval == "step")


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
    elif name == "linear":
        main = lrs.LinearLR(optimizer, start_factor=1.0, end_factor=cfg.end_factor, total_iters=max(total - warmup, 1))
    elif name == "onecycle":
        lrs_max = [g["lr"] for g in optimizer.param_groups]
        total = max(total, 2)
        # OneCycleLR divides by zero when its rise ends exactly at step 0 (pct_start x total = 1): a hair later is
        # the same schedule (step 0 at the start value, the fall from there).
        pct_start = cfg.pct_start * (1 + 1e-6) if math.isclose(cfg.pct_start * total, 1.0) else cfg.pct_start
        main = lrs.OneCycleLR(optimizer, max_lr=lrs_max, total_steps=total, pct_start=pct_start,
                              anneal_strategy=cfg.anneal_strategy, div_factor=cfg.div_factor,
                              final_div_factor=cfg.final_div_factor, cycle_momentum=cfg.cycle_momentum)
    else:  # none
        main = lrs.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    warm = lrs.LinearLR(optimizer, start_factor=cfg.warmup_start_factor, total_iters=warmup)
    return lrs.SequentialLR(optimizer, [warm, main], milestones=[warmup])
