"""Residual networks: He et al. 2015, "Deep Residual Learning for Image Recognition".

``small_resnet`` is the CIFAR reference net: a 3x3 stem and three stages of basic blocks.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.registry import register_model, require_min_size


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut: identity, or a 1x1 projection when the shape changes."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def _stage(block: type[BasicBlock], cin: int, width: int, blocks: int, stride: int) -> tuple[nn.Sequential, int]:
    layers = []
    for i in range(blocks):
        layers.append(block(cin, width, stride if i == 0 else 1))
        cin = width * block.expansion
    return nn.Sequential(*layers), cin


class SmallResNet(nn.Module):
    """3x3 stem (64 ch + BN) - stages of basic blocks (64/128/256, strides 1/2/2) - global avg pool - linear."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, ...] = (64, 128, 256),
        blocks_per_stage: int = 2,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        cin = widths[0]
        stages = []
        for i, width in enumerate(widths):
            stage, cin = _stage(BasicBlock, cin, width, blocks_per_stage, stride=1 if i == 0 else 2)
            stages.append(stage)
        self.stages = nn.Sequential(*stages)  # (C, H/2^(len-1), W/2^(len-1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model()
def small_resnet(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    widths: tuple[int, ...] = (64, 128, 256),
    blocks_per_stage: int = 2,
) -> SmallResNet:
    """The CIFAR reference ResNet: 3x3 stem, stages of two basic blocks 64/128/256, strides 1/2/2."""
    require_min_size("small_resnet", image_size, 2 ** (len(widths) - 1))
    return SmallResNet(num_classes, in_channels, tuple(widths), blocks_per_stage)
