"""The CIFAR-10 speedrun network after Keller Jordan's airbench (2024), "94% on CIFAR-10 in 3.29 seconds".

A 2x2 stem conv, then three groups of conv - max-pool - BN - GELU - conv - BN - GELU, each halving the
resolution, global max pooling and a bias-free linear layer whose logits are scaled down. No residuals: at
this depth plain conv-BN stacks train fastest per FLOP. airbench's frozen patch-whitening stem, lookahead
and BN tricks are left out; the recipe (``experiment=cifar10_speedrun``) supplies label smoothing, flip +
translate augmentation, nesterov SGD with a one-cycle schedule and flip test-time augmentation.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.registry import register_model, require_min_size


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU: (cin, H, W) -> (cout, H/2, W/2)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))  # pooling before BN: the norm sees 4x fewer pixels
        return self.act(self.bn2(self.conv2(x)))


class AirbenchNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...], stem_width: int,
                 logit_scale: float) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem_width, kernel_size=2), nn.GELU())  # (24, 31, 31)
        groups, cin = [], stem_width
        for w in widths:  # 31 -> 15 -> 7 -> 3 at 32x32 input
            groups.append(ConvGroup(cin, w))
            cin = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(cin, num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.groups(self.stem(x))).flatten(1)  # (B, widths[-1])
        return self.fc(x) * self.logit_scale


@register_model()
def airbench(*, num_classes: int, in_channels: int, image_size: int, widths: list[int] = (64, 256, 256),
             stem_width: int = 24, logit_scale: float = 1 / 9) -> AirbenchNet:
    """airbench's network: widths per conv group (airbench94: 64/256/256)."""
    require_min_size("airbench", image_size, 2 ** (len(widths) + 1))
    return AirbenchNet(num_classes, in_channels, tuple(widths), stem_width, logit_scale)
