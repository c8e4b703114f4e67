"""Each corruption against its definition (CIFAR-10-C's severity parameters), on images whose answer is known."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cnnbench.evaluation import corruptions as c


def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


GREY = torch.full((8, 3, 32, 32), 0.5)


def smooth_image() -> torch.Tensor:
    """A colour gradient with a bright square: values well inside (0, 1), some structure to blur."""
    y, x = torch.meshgrid(torch.linspace(0.2, 0.7, 32), torch.linspace(0.1, 0.6, 32), indexing="ij")
    img = torch.stack([x, y, (x + y) / 2])
    img[:, 10:20, 12:22] += 0.2
    return img[None].repeat(4, 1, 1, 1)


@pytest.mark.parametrize("severity", range(1, 6))
def test_gaussian_noise_has_the_published_std(severity: int) -> None:
    out = c.gaussian_noise(GREY, severity, gen())
    assert (out - GREY).std().item() == pytest.approx(c.GAUSSIAN_NOISE[severity - 1], rel=0.03)


@pytest.mark.parametrize("severity", range(1, 6))
def test_shot_noise_is_poisson_at_the_published_rate(severity: int) -> None:
    out = c.shot_noise(GREY, severity, gen())
    rate = c.SHOT_NOISE[severity - 1]
    assert out.mean().item() == pytest.approx(0.5, abs=0.005)
    assert out.var().item() == pytest.approx(0.5 / rate, rel=0.05)  # Poisson: variance = mean, over rate^2


@pytest.mark.parametrize("severity", range(1, 6))
def test_impulse_noise_replaces_the_published_share(severity: int) -> None:
    out = c.impulse_noise(GREY, severity, gen())
    hit = (out == 0) | (out == 1)
    assert hit.float().mean().item() == pytest.approx(c.IMPULSE_NOISE[severity - 1], rel=0.08)
    assert (out == 1).sum().item() == pytest.approx((out == 0).sum().item(), rel=0.15)  # salt and pepper alike


def test_defocus_kernel_is_a_normalised_disk() -> None:
    for radius, alias in c.DEFOCUS_BLUR:
        k = c.disk_kernel(radius, alias)
        assert k.shape == (17, 17) and k.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert torch.allclose(k, k.flip(0)) and torch.allclose(k, k.T)
        assert k[8 + int(radius) + 2:].abs().max() < 1e-6  # nothing beyond the radius and the 3x3 smoothing
    out = c.defocus_blur(GREY, 5, gen())
    assert torch.allclose(out, GREY, atol=1e-6)  # a flat image stays flat
    img = smooth_image()
    assert (c.defocus_blur(img, 5, gen()) - img).abs().max() > 0.05  # the square's edges are blurred


def high_frequency(x: torch.Tensor) -> float:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean().item()


def test_zoom_blur_grows_with_severity_and_keeps_flat_images() -> None:
    assert torch.allclose(c.zoom_blur(GREY, 3, gen()), GREY, atol=1e-6)
    img = smooth_image()
    energies = [high_frequency(c.zoom_blur(img, s, gen())) for s in range(1, 6)]
    assert energies == sorted(energies, reverse=True) and energies[0] < high_frequency(img)


def test_fog_blends_a_fractal_as_published() -> None:
    maps = c.plasma_fractal(3, 32, 2.0, gen())
    assert maps.shape == (3, 32, 32) and torch.allclose(maps.amin((1, 2)), torch.zeros(3))
    assert torch.allclose(maps.amax((1, 2)), torch.ones(3)) and maps.std() > 0.1
    strength = c.FOG[4][0]
    out = c.fog(GREY, 5, gen())  # (0.5 + s * layer) * 0.5 / (0.5 + s): from 0.25 / (0.5 + s) up to 0.5
    assert out.amax().item() == pytest.approx(0.5, abs=1e-6)
    assert out.amin().item() == pytest.approx(0.25 / (0.5 + strength), abs=1e-6)


@pytest.mark.parametrize("severity", range(1, 6))
def test_brightness_raises_hsv_value_and_keeps_hue(severity: int) -> None:
    img = smooth_image() * 0.6
    out = c.brightness(img, severity, gen())
    shift = c.BRIGHTNESS[severity - 1]
    assert torch.allclose(out.amax(1), (img.amax(1) + shift).clamp(max=1), atol=1e-6)
    assert torch.allclose(out / out.amax(1, keepdim=True), img / img.amax(1, keepdim=True), atol=1e-5)  # hue, S
    black = torch.zeros(1, 3, 4, 4)
    assert torch.allclose(c.brightness(black, severity, gen()), torch.full_like(black, shift))


@pytest.mark.parametrize("severity", range(1, 6))
def test_contrast_scales_deviations_from_the_channel_mean(severity: int) -> None:
    img = smooth_image()
    out = c.contrast(img, severity, gen())
    assert torch.allclose(out.mean((2, 3)), img.mean((2, 3)), atol=1e-6)
    assert torch.allclose(out.std((2, 3)), img.std((2, 3)) * c.CONTRAST[severity - 1], atol=1e-5)


def test_pixelate_and_jpeg_match_pillow() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    image = Image.fromarray(array)
    box = image.resize((int(32 * 0.65), int(32 * 0.65)), Image.BOX).resize((32, 32), Image.BOX)
    assert np.array_equal((c.pixelate(x, 5, gen()) * 255).round().byte()[0].permute(1, 2, 0).numpy(), np.asarray(box))
    errors = []
    for severity in (1, 5):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=c.JPEG_QUALITY[severity - 1])
        expected = np.asarray(Image.open(buffer))
        got = (c.jpeg_compression(x, severity, gen()) * 255).round().byte()[0].permute(1, 2, 0).numpy()
        assert np.array_equal(got, expected)
        errors.append(np.abs(got.astype(int) - array).mean())
    assert errors[1] > errors[0]  # quality 40 loses more than quality 80


@pytest.mark.parametrize("name", sorted(c.CORRUPTIONS))
def test_every_corruption_is_quantised_reproducible_and_grey_safe(name: str) -> None:
    img = smooth_image()
    out = c.corrupt(img, name, 3, gen())
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, (out * 255).round() / 255) and torch.equal(out, c.corrupt(img, name, 3, gen()))
    grey = c.corrupt(img[:, :1], name, 3, gen())
    assert grey.shape == img[:, :1].shape


def test_glass_blur_only_moves_pixels_at_severity_1() -> None:
    """Severity 1 blurs with sigma 0.05 (a no-op at 4 sigma truncation): what is left is the swaps."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (2, 3, 32, 32))).float() / 255
    out = c.glass_blur(x, 1, gen())
    assert not torch.equal(out, x)
    for i in range(2):  # the same pixels (as RGB triples), rearranged
        before = sorted(map(tuple, x[i].flatten(1).T.tolist()))
        after = sorted(map(tuple, out[i].flatten(1).T.tolist()))
        assert before == after
    flat = c.glass_blur(GREY, 5, gen())  # flat stays flat, at 8 bits truncated as np.uint8 does: 127.5 -> 127
    assert torch.allclose(flat, torch.full_like(GREY, 127 / 255), atol=1e-6)


def test_motion_blur_is_imagemagicks_one_sided_gaussian_line() -> None:
    point = torch.zeros(1, 1, 32, 32)
    point[0, 0, 16, 20] = 1.0
    out = c._motion_blur(point, 6, 2.0, torch.tensor([0.0]))  # angle 0: each output looks i pixels to the right
    weights = torch.exp(-torch.arange(13.0) ** 2 / 8)
    weights = weights / weights.sum()
    assert torch.allclose(out[0, 0, 16, 8:21].flip(0), weights, atol=1e-6)  # a streak to the left of the point
    assert out[0, 0, 16].sum().item() == pytest.approx(1.0, abs=1e-6) and out[0, 0, :16].abs().max() == 0
    down = c._motion_blur(point, 6, 2.0, torch.tensor([90.0]))  # 90 degrees: the streak runs up the column
    assert torch.allclose(down[0, 0, 4:17, 20].flip(0), weights, atol=1e-6)
    flat = c.motion_blur(GREY, 5, gen())  # flat stays flat (at 8 bits: the blur works on the 8-bit image)
    assert torch.allclose(flat, torch.full_like(GREY, 128 / 255), atol=1e-6)


def test_snow_only_adds_flakes_to_the_brightened_image() -> None:
    img = smooth_image()
    out = c.snow(img, 5, gen())
    keep = c.SNOW[4][6]
    grey = 0.299 * img[:, :1] + 0.587 * img[:, 1:2] + 0.114 * img[:, 2:3]
    base = (keep * img + (1 - keep) * torch.maximum(img, grey * 1.5 + 0.5)).clamp(0, 1)
    assert (out >= base - 1e-6).all() and (out > base + 0.05).float().mean() > 0.01  # flakes somewhere


def test_elastic_transform_without_jitter_is_the_identity(monkeypatch) -> None:
    img = smooth_image()
    monkeypatch.setattr(c, "ELASTIC", [(0.0, 0.0, 0.0)] * 5)
    assert torch.allclose(c.elastic_transform(img, 3, gen()), img, atol=1e-5)  # both warps' coordinates exact
    monkeypatch.undo()
    assert torch.allclose(c.elastic_transform(GREY, 5, gen()), GREY, atol=1e-6)
    out = c.elastic_transform(img, 5, gen())
    assert (out - img).abs().max() > 0.05 and abs(out.mean() - img.mean()) < 0.03  # moved, not changed in tone
