"""Scoring a model on a loader, and every classification metric computed from those scores, in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.engine.calibration import brier_score, expected_calibration_error
from cnnbench.engine.runtime import Precision

if TYPE_CHECKING:  # the engine needs only what loaders do, not the data package
    from cnnbench.data.loader import DeviceLoader


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


def accuracy(preds: torch.Tensor, labels: torch.Tensor) -> float:
    """Percentage of predictions equal to the labels."""
    return 100.0 * (preds == labels).float().mean().item()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) counts, (num_classes, num_classes)."""
    return torch.bincount(labels * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


def metrics(scores: Scores, class_names: list[str]) -> dict:
    """Loss, top-1 and top-5 accuracy, balanced accuracy, macro-F1 and per-class precision / recall / F1, in
    percent. The macro averages follow scikit-learn: balanced accuracy averages recall over the classes that
    occur in the labels (``balanced_accuracy_score``), macro-F1 averages F1 over the classes that occur in the
    labels or the predictions (``f1_score(average="macro")``); a class absent from both is in neither. A
    class's precision or recall that divides by zero counts 0 (``zero_division=0``)."""
    cm = confusion_matrix(scores.preds, scores.labels, len(class_names)).double()
    hits = cm.diag()
    true = cm.sum(1)
    predicted = cm.sum(0)
    recall = hits / true.clamp_min(1)
    precision = hits / predicted.clamp_min(1)
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    out = {
        "loss": scores.loss,
        "acc": accuracy(scores.preds, scores.labels),
        "balanced_acc": 100.0 * recall[true > 0].mean().item(),
        "macro_f1": 100.0 * f1[(true > 0) | (predicted > 0)].mean().item(),
        "per_class": {name: {"precision": 100.0 * precision[i].item(), "recall": 100.0 * recall[i].item(),
                             "f1": 100.0 * f1[i].item(), "images": int(true[i].item())}
                      for i, name in enumerate(class_names)},
    }
    if len(class_names) > 5:
        out["top5_acc"] = 100.0 * (scores.top5 == scores.labels[:, None]).any(1).float().mean().item()
    if scores.confidence is not None:  # NLL is the loss; ECE in percent like the accuracies
        out["ece"] = 100.0 * expected_calibration_error(scores.confidence, scores.preds == scores.labels)
        out["nll"] = scores.loss
        out["brier"] = brier_score(scores.true_prob, scores.prob_sq)
    return out
