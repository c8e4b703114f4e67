"""Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks") for conv nets.

Muon takes SGD's nesterov-momentum step for a weight matrix and replaces it by the nearest semi-orthogonal matrix
(all singular values about 1), found by a few Newton-Schulz iterations; a conv's filter bank counts as the matrix
(out_channels, in_channels x kh x kw). Biases, normalisation layers and the classifier take plain nesterov SGD
(cnnbench puts the classifier there: ``engine.optim.split_heads``). torch.optim.Muon refuses every parameter that is
not 2-D, so it can serve neither the filters nor the rest of a conv net: hence this class, one optimizer for both
kinds, so that schedules, checkpoints and resume treat it like any other.

airbench94_muon (Jordan, cifar10-airbench) trains its speedrun network this way to the same accuracy in 8
epochs instead of 9.9 (``experiment=cifar10_speedrun_muon``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.sgd import sgd

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Jordan's quintic: steepest slope at zero that still converges


def orthogonalize(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """U S' V^T with S' about 1 for g = U S V^T (2-D): ``steps`` quintic Newton-Schulz iterations. bf16 on
    CUDA as in the reference; float32 elsewhere (CPUs without bf16 units multiply it slowly, and the matrices are
    small next to the convolutions)."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16 if g.is_cuda else torch.float32)
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide side: X X^T is then the smaller product
        x = x.T
    x = x / (x.norm() + eps)  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def as_groups(params: Iterable) -> list[dict]:
    """``params`` as optimizer parameter groups: a list of group dicts as it is, plain tensors as one group."""
    params = list(params)
    return params if params and isinstance(params[0], dict) else [{"params": params}]


class Muon(torch.optim.Optimizer):
    """Muon for every parameter of two or more dimensions, nesterov SGD for the rest.

    ``lr``, ``momentum``, ``weight_decay`` (decoupled, as torch.optim.Muon) and ``ns_steps`` are Muon's;
    ``normalize_weights`` rescales each filter bank to norm sqrt(out_channels) before its step (airbench: with
    BatchNorm after every conv, the scale carries no information and this fixes the effective rate), every
    ``normalize_every`` steps (hiverge's record renormalises only periodically). The other
    parameters, and any group given with ``orthogonalize=False``, train at ``lr x other_lr_scale`` with
    ``other_momentum`` and weight decay added to the gradient (torch.optim.SGD's step, ``foreach`` kernels).
    """

    def __init__(self, params: Iterable, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5, normalize_weights: bool = False,
                 normalize_every: int = 1, other_lr_scale: float = 1.0, other_momentum: float = 0.9,
                 maximize: bool = False, foreach: bool | None = None) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay),
                            ("other_lr_scale", other_lr_scale), ("other_momentum", other_momentum)):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name, count in (("ns_steps", ns_steps), ("normalize_every", normalize_every)):
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps,
                        normalize_weights=normalize_weights, normalize_every=normalize_every, maximize=maximize,
                        foreach=foreach, orthogonalize=True)
        super().__init__(self._split(params, lr, other_lr_scale, other_momentum), defaults)

    @staticmethod
    def _split(params: Iterable, lr: float, other_lr_scale: float, other_momentum: float) -> list[dict]:
        """Each group in two: its matrices (orthogonalised) and the rest (SGD at lr x other_lr_scale)."""
        out = []
        for g in as_groups(params):
            tensors = list(g["params"])
            wanted = g.get("orthogonalize", True)
            matrices = [p for p in tensors if wanted and p.ndim >= 2]
            rest = [p for p in tensors if not (wanted and p.ndim >= 2)]
            if matrices:
                out.append({**g, "params": matrices, "orthogonalize": True})
            if rest:
                out.append({**g, "params": rest, "orthogonalize": False, "lr": g.get("lr", lr) * other_lr_scale,
                            "momentum": other_momentum})
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["orthogonalize"]:
                self._muon_step(group, params)
            else:
                self._sgd_step(group, params)
        return loss

    def _sgd_step(self, group: dict, params: list[torch.Tensor]) -> None:
        buffers = [self.state[p].get("momentum_buffer") for p in params]
        sgd(params, [p.grad for p in params], buffers, foreach=group["foreach"], weight_decay=group["weight_decay"],
            momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"],
            maximize=group["maximize"])
        for p, buf in zip(params, buffers, strict=True):  # sgd creates the buffers on the first step
            self.state[p]["momentum_buffer"] = buf

    def _muon_step(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, momentum = group["lr"], group["momentum"]
        for p in params:
            g = -p.grad if group["maximize"] else p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(g)
            steps = state.get("steps", 0)  # this parameter's steps taken before this one
            state["steps"] = steps + 1
            buf = state["momentum_buffer"]
            buf.mul_(momentum).add_(g)
            g = g.add(buf, alpha=momentum) if group["nesterov"] else buf
            if group["normalize_weights"] and steps % group.get("normalize_every", 1) == 0:
                p.mul_(math.sqrt(p.shape[0]) / p.norm().clamp_min(1e-12))
            if group["weight_decay"]:
                p.mul_(1 - lr * group["weight_decay"])
            rows, cols = p.shape[0], p[0].numel()
            update = orthogonalize(g.reshape(rows, cols), group["ns_steps"]).view(p.shape)
            p.add_(update.to(p.dtype), alpha=-lr * math.sqrt(max(1.0, rows / cols)))  # Muon's shape scale
