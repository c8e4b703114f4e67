"""A model's answers on a split: one pass over a loader (with test-time augmentation) keeps, per image, the top-5
classes and what calibration needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # (what loaders and precisions do, not the data and engine packages)
    from cnnbench.data.loader import DeviceLoader
    from cnnbench.precision import Precision


def tta_logits(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Logits with test-time augmentation: 0 none, 1 the mean over the image and its mirror image, 2 also over
    1-pixel translations up-left and down-right (airbench's levels: half weight untranslated, a quarter each)."""
    def mirror(inputs: torch.Tensor) -> torch.Tensor:
        return (model(inputs) + model(inputs.flip(3))) / 2

    if level == 0:
        return model(x)
    logits = mirror(x)
    if level >= 2:
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = (mirror(padded[..., :h, :w]) + mirror(padded[..., 2:, 2:])) / 2
        logits = (logits + shifted) / 2
    return logits


@dataclass
class Scores:
    """A model's answers on one split: mean cross-entropy, the top-5 classes per image (CPU) and the labels; for
    calibration, per image: the top probability, the true class's probability, the sum of squared probabilities."""

    loss: float
    top5: torch.Tensor  # int64 (N, min(5, classes)), best first
    labels: torch.Tensor  # int64 (N,)
    confidence: torch.Tensor | None = None  # float (N,)
    true_prob: torch.Tensor | None = None
    prob_sq: torch.Tensor | None = None

    @property
    def preds(self) -> torch.Tensor:
        return self.top5[:, 0]


@torch.no_grad()
def predict(model: nn.Module, loader: DeviceLoader, precision: Precision, tta: int = 0) -> Scores:
    """Run ``model`` (in eval mode) over ``loader`` with test-time augmentation level ``tta``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=loader.device)
    top5 = []
    labels = []
    calibration = []
    for x, y in loader:
        with precision.autocast():
            logits = tta_logits(model, x, tta)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        top5.append(logits.topk(min(5, logits.shape[1]), dim=1).indices)
        labels.append(y)
        probs = logits.float().softmax(1)
        calibration.append(torch.stack([probs.amax(1), probs.gather(1, y[:, None])[:, 0], probs.square().sum(1)]))
    model.train(was_training)
    confidence, true_prob, prob_sq = torch.cat(calibration, 1).cpu()
    return Scores(loss_sum.item() / loader.num_images, torch.cat(top5).cpu(), torch.cat(labels).cpu(), confidence,
                  true_prob, prob_sq)
