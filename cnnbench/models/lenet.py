"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998), "Gradient-based learning applied to document recognition"."""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.registry import register_model, require_min_size


class LeNet5(nn.Module):
    """C1 conv 6@5x5 - S2 avg-pool - C3 conv 16@5x5 - S4 avg-pool - F5 120 - F6 84 - output, tanh throughout."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5),  # (6, n-4, n-4)
            nn.Tanh(),
            nn.AvgPool2d(2),  # (6, (n-4)/2, ...)
            nn.Conv2d(6, 16, kernel_size=5),
            nn.Tanh(),
            nn.AvgPool2d(2),  # (16, s, s): s = 5 for 32x32 input, 4 for 28x28
        )
        side = ((image_size - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * side * side, 120),
            nn.Tanh(),
            nn.Linear(120, 84),
            nn.Tanh(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register_model()
def lenet5(*, num_classes: int, in_channels: int, image_size: int) -> LeNet5:
    """LeNet-5: tanh, average pooling, 6/16 conv maps, 120-84 fully connected."""
    require_min_size("lenet5", image_size, 16)
    return LeNet5(num_classes, in_channels, image_size)
