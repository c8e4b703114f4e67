"""Every classification metric of a split's scores, in percent: torchmetrics computes them; calibration comes
from ``calibration`` (reliability bins are not in torchmetrics).

One averaging convention, scikit-learn's: a macro average runs over the classes that occur in the labels or the
predictions (a class absent from both is in none), and balanced accuracy, the mean recall, over the classes that
occur in the labels (``balanced_accuracy_score``: recall is undefined without images). A precision or recall
that divides by zero counts 0.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from cnnbench.evaluation.calibration import brier_score, expected_calibration_error
from cnnbench.evaluation.scores import Scores


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) counts, (num_classes, num_classes)."""
    return multiclass_confusion_matrix(preds, labels, num_classes)


def metrics(scores: Scores, class_names: list[str]) -> dict:
    """Loss, top-1 and top-5 accuracy, balanced accuracy, macro-F1, per-class precision / recall / F1 and, when
    the scores carry them, ECE, NLL and the Brier score."""
    n = len(class_names)
    preds, labels = scores.preds, scores.labels
    per_class = {name: fn(preds, labels, n, average="none").double() for name, fn in (
        ("precision", multiclass_precision), ("recall", multiclass_recall), ("f1", multiclass_f1_score))}
    images = torch.bincount(labels, minlength=n)
    out = {
        "loss": scores.loss,
        "acc": 100.0 * multiclass_accuracy(preds, labels, n, average="micro").item(),
        "balanced_acc": 100.0 * per_class["recall"][images > 0].mean().item(),
        "macro_f1": 100.0 * multiclass_f1_score(preds, labels, n, average="macro").item(),
        "per_class": {name: {**{k: 100.0 * v[i].item() for k, v in per_class.items()}, "images": int(images[i])}
                      for i, name in enumerate(class_names)},
    }
    if n > 5:  # (from the kept top-5 classes: torchmetrics' top_k needs every logit)
        out["top5_acc"] = 100.0 * (scores.top5 == labels[:, None]).any(1).float().mean().item()
    if scores.confidence is not None:  # NLL is the loss; ECE in percent like the accuracies
        out["ece"] = 100.0 * expected_calibration_error(scores.confidence, scores.preds == scores.labels)
        out["nll"] = scores.loss
        out["brier"] = brier_score(scores.true_prob, scores.prob_sq)
    return out
