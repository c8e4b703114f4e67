"""GoogLeNet (Inception v1): Szegedy et al. 2014, "Going Deeper with Convolutions".

Inception modules run 1x1, 3x3 and 5x5 convolutions and a 3x3 max pool in parallel and concatenate them;
1x1 bottlenecks shrink the channels before the 3x3 and 5x5 convs. This follows the paper's table 1 (with the
5x5 branch; torchvision uses 3x3 there) with BatchNorm after each conv. Auxiliary classifiers after 4a and 4d
are optional (``aux_logits``); in training they add 0.3 x their losses.
Below 64 pixels the stem is a single 3x3 conv to 192 maps and the first two max pools are dropped.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cnnbench.models.registry import register_model, require_min_size


class ConvBN(nn.Sequential):
    """conv -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False),
                         nn.BatchNorm2d(cout, eps=0.001), nn.ReLU(inplace=True))


class Inception(nn.Module):
    """Four parallel branches, concatenated along channels: out = n1x1 + n3x3 + n5x5 + pool_proj."""

    def __init__(self, cin: int, n1x1: int, n3x3red: int, n3x3: int, n5x5red: int, n5x5: int, pool_proj: int):
        super().__init__()
        self.branch1 = ConvBN(cin, n1x1, 1)
        self.branch2 = nn.Sequential(ConvBN(cin, n3x3red, 1), ConvBN(n3x3red, n3x3, 3, padding=1))
        self.branch3 = nn.Sequential(ConvBN(cin, n5x5red, 1), ConvBN(n5x5red, n5x5, 5, padding=2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), ConvBN(cin, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class AuxHead(nn.Module):
    """Auxiliary classifier: 4x4 average pool -> 1x1 conv 128 -> FC 1024 -> dropout 0.7 -> FC classes."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = ConvBN(cin, 128, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(0.7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class GoogLeNetOutputs(NamedTuple):
    logits: torch.Tensor
    aux2: torch.Tensor
    aux1: torch.Tensor


class GoogLeNet(nn.Module):
    feature_stages = ("inception3b", "inception4e", "inception5b")  # the last module before each down-sampling

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                 aux_logits: bool = False, dropout: float = 0.2) -> None:
        super().__init__()
        if small_input:
            self.stem = ConvBN(in_channels, 192, 3, padding=1)
        else:  # (3, 224, 224) -> (192, 28, 28)
            self.stem = nn.Sequential(
                ConvBN(in_channels, 64, 7, stride=2, padding=3),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
                ConvBN(64, 64, 1),
                ConvBN(64, 192, 3, padding=1),
                nn.MaxPool2d(3, stride=2, ceil_mode=True),
            )
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)  # -> 256
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)  # -> 480
        self.pool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)  # -> 512
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)  # -> 528
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)  # -> 832
        self.pool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)  # -> 1024
        self.aux1 = AuxHead(512, num_classes) if aux_logits else None
        self.aux2 = AuxHead(528, num_classes) if aux_logits else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        x = self.pool3(self.inception3b(self.inception3a(self.stem(x))))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.pool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.pool(x), 1)))
        if aux1 is not None:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits


@register_model()
def googlenet(*, num_classes: int, in_channels: int, image_size: int, aux_logits: bool = False,
              dropout: float = 0.2) -> GoogLeNet:
    """GoogLeNet: Inception modules of parallel 1x1/3x3/5x5/pool branches with 1x1 bottlenecks."""
    small = image_size < 64
    require_min_size("googlenet", image_size, 4 if small else 64)
    return GoogLeNet(num_classes, in_channels, small_input=small, aux_logits=aux_logits, dropout=dropout)
