"""Penultimate features for TensorBoard's projector: what the classifier's last linear layer receives, one
vector per image, so PCA, t-SNE or UMAP of the classes is one click away."""

from __future__ import annotations

import torch
from torch import nn


def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The input of the last ``nn.Linear`` the forward pass calls (the classifier's), flattened: (B, D) float on
    the CPU; eval mode, no gradients, the model left as it was."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear classifier whose input could be the embedding")
    seen: list[tuple[int, torch.Tensor]] = []

    def record(module: nn.Module, inputs: tuple) -> None:
        seen.append((id(module), inputs[0].detach()))

    handles = [m.register_forward_pre_hook(record) for m in linears]
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                seen.clear()
                model(x[start:start + batch_size])
                out.append(seen[-1][1].flatten(1).float().cpu())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return torch.cat(out)
