"""Accuracy under common corruptions: the clean split corrupted batch by batch, every type at severities 1-5.

The same images and the same random draws (a generator seeded per type and severity) for every model, so two
runs compare on identical corrupted inputs; the corruption error relative to a baseline is mCE-style: per type,
the errors summed over severities over the baseline's, then the mean over types (Hendrycks & Dietterich 2019).
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

import torch
from torch import nn

from cnnbench.evaluation.corruptions import CORRUPTIONS, corrupt

if TYPE_CHECKING:  # the engine needs only what loaders do, not the data package
    from cnnbench.data.loader import DeviceLoader
    from cnnbench.precision import Precision

SEVERITIES = (1, 2, 3, 4, 5)


@torch.no_grad()
def corruption_accuracy(model: nn.Module, loader: DeviceLoader, precision: Precision, images: int,
                        seed: int = 0, batch_size: int = 256) -> dict[str, list[float]]:
    """Top-1 accuracy (percent) per corruption type, one value per severity, on the first ``images`` images."""
    model.eval()
    n = min(images, len(loader.data))
    labels = loader.data.labels[:n].to(loader.device)
    out: dict[str, list[float]] = {}
    for t, name in enumerate(CORRUPTIONS):
        out[name] = []
        for severity in SEVERITIES:
            g = torch.Generator(device=loader.device).manual_seed(seed * 1000 + t * 10 + severity)
            correct = 0
            for start in range(0, n, batch_size):
                x = loader.images(slice(start, min(start + batch_size, n))).float() / 255
                x = loader.normalize(corrupt(x, name, severity, g) * 255)
                with precision.autocast():
                    preds = model(x).argmax(1)
                correct += (preds == labels[start:start + len(x)]).sum().item()
            out[name].append(100.0 * correct / n)
    return out


def summary(accuracy: dict[str, list[float]], baseline: dict[str, list[float]] | None = None) -> dict:
    """Mean corruption accuracy, per type and over all; with a baseline, the relative corruption error."""
    result = {"mean_corruption_acc": statistics.fmean(a for accs in accuracy.values() for a in accs),
              "per_type": {name: statistics.fmean(accs) for name, accs in accuracy.items()}}
    if baseline is not None:
        ratios = {name: sum(100 - a for a in accs) / max(sum(100 - a for a in baseline[name]), 1e-9)
                  for name, accs in accuracy.items() if name in baseline}
        result["relative_corruption_error"] = {name: 100.0 * r for name, r in ratios.items()}
        result["mce"] = 100.0 * statistics.fmean(ratios.values())
    return result
