"""The CIFAR-10 speedrun network after Keller Jordan's airbench (2024), "94% on CIFAR-10 in 3.29 seconds".

A 2x2 stem conv, then three groups of conv - max-pool - BN - GELU - conv - BN - GELU, each halving the
resolution, global max pooling and a bias-free linear layer whose logits are scaled down. No residuals: at
this depth plain conv-BN stacks train fastest per FLOP. The stem is airbench's patch-whitening layer: its
kernels are set from the training images (``init_from_data``: the eigenvectors of the 2x2 patch covariance,
both signs, scaled by 1/sqrt(eigenvalue)) and then frozen. As in airbench, the BatchNorm scales can be frozen
at 1 (``bn_scale=false``: only the shifts learn, which the recipe trains at 64x the rate through
``optimizer.norm_lr_scale``), and the 3x3 convs start as identities on their first input-many channels (``dirac``).
The recipe (``experiment=cifar10_speedrun``) supplies the rest: label smoothing, flip + translate augmentation,
nesterov SGD on a triangular schedule, lookahead and test-time augmentation.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnbench.errors import CnnbenchError
from cnnbench.models.hooks import TrainingHooks
from cnnbench.models.registry import register_model, require_min_size


def conv3x3(cin: int, cout: int, dirac: bool) -> nn.Conv2d:
    """A bias-free 3x3 conv; ``dirac``: its first min(cin, cout) filters start as identities (airbench)."""
    conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False)
    if dirac:
        n = min(cin, cout)
        nn.init.dirac_(conv.weight.data[:n, :n])
    return conv


def batch_norm(channels: int, scale: bool, momentum: float, eps: float) -> nn.BatchNorm2d:
    """BatchNorm; ``scale=false`` freezes its weight at 1 so that only the shift learns."""
    bn = nn.BatchNorm2d(channels, momentum=momentum, eps=eps)
    bn.weight.requires_grad_(scale)
    return bn


ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU}


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> BN -> act -> conv 3x3 -> BN -> act: (cin, H, W) -> (cout, H/2, W/2); act is GELU
    (airbench) or SiLU (hiverge's record)."""

    def __init__(self, cin: int, cout: int, dirac: bool = False, bn_scale: bool = True, bn_momentum: float = 0.1,
                 bn_eps: float = 1e-5, activation: str = "gelu") -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout, dirac)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = batch_norm(cout, bn_scale, bn_momentum, bn_eps)
        self.conv2 = conv3x3(cout, cout, dirac)
        self.bn2 = batch_norm(cout, bn_scale, bn_momentum, bn_eps)
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))  # pooling before BN: the norm sees 4x fewer pixels
        return self.act(self.bn2(self.conv2(x)))


class WhiteningStem(nn.Module):
    """2x2 conv with 2 x (C x 2 x 2) outputs (24 for RGB), then GELU: (C, H, W) -> (8C, H-1, W-1).

    Its bias trains for the first ``bias_epochs`` epochs only (airbench: 3); after that no gradient flows below
    the first 3x3 conv (which then skips its input gradient)."""

    def __init__(self, in_channels: int, whiten: bool, bias_epochs: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8 * in_channels, kernel_size=2)
        self.act = nn.GELU()
        self.whiten = whiten
        self.bias_epochs = bias_epochs
        self.conv.weight.requires_grad_(not whiten)  # whitening kernels come from the data and stay fixed

    def on_epoch_start(self, epoch: int) -> None:
        if self.bias_epochs is not None and epoch >= self.bias_epochs:
            self.conv.bias.requires_grad_(False)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Whitening kernels from normalised training images (N, C, H, W); the kernels are then frozen."""
        c = images.shape[1]
        patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4)  # one row per patch, (c, kh, kw) order
        eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
        kernels = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).reshape(c * 4, c, 2, 2)
        self.conv.weight.copy_(torch.cat([kernels, -kernels]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class AirbenchNet(nn.Module, TrainingHooks):
    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...], whiten: bool,
                 logit_scale: float, stem_bias_epochs: int | None = None, **group_options) -> None:
        super().__init__()
        self.stem = WhiteningStem(in_channels, whiten, stem_bias_epochs)  # (24, 31, 31) at 3x32x32
        groups, cin = [], 8 * in_channels
        for w in widths:  # 31 -> 15 -> 7 -> 3 at 32x32 input
            groups.append(ConvGroup(cin, w, **group_options))
            cin = w
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(cin, num_classes, bias=False)
        self.logit_scale = logit_scale

    def init_from_data(self, images: torch.Tensor) -> None:
        """Whitening kernels from normalised training images (before training from scratch)."""
        if self.stem.whiten:
            self.stem.init_from_data(images)

    def on_epoch_start(self, epoch: int) -> None:
        """Before each (0-based) epoch: freezes the stem's bias after its epochs."""
        self.stem.on_epoch_start(epoch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.groups(self.stem(x))).flatten(1)  # (B, widths[-1])
        return self.fc(x) * self.logit_scale


@register_model()
def airbench(*, num_classes: int, in_channels: int, image_size: int, widths: list[int] = (64, 256, 256),
             whiten: bool = True, logit_scale: float = 1 / 9, stem_bias_epochs: int | None = None,
             dirac: bool = True, bn_scale: bool = False, bn_momentum: float = 0.4, bn_eps: float = 1e-12,
             activation: str = "gelu") -> AirbenchNet:
    """airbench's network: widths per conv group (airbench94: 64/256/256); ``whiten``: whitening stem;
    ``stem_bias_epochs``: train the stem's bias that many epochs (null: always); ``dirac``: identity-initialised
    convs; ``bn_scale``: learn BatchNorm scales (airbench freezes them); ``activation``: the conv groups'
    (gelu | silu; the stem keeps GELU)."""
    require_min_size("airbench", image_size, 2 ** (len(widths) + 1))
    if activation not in ACTIVATIONS:
        raise CnnbenchError(f"model.activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return AirbenchNet(num_classes, in_channels, tuple(widths), whiten, logit_scale, stem_bias_epochs, dirac=dirac,
                       bn_scale=bn_scale, bn_momentum=bn_momentum, bn_eps=bn_eps, activation=activation)
