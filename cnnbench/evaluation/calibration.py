"""How far a model's confidence can be trusted: expected calibration error, Brier score, reliability bins.

Computed from three numbers per image, so that a split of any size and class count costs O(N): the top
probability (the confidence), the probability of the true class, and the sum of the squared probabilities.
Definitions as in Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017) and Brier (1950).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BINS = 15


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    images: int
    accuracy: float  # fraction correct among the images whose confidence falls in (low, high]
    confidence: float  # their mean confidence


def reliability(confidence: torch.Tensor, correct: torch.Tensor, bins: int = BINS) -> list[Bin]:
    """Images grouped by confidence into ``bins`` equal-width intervals (0, 1/bins], ..., ((bins-1)/bins, 1]."""
    edges = torch.linspace(0, 1, bins + 1, dtype=confidence.dtype)  # (in the scores' own precision: a float32
    # confidence of exactly 1/15 belongs to the first bin)
    index = torch.bucketize(confidence, edges[1:-1], right=False)  # x in (e[i-1], e[i]] -> i
    out = []
    for i in range(bins):
        members = index == i
        n = int(members.sum())
        out.append(Bin(edges[i].item(), edges[i + 1].item(), n,
                       correct[members].double().mean().item() if n else 0.0,
                       confidence[members].double().mean().item() if n else 0.0))
    return out


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, bins: int = BINS) -> float:
    """ECE: the gap between accuracy and mean confidence per bin, weighted by the bin's share of images (0-1)."""
    total = len(confidence)
    return sum(b.images / total * abs(b.accuracy - b.confidence) for b in reliability(confidence, correct, bins))


def brier_score(true_prob: torch.Tensor, prob_sq: torch.Tensor) -> float:
    """Mean over images of sum_c (p_c - [c = y])^2 = sum_c p_c^2 - 2 p_y + 1 (0 perfect, 2 worst)."""
    return (prob_sq.double() - 2 * true_prob.double() + 1).mean().item()
