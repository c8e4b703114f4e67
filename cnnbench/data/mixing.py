"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of normalised batches, with soft targets, as timm's
``Mixup`` in its per-batch mode.

With probability ``mix_prob`` a batch is mixed with itself reversed (image i with image B-1-i): mixup blends
the two, ``lam * x + (1 - lam) * x_rev``; cutmix pastes a box of ``x_rev`` whose area is ``1 - lam`` of the image
(clipped at the border, ``lam`` then corrected to the area actually kept). ``lam ~ Beta(alpha, alpha)``; with
both on, cutmix is chosen with probability ``mix_switch_prob``. The targets become class probabilities
``lam * onehot(y) + (1 - lam) * onehot(y_rev)``, which the trainer's cross-entropy takes as they are (and label
smoothing still applies). The batch-level draws come from a CPU generator (no device sync), which the loader
checkpoints with its own.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from cnnbench.config.schema import AugmentConfig


class Mixer:
    def __init__(self, cfg: AugmentConfig, num_classes: int, seed: int) -> None:
        self.cfg, self.num_classes = cfg, num_classes
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def enabled(cfg: AugmentConfig) -> bool:
        return (cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0) and cfg.mix_prob > 0

    def _uniform(self) -> float:
        return torch.rand((), generator=self.generator).item()

    def _beta(self, alpha: float) -> float:
        seed = int(torch.randint(0, 2**62, (), generator=self.generator))
        return float(np.random.default_rng(seed).beta(alpha, alpha))

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix the normalised batch ``x`` (B, C, H, W) with labels ``y`` (B,); return it and soft targets (B, K)
        (one-hot when this batch is not mixed)."""
        cfg = self.cfg
        target = F.one_hot(y, self.num_classes).float()
        if self._uniform() >= cfg.mix_prob:
            return x, target
        use_cutmix = cfg.cutmix_alpha > 0 and (cfg.mixup_alpha == 0 or self._uniform() < cfg.mix_switch_prob)
        lam = self._beta(cfg.cutmix_alpha if use_cutmix else cfg.mixup_alpha)
        if use_cutmix:
            x, lam = self._cutmix(x, lam)
        else:
            x = x.lerp(x.flip(0), 1.0 - lam)
        return x, target.lerp(target.flip(0), 1.0 - lam)

    def _cutmix(self, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
        """Paste a box of the reversed batch covering about 1 - lam of each image; the lam that was kept."""
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(self._uniform() * h), int(self._uniform() * w)  # the box's centre, uniform in the image
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        return x, 1.0 - (y1 - y0) * (x1 - x0) / (h * w)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
