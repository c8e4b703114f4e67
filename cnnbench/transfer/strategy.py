"""Which parameters train, when, and at what learning rate: the ``transfer`` strategies.

The backbone (everything but the classifier heads) is cut into *units*, bottom to top: the children of the
model, with plain containers (``nn.Sequential``, ``nn.ModuleList``) and wrappers (a module with nearly all of
its parameters in one container, like a ViT encoder) opened up, so a ResNet gives ``conv1, bn1, layer1.0,
..., layer4.1`` (one unit per residual block) and a ViT its embeddings, encoder blocks and final norm. Layer-wise
learning-rate decay and stage-by-stage unfreezing both work on these units.

Frozen parameters have ``requires_grad=False`` (no gradient, so no optimizer step, momentum or weight decay
touches them) and the BatchNorm layers inside frozen units stay in eval mode, so their running statistics
do not move either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from omegaconf import DictConfig
from torch import nn

from cnnbench.engine.callbacks import Callback
from cnnbench.errors import CnnbenchError
from cnnbench.models.surgery import find_heads

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer

_CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass
class Unit:
    name: str
    params: list[nn.Parameter]
    modules: list[nn.Module] = field(default_factory=list)


def backbone_units(model: nn.Module, heads: list[str]) -> list[Unit]:
    """The backbone's units, bottom (input) to top; parameters of the heads are left out. A timm model is cut
    where its own ``group_matcher`` cuts it (the stem, then each block)."""
    head_ids = {id(p) for h in heads for p in model.get_submodule(h).parameters()}
    if callable(getattr(model, "group_matcher", None)):
        return matcher_units(model, head_ids)

    def walk(module: nn.Module, prefix: str) -> list[Unit]:
        units = []
        direct = [p for p in module.parameters(recurse=False) if id(p) not in head_ids]
        if direct:  # e.g. a ViT's class token and position embedding
            units.append(Unit(f"{prefix or 'model'}.<parameters>", direct))
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            params = [p for p in child.parameters() if id(p) not in head_ids]
            if not params:
                continue
            if _opens_up(child):
                units += walk(child, full)
            else:
                units.append(Unit(full, params, list(child.modules())))
        return units

    return walk(model, "")


def matcher_units(model: nn.Module, head_ids: set[int]) -> list[Unit]:
    """Units from timm's ``group_matcher(coarse=False)``, the groups its layer-wise decay uses, in their order;
    each module with parameters belongs to the unit of its first parameter."""
    from timm.models import group_parameters

    params = dict(model.named_parameters())
    groups = group_parameters(model, model.group_matcher(coarse=False))  # {ordinal: [names]}, bottom first
    owner: dict[int, int] = {}
    units = []
    for _, names in sorted(groups.items()):
        kept = [params[n] for n in names if id(params[n]) not in head_ids]
        if kept:
            owner.update({id(p): len(units) for p in kept})
            units.append(Unit(_group_name(names), kept))
    for module in model.modules():
        direct = list(module.parameters(recurse=False))
        if direct and id(direct[0]) in owner:
            units[owner[id(direct[0])]].modules.append(module)
    return units


def _group_name(names: list[str]) -> str:
    """A group's common module path (``layer1.0``), or its first and last modules (``conv1..bn1``)."""
    common = []
    for parts in zip(*(n.split(".") for n in names), strict=False):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    if common and len(names) > 1:
        return ".".join(common)
    first, last = names[0].rsplit(".", 1)[0], names[-1].rsplit(".", 1)[0]
    return first if first == last else f"{first}..{last}"


def _opens_up(module: nn.Module) -> bool:
    """Plain containers, and wrappers holding >= 90% of their parameters in one plain container."""
    if type(module) in _CONTAINERS:  # exact types: Conv2dNormActivation (a Sequential subclass) stays whole
        return True
    total = _count(list(module.parameters()))
    return any(type(c) in _CONTAINERS and _count(list(c.parameters())) >= 0.9 * total for c in module.children())


def _count(params: list[nn.Parameter]) -> int:
    return sum(p.numel() for p in params)


class TransferPlan(Callback):
    """Freezing and parameter groups of one strategy (finetune, freeze_backbone or gradual_unfreeze); as a
    trainer callback it freezes what is frozen at the start of each epoch."""

    def __init__(self, model: nn.Module, cfg: DictConfig) -> None:
        self.model, self.cfg = model, cfg
        self.strategy = cfg.strategy
        heads = find_heads(model)
        self.units = backbone_units(model, heads)
        self.head_params = [p for h in heads for p in model.get_submodule(h).parameters()]
        self.heads = heads
        self.total = _count(list(model.parameters()))
        self.unfreeze_at = self._unfreeze_epochs()
        self._frozen: tuple[int, ...] | None = None

    def _unfreeze_epochs(self) -> list[float]:
        """The (0-based) epoch at which each unit starts to train; inf = never."""
        n = len(self.units)
        if self.strategy == "finetune":
            return [0] * n
        if self.strategy == "freeze_backbone":
            return [float("inf")] * n
        k = self.cfg.stages
        if k > n:
            raise CnnbenchError(f"transfer.stages={k} but the backbone has only {n} units to unfreeze")
        at = []
        for stage, chunk in enumerate(torch.arange(n).tensor_split(k)):  # stage 0 = bottom, k-1 = top
            at += [self.cfg.head_epochs + (k - 1 - stage) * self.cfg.stage_epochs] * len(chunk)
        return at

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the head at ``lr``; the backbone scaled per strategy. freeze_backbone: head only."""
        if self.strategy == "freeze_backbone":
            return [{"params": self.head_params}]
        groups = [{"params": self.head_params, "lr": lr}]
        n = len(self.units)
        for i, unit in enumerate(self.units):
            if self.strategy == "gradual_unfreeze":
                scale = self.cfg.backbone_lr_scale
            else:  # finetune: layer-wise decay, the unit right below the head at lr * decay
                scale = self.cfg.layer_decay ** (n - i) if self.cfg.layer_decay else 1.0
            groups.append({"params": unit.params, "lr": lr * scale})
        return groups

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Freeze what is frozen in this (0-based) epoch (after ``model.train()``) and say what changed."""
        note = self.freeze(epoch)
        if note:
            trainable = _count([p for p in self.model.parameters() if p.requires_grad])
            trainer.reporter.info(f"{note}; {trainable:,} of {self.total:,} parameters train")
            trainer.reporter.scalars({"transfer/trainable_params": trainable}, trainer.state.step)

    def freeze(self, epoch: int) -> str | None:
        """Set ``requires_grad`` and the BatchNorm modes for (0-based) ``epoch``; a note when that changed."""
        frozen = tuple(i for i, at in enumerate(self.unfreeze_at) if epoch < at)
        for i, unit in enumerate(self.units):
            for p in unit.params:
                p.requires_grad_(i not in frozen)
        for i in frozen:
            for m in self.units[i].modules:
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        if frozen == self._frozen:
            return None
        before, self._frozen = self._frozen, frozen
        if before is None:
            what = "all layers" if not frozen else (
                "the head only" if len(frozen) == len(self.units) else f"the head and the top "
                f"{len(self.units) - len(frozen)} backbone units")
            note = f"transfer={self.strategy}: training {what} (head: {', '.join(self.heads)})"
        else:
            opened = [self.units[i].name for i in before if i not in frozen]
            note = (f"epoch {epoch + 1}: unfroze {len(opened)} backbone units ({opened[0]} .. {opened[-1]}) "
                    f"at lr x {self.cfg.backbone_lr_scale}")
        return note
