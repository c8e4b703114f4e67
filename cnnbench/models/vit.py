"""Vision Transformer: Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words".

Cut the image into patches, embed each linearly, prepend a learned class token, add learned position
embeddings, run a pre-norm transformer encoder, classify from the class token. At 224 the patches are 16x16
(vit_b_16 is ViT-Base/16); on small images they are 4x4 (a 32x32 image gives 64 tokens), or 2x2 where the side
is not a multiple of 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import StochasticDepth

from cnnbench.errors import CnnbenchError
from cnnbench.models.registry import register_model


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Sequential):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    """Pre-norm: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, mlp_dim, dropout)
        self.drop_path = StochasticDepth(drop_path, "row") if drop_path else nn.Identity()  # per image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.ln1(x)))
        return x + self.drop_path(self.mlp(self.ln2(x)))


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, heads: int, mlp_dim: int,
                 num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.empty(1, n_patches + 1, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(dropout)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]  # stochastic depth, deeper drops more
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads, mlp_dim, dropout, rate) for rate in rates])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # (B, N + 1, D)
        x = self.norm(self.blocks(self.dropout(x)))
        return self.head(x[:, 0])


def _vit(name: str, image_size: int, patch_size: int | None, **kwargs) -> VisionTransformer:
    if patch_size is None:
        patch_size = 16 if image_size >= 128 else (4 if image_size % 4 == 0 else 2)
    if image_size % patch_size:
        raise CnnbenchError(f"{name} needs an image side divisible by its patch size {patch_size}, got {image_size}; "
                            f"set model.patch_size or data.image_size")
    return VisionTransformer(image_size, patch_size, **kwargs)


@register_model()
def vit_tiny(*, num_classes: int, in_channels: int, image_size: int, patch_size: int | None = None,
             dropout: float = 0.0, drop_path: float = 0.0) -> VisionTransformer:
    """ViT-Tiny: 12 layers, width 192, 3 heads, MLP 768."""
    return _vit("vit_tiny", image_size, patch_size, dim=192, depth=12, heads=3, mlp_dim=768,
                num_classes=num_classes, in_channels=in_channels, dropout=dropout, drop_path=drop_path)


@register_model()
def vit_small(*, num_classes: int, in_channels: int, image_size: int, patch_size: int | None = None,
              dropout: float = 0.0, drop_path: float = 0.0) -> VisionTransformer:
    """ViT-Small: 12 layers, width 384, 6 heads, MLP 1536."""
    return _vit("vit_small", image_size, patch_size, dim=384, depth=12, heads=6, mlp_dim=1536,
                num_classes=num_classes, in_channels=in_channels, dropout=dropout, drop_path=drop_path)


@register_model()
def vit_b_16(*, num_classes: int, in_channels: int, image_size: int, patch_size: int | None = None,
             dropout: float = 0.0, drop_path: float = 0.0) -> VisionTransformer:
    """ViT-Base/16: 12 layers, width 768, 12 heads, MLP 3072, 16x16 patches at 224."""
    return _vit("vit_b_16", image_size, patch_size, dim=768, depth=12, heads=12, mlp_dim=3072,
                num_classes=num_classes, in_channels=in_channels, dropout=dropout, drop_path=drop_path)
