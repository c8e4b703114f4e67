"""VGG: Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image Recognition".

Stacks of 3x3 convs (stride 1, padding 1) separated by 2x2 max pools; configurations A (11), B (13), D (16),
E (19) layers, optionally with BatchNorm after each conv. At 224 the classifier is the paper's 4096-4096 on a
7x7x512 map. Below 64 pixels the five pools leave a 1x1 map (pools round up, so 28x28 works too) and the
classifier is sized to it: 512-512-classes.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.models.registry import register_model

# numbers are conv widths, "M" a 2x2 max pool
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_features(config: list[int | str], in_channels: int, batch_norm: bool, ceil_mode: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = in_channels
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
            continue
        layers.append(nn.Conv2d(cin, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        cin = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, config: list[int | str], num_classes: int = 1000, in_channels: int = 3,
                 batch_norm: bool = False, small_input: bool = False, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = make_features(config, in_channels, batch_norm, ceil_mode=small_input)
        side, hidden = (1, 512) if small_input else (7, 4096)
        self.pool = nn.AdaptiveAvgPool2d(side)
        self.classifier = nn.Sequential(
            nn.Linear(512 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        # Without BatchNorm, 8-16 ReLU convs only train from a variance-preserving (He, fan_in) init: the
        # fan_out variant shrinks a 1- or 3-channel input's signal 20-64x at the first conv, and torchvision's
        # N(0, 0.01) suits only the 4096-wide classifier, so the small 512-wide classifier gets He init too.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                if small_input:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))  # (B, 512, 7, 7) or (B, 512, 1, 1)
        return self.classifier(torch.flatten(x, 1))


def _register(name: str, config: str, batch_norm: bool) -> None:
    def builder(*, num_classes: int, in_channels: int, image_size: int, dropout: float = 0.5) -> VGG:
        return VGG(CONFIGS[config], num_classes, in_channels, batch_norm, small_input=image_size < 64,
                   dropout=dropout)

    depth = sum(isinstance(v, int) for v in CONFIGS[config]) + 3
    builder.__doc__ = f"VGG-{depth} (configuration {config}){' with BatchNorm' if batch_norm else ''}."
    builder.__name__ = name
    register_model(name)(builder)


for _depth, _config in (("11", "A"), ("13", "B"), ("16", "D"), ("19", "E")):
    _register(f"vgg{_depth}", _config, batch_norm=False)
    _register(f"vgg{_depth}_bn", _config, batch_norm=True)
