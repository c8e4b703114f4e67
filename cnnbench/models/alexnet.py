"""AlexNet: Krizhevsky, Sutskever, Hinton 2012, "ImageNet Classification with Deep Convolutional Neural Networks".

Five convs and three fully connected layers, ReLU, dropout, overlapping 3x3 stride-2 max pooling. The 224 layout
is torchvision's single-tower version (64/192/384/256/256 maps). Below 64 pixels the 11x11 stride-4 stem becomes
a 3x3 stride-1 conv and the classifier is sized to the (3x3) feature map with 1,024-wide hidden layers.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.registry import register_model, require_min_size


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, small_input: bool = False,
                 dropout: float = 0.5) -> None:
        super().__init__()
        stem = (nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1) if small_input
                else nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2))  # 224 -> 55
        self.features = nn.Sequential(
            stem,
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # overlapping pooling: 55 -> 27 (32 -> 15)
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 27 -> 13 (15 -> 7)
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),  # 13 -> 6 (7 -> 3)
        )
        side, hidden = (3, 1024) if small_input else (6, 4096)
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # (B, 256, 6, 6) or (B, 256, 3, 3)
        return self.classifier(torch.flatten(x, 1))


@register_model()
def alexnet(*, num_classes: int, in_channels: int, image_size: int, dropout: float = 0.5) -> AlexNet:
    """AlexNet: 5 conv + 3 fully connected, ReLU, dropout, overlapping max pooling."""
    small = image_size < 64
    require_min_size("alexnet", image_size, 15 if small else 64)
    return AlexNet(num_classes, in_channels, small_input=small, dropout=dropout)
