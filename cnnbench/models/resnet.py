"""Residual networks: He et al. 2015, "Deep Residual Learning for Image Recognition", and SENet
(Hu et al. 2017, "Squeeze-and-Excitation Networks") on the same skeleton, with optional stochastic depth
(Huang et al. 2016, "Deep Networks with Stochastic Depth"): ``drop_path`` p drops each residual branch of a
training batch's images with a rate rising linearly from 0 at the first block to p at the last.

At ImageNet sizes the stem is the paper's 7x7 stride-2 conv + 3x3 max pool; below 64 pixels it is the CIFAR
adaptation, a 3x3 stride-1 conv without the pool. ``small_resnet`` is the CIFAR reference net: that stem and
three stages of two basic blocks (64/128/256 channels, strides 1/2/2).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from cnnbench.models.registry import register_model, require_min_size

SMALL_INPUT = 64  # below this side length, use the CIFAR stem


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class SqueezeExcitation(nn.Module):
    """Channel attention: global average pool -> FC (C/r) -> ReLU -> FC (C) -> sigmoid gate on each channel."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = channels // reduction
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)  # a 1x1 conv on (C, 1, 1) is a linear layer
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(self.relu(self.fc1(self.pool(x)))))  # (B, C, 1, 1)
        return x * gate


class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut: identity, or a 1x1 projection when the shape changes (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, se_reduction: int | None = None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv3x3(cin, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcitation(cout, se_reduction) if se_reduction else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(self.drop_path(out) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand x4, with a shortcut (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, se_reduction: int | None = None,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = conv1x1(cin, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.se = SqueezeExcitation(cout, se_reduction) if se_reduction else nn.Identity()
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(cin, cout, stride)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(self.drop_path(out) + self.shortcut(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class ResNet(nn.Module):
    """Stem -> stages of residual blocks (the first block of each stage after the first has stride 2) -> pool -> fc."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: list[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        small_input: bool = False,
        se_reduction: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        w0 = widths[0]
        if small_input:  # CIFAR: keep full resolution into the first stage
            self.stem = nn.Sequential(conv3x3(in_channels, w0), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        else:  # ImageNet: (3, 224, 224) -> (64, 56, 56)
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, w0, kernel_size=7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(w0),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            )
        stages = []
        cin = w0
        index = 0
        total = sum(blocks)
        for i, (width, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(n):
                rate = drop_path * index / max(total - 1, 1)  # deeper blocks drop more
                layers.append(block(cin, width, stride=2 if (i > 0 and j == 0) else 1, se_reduction=se_reduction,
                                    drop_path=rate))
                cin, index = width * block.expansion, index + 1
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m.bias is None:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # (B, C, H/s, W/s)
        return self.fc(torch.flatten(self.pool(x), 1))


def _resnet(name: str, block, blocks: list[int], num_classes: int, in_channels: int, image_size: int,
            se_reduction: int | None = None, drop_path: float = 0.0) -> ResNet:
    require_min_size(name, image_size, 8)
    return ResNet(block, blocks, num_classes, in_channels, small_input=image_size < SMALL_INPUT,
                  se_reduction=se_reduction, drop_path=drop_path)


@register_model()
def small_resnet(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    widths: tuple[int, ...] = (64, 128, 256),
    blocks_per_stage: int = 2,
    drop_path: float = 0.0,
) -> ResNet:
    """The CIFAR reference ResNet: 3x3 stem, stages of two basic blocks 64/128/256, strides 1/2/2."""
    require_min_size("small_resnet", image_size, 2 ** (len(widths) - 1))
    return ResNet(BasicBlock, [blocks_per_stage] * len(widths), num_classes, in_channels, tuple(widths),
                  small_input=True, drop_path=drop_path)


@register_model()
def resnet18(*, num_classes: int, in_channels: int, image_size: int, drop_path: float = 0.0) -> ResNet:
    """ResNet-18: basic blocks [2, 2, 2, 2]."""
    return _resnet("resnet18", BasicBlock, [2, 2, 2, 2], num_classes, in_channels, image_size, drop_path=drop_path)


@register_model()
def resnet34(*, num_classes: int, in_channels: int, image_size: int, drop_path: float = 0.0) -> ResNet:
    """ResNet-34: basic blocks [3, 4, 6, 3]."""
    return _resnet("resnet34", BasicBlock, [3, 4, 6, 3], num_classes, in_channels, image_size, drop_path=drop_path)


@register_model()
def resnet50(*, num_classes: int, in_channels: int, image_size: int, drop_path: float = 0.0) -> ResNet:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3], expansion 4."""
    return _resnet("resnet50", Bottleneck, [3, 4, 6, 3], num_classes, in_channels, image_size, drop_path=drop_path)


@register_model()
def resnet101(*, num_classes: int, in_channels: int, image_size: int, drop_path: float = 0.0) -> ResNet:
    """ResNet-101: bottleneck blocks [3, 4, 23, 3]."""
    return _resnet("resnet101", Bottleneck, [3, 4, 23, 3], num_classes, in_channels, image_size, drop_path=drop_path)


@register_model()
def resnet152(*, num_classes: int, in_channels: int, image_size: int, drop_path: float = 0.0) -> ResNet:
    """ResNet-152: bottleneck blocks [3, 8, 36, 3]."""
    return _resnet("resnet152", Bottleneck, [3, 8, 36, 3], num_classes, in_channels, image_size, drop_path=drop_path)


@register_model()
def se_resnet18(*, num_classes: int, in_channels: int, image_size: int, reduction: int = 16,
                drop_path: float = 0.0) -> ResNet:
    """SE-ResNet-18: ResNet-18 with squeeze-and-excitation on every residual branch."""
    return _resnet("se_resnet18", BasicBlock, [2, 2, 2, 2], num_classes, in_channels, image_size, reduction,
                   drop_path=drop_path)


@register_model()
def se_resnet50(*, num_classes: int, in_channels: int, image_size: int, reduction: int = 16,
                drop_path: float = 0.0) -> ResNet:
    """SE-ResNet-50: ResNet-50 with squeeze-and-excitation (reduction 16) on every residual branch."""
    return _resnet("se_resnet50", Bottleneck, [3, 4, 6, 3], num_classes, in_channels, image_size, reduction,
                   drop_path=drop_path)
