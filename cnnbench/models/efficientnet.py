"""EfficientNet: Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks".

B0 is a stack of MBConv blocks (inverted bottleneck: 1x1 expand, depthwise kxk, squeeze-and-excitation, 1x1
project, SiLU, stochastic depth on the residual). B1-B7 scale B0 together in depth (layers per stage x d),
width (channels x w) and input resolution (r): the paper's d = 1.2^phi, w = 1.1^phi, r = 1.15^phi, rounded
by hand in the released models to the table below (which torchvision and timm use too).
Below 64 pixels the stem keeps stride 1 (the CIFAR adaptation), so a 32x32 image ends as a 2x2 map, not 1x1.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import StochasticDepth

from cnnbench.models.registry import register_model

# B0: expand ratio, kernel, stride, in channels, out channels, layers
B0_STAGES = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
]

# variant: (width multiplier w, depth multiplier d, native resolution r, dropout)
SCALING = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
}


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10% (as the reference code does)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups,
                                             bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.SiLU(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """SE with SiLU, squeezing to a quarter of the block's *input* channels."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(s))))


class MBConv(nn.Module):
    """Inverted bottleneck: 1x1 expand -> depthwise kxk -> SE -> 1x1 project (linear), residual when shapes match."""

    def __init__(self, cin: int, cout: int, expand_ratio: int, kernel_size: int, stride: int,
                 drop_path: float) -> None:
        super().__init__()
        hidden = make_divisible(cin * expand_ratio)
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(ConvBNAct(cin, hidden, 1))
        layers += [
            ConvBNAct(hidden, hidden, kernel_size, stride, groups=hidden),  # depthwise
            SqueezeExcite(hidden, max(1, cin // 4)),
            ConvBNAct(hidden, cout, 1, act=False),  # projection, no activation
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and cin == cout
        self.drop_path = StochasticDepth(drop_path, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + self.drop_path(out) if self.use_residual else out


class EfficientNet(nn.Module):
    def __init__(self, width: float, depth: float, dropout: float, num_classes: int = 1000, in_channels: int = 3,
                 small_input: bool = False, stochastic_depth: float = 0.2) -> None:
        super().__init__()
        stem_out = make_divisible(32 * width)
        self.stem = ConvBNAct(in_channels, stem_out, 3, stride=1 if small_input else 2)
        stages = [(e, k, s, make_divisible(ci * width), make_divisible(co * width), math.ceil(n * depth))
                  for e, k, s, ci, co, n in B0_STAGES]
        total = sum(s[-1] for s in stages)
        index = 0
        blocks = []
        for expand, kernel, stride, cin, cout, n in stages:
            stage = []
            for i in range(n):
                stage.append(MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1,
                                    drop_path=stochastic_depth * index / total))  # deeper blocks drop more
                index += 1
            blocks.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*blocks)
        last_in = stages[-1][4]
        self.head = ConvBNAct(last_in, 4 * last_in, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * last_in, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.stages(self.stem(x)))  # (B, 4 * C_last, H/32, W/32) at 224
        return self.classifier(torch.flatten(self.pool(x), 1))


def _register(variant: str) -> None:
    width, depth, resolution, dropout = SCALING[variant]

    def builder(*, num_classes: int, in_channels: int, image_size: int, stochastic_depth: float = 0.2) -> EfficientNet:
        return EfficientNet(width, depth, dropout, num_classes, in_channels, small_input=image_size < 64,
                            stochastic_depth=stochastic_depth)

    builder.__name__ = f"efficientnet_{variant}"
    builder.__doc__ = (f"EfficientNet-{variant.upper()}: B0 scaled by width {width}, depth {depth}; "
                       f"native resolution {resolution}.")
    register_model(builder.__name__)(builder)


for _variant in SCALING:
    _register(_variant)
