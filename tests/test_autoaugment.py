"""TrivialAugmentWide and RandAugment batched: each op against torchvision.transforms.v2's functional op, image
by image, at the magnitudes torchvision draws from; and the draws' statistics."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from cnnbench.data.autoaugment import OPS, SIGNED, AutoAugment, apply_op, magnitude_table


def photos(n: int = 6, channels: int = 3, size: int = 32) -> torch.Tensor:
    """Smooth uint8 images with structure (gradients, a bright square, noise): every op changes them."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([xx, yy, (xx + yy) / 2][:channels])  # (C, H, W)
    imgs = base.expand(n, -1, -1, -1) * torch.rand(n, channels, 1, 1) * 200
    imgs = imgs + torch.rand(n, channels, size, size) * 40
    imgs[:, :, size // 4:size // 2, size // 4:size // 2] += 60
    return imgs.clamp(0, 255).to(torch.uint8)


def torchvision_op(img: torch.Tensor, name: str, m: float) -> torch.Tensor:
    """torchvision's ``_apply_image_or_video_transform`` for one image (v2, nearest, no fill)."""
    if name == "ShearX":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                         center=[0, 0])
    if name == "ShearY":
        return TF.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                         center=[0, 0])
    if name == "TranslateX":
        return TF.affine(img, angle=0.0, translate=[int(m), 0], scale=1.0, shear=[0.0, 0.0])
    if name == "TranslateY":
        return TF.affine(img, angle=0.0, translate=[0, int(m)], scale=1.0, shear=[0.0, 0.0])
    if name == "Rotate":
        return TF.rotate(img, angle=m)
    if name == "Brightness":
        return TF.adjust_brightness(img, 1.0 + m)
    if name == "Color":
        return TF.adjust_saturation(img, 1.0 + m)
    if name == "Contrast":
        return TF.adjust_contrast(img, 1.0 + m)
    if name == "Sharpness":
        return TF.adjust_sharpness(img, 1.0 + m)
    if name == "Posterize":
        return TF.posterize(img, int(m))
    if name == "Solarize":
        return TF.solarize(img, 255.0 * m)
    if name == "AutoContrast":
        return TF.autocontrast(img)
    if name == "Equalize":
        return TF.equalize(img)
    return img


EXACT = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Posterize", "Solarize",
         "AutoContrast", "Equalize"}  # the rest blend in float: at most 1 apart after rounding


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
@pytest.mark.parametrize("name", [op for op in OPS if op != "Identity"])
@pytest.mark.parametrize("channels", [3, 1])
def test_each_op_matches_torchvision(policy: str, name: str, channels: int) -> None:
    x = photos(channels=channels)
    table = magnitude_table(policy, 31, 32, 32)
    levels = torch.tensor([0, 5, 10, 20, 25, 30]) if policy == "trivialaugment" else torch.full((6,), 9)
    m = None
    if name in table:
        m = table[name][levels].to(torch.float64)
        if name in SIGNED:
            m = m * torch.tensor([1, -1, 1, -1, 1, -1], dtype=torch.float64)
    ours = apply_op(x, name, m)
    theirs = torch.stack([torchvision_op(x[i], name, float(m[i]) if m is not None else 0.0) for i in range(len(x))])
    diff = (ours.int() - theirs.int()).abs()
    assert ours.dtype == torch.uint8 and ours.shape == x.shape
    if name in EXACT:
        assert diff.max() == 0, (name, diff.max())
    else:
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.01, (name, diff.max())
    if name not in ("Color",) or channels == 3:
        assert not torch.equal(ours, x) or name in ("AutoContrast", "Equalize", "Posterize")


def test_trivialaugment_draws_ops_and_magnitudes_uniformly() -> None:
    x = photos(n=4000, size=8)
    aug = AutoAugment("trivialaugment", torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)  # the same draws, read back
    op = torch.randint(0, len(OPS), (4000,), generator=g)
    level = torch.randint(0, 31, (4000,), generator=g)
    counts = torch.bincount(op, minlength=len(OPS)).float()
    assert counts.min() > 4000 / 14 * 0.8 and counts.max() < 4000 / 14 * 1.2
    assert 13 < level.float().mean() < 17
    out = aug(x)
    identity = op == OPS.index("Identity")
    assert torch.equal(out[identity], x[identity])
    changed = (out != x).flatten(1).any(1)
    assert changed[~identity].float().mean() > 0.7  # most non-identity draws change the image


def test_randaugment_applies_num_ops_in_turn() -> None:
    x = photos(n=64)
    one = AutoAugment("randaugment", torch.Generator().manual_seed(3), num_ops=1)(x)
    two = AutoAugment("randaugment", torch.Generator().manual_seed(3), num_ops=2)(x)
    assert not torch.equal(one, two)
    # the first of the two rounds is the single round: same generator, same first draws
    g = torch.Generator().manual_seed(3)
    first = AutoAugment("randaugment", g, num_ops=1)
    assert torch.equal(first(x), one)


@pytest.mark.slow
def test_auto_augment_trains_from_the_config(cli, tmp_path) -> None:
    import json

    proc = cli("trainer.epochs=1", "data.augment.auto=trivialaugment", "logger.tensorboard=false",
               "logger.snapshots=0", "logger.figures=false", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"
