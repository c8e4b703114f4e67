"""The CIFAR-10 speedrun network after Keller Jordan's airbench (2024), "94% on CIFAR-10 in 3.29 seconds".

A 2x2 stem conv, then three groups of conv - max-pool - BN - GELU - conv - BN - GELU, each halving the
resolution, global max pooling and a bias-free linear layer whose logits are scaled down. No residuals: at
this depth plain conv-BN stacks train fastest per FLOP. The stem is airbench's patch-whitening layer: its
kernels are set from the training images (``init_from_data``: the eigenvectors of the 2x2 patch covariance,
both signs, scaled by 1/sqrt(eigenvalue)) and then frozen. airbench's lookahead and BatchNorm tricks are left
out; the recipe (``experiment=cifar10_speedrun``) supplies label smoothing, flip + translate augmentation,
nesterov SGD with a one-cycle schedule and flip test-time augmentation.
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


class WhiteningStem(nn.Module):
    """2x2 conv with 2 x (C x 2 x 2) outputs (24 for RGB), then GELU: (C, H, W) -> (8C, H-1, W-1)."""

    def __init__(self, in_channels: int, whiten: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8 * in_channels, kernel_size=2)
        self.act = nn.GELU()
        self.whiten = whiten

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitening kernels from normalised training images (N, C, H, W); the kernels are then frozen."""
        c = images.shape[1]
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4)  # one row per patch, (c, kh, kw) order
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        kernels = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).reshape(c * 4, c, 2, 2)
        self.conv.weight.copy_(torch.cat([kernels, -kernels]))
        self.conv.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class AirbenchNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...], whiten: bool,
                 logit_scale: float) -> None:
        super().__init__()
        self.stem = WhiteningStem(in_channels, whiten)  # (24, 31, 31) at 3x32x32
        groups, cin = [], 8 * in_channels
        for w in widths:  # 31 -> 15 -> 7 -> 3 at 32x32 input
            groups.append(ConvGroup(cin, w))
            cin = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(cin, num_classes, bias=False)
        self.logit_scale = logit_scale

    def init_from_data(self, images: torch.Tensor) -> None:
        """Data-dependent initialisation (cnnbench calls it with normalised training images before training)."""
        if self.stem.whiten:
            self.stem.init_from_data(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.groups(self.stem(x))).flatten(1)  # (B, widths[-1])
        return self.fc(x) * self.logit_scale


@register_model()
def airbench(*, num_classes: int, in_channels: int, image_size: int, widths: list[int] = (64, 256, 256),
             whiten: bool = True, logit_scale: float = 1 / 9) -> AirbenchNet:
    """airbench's network: widths per conv group (airbench94: 64/256/256); ``whiten``: whitening stem."""
    require_min_size("airbench", image_size, 2 ** (len(widths) + 1))
    return AirbenchNet(num_classes, in_channels, tuple(widths), whiten, logit_scale)
