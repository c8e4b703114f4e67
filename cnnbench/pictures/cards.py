"""Captioned picture cards drawn with PIL: feature maps beside the input they belong to, first-layer filters,
the fixed input images. Each card carries a title strip saying what it shows, so a PNG read on its own, or an
image in TensorBoard, needs no legend. Pixels are never smoothed: small maps and 3x3 filters are enlarged by
whole-number nearest-neighbour factors, so one map pixel stays one block."""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

GRID_CHANNELS = 16  # 4x4 grid per layer
MIN_TILE = 48  # small maps are enlarged to at least this many pixels a side
PAD, MARGIN = 2, 8
MIN_TEXT_WIDTH = 300
TITLE_SIZE, TEXT_SIZE = 15, 12
INK = (20, 20, 20)
MUTED = (90, 90, 90)
HIGHLIGHT = (230, 120, 0)


@cache
def font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def to_pil(x: torch.Tensor) -> Image.Image:
    """A (C, H, W) float image in [0, 1] (1 or 3 channels) as an RGB PIL image."""
    x = x.detach().float().cpu().clamp(0, 1)
    x = x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def enlarge(x: torch.Tensor, at_least: int) -> torch.Tensor:
    """(N, C, H, W) enlarged by the smallest whole factor that makes it ``at_least`` pixels high (nearest)."""
    factor = max(1, -(-at_least // x.shape[-2]))
    return F.interpolate(x, scale_factor=factor, mode="nearest") if factor > 1 else x


def scale_each(x: torch.Tensor) -> torch.Tensor:
    """Each item of (N, ...) min-max scaled to [0, 1] on its own; a constant item becomes 0."""
    dims = tuple(range(1, x.ndim))
    lo, hi = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-8)


def grid(tiles: torch.Tensor, nrow: int, pad_value: float = 1.0) -> Image.Image:
    """(N, C, h, w) tiles in [0, 1] as a grid with separators (white unless told)."""
    from torchvision.utils import make_grid  # (torchvision.utils costs seconds at start-up: import when drawn)

    return to_pil(make_grid(tiles, nrow=nrow, padding=PAD, pad_value=pad_value))


def feature_grid(maps: torch.Tensor, channels: int = GRID_CHANNELS) -> Image.Image:
    """The first ``channels`` of one image's (C, H, W) activations as a 4x4 grid, each map scaled on its own."""
    return grid(enlarge(scale_each(maps[:channels].float())[:, None], MIN_TILE), nrow=4)


def wrap(text: str, face: ImageFont.ImageFont, width: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a longer single word stays whole)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and face.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def captioned(body: Image.Image, title: str, lines: list[str] = ()) -> Image.Image:
    """``body`` under a white strip with a title and lines of smaller text, wrapped to the body's width (at least
    ``MIN_TEXT_WIDTH``), so that a viewer scaling the card to fit keeps the text as large as the pictures."""
    width = max(body.width, MIN_TEXT_WIDTH)
    rows = [(t, font(TITLE_SIZE), INK, TITLE_SIZE + 5) for t in wrap(title, font(TITLE_SIZE), width)]
    rows += [(t, font(TEXT_SIZE), MUTED, TEXT_SIZE + 4) for line in lines for t in wrap(line, font(TEXT_SIZE), width)]
    card = Image.new("RGB", (width + 2 * MARGIN, MARGIN + sum(r[3] for r in rows) + 6 + body.height + MARGIN),
                     "white")
    draw, y = ImageDraw.Draw(card), MARGIN
    for text, face, colour, height in rows:
        draw.text((MARGIN, y), text, font=face, fill=colour)
        y += height
    card.paste(body, (MARGIN, y + 6))
    return card


def feature_card(maps: torch.Tensor, image: torch.Tensor, title: str, lines: list[str]) -> Image.Image:
    """One image's feature maps (C, H, W) as a 4x4 grid, with that image (as the model saw it) on the left."""
    maps_grid = feature_grid(maps)
    side = (maps_grid.height - PAD) // 2
    thumb = to_pil(enlarge(image[None].float(), side)[0])
    thumb.thumbnail((side, side), Image.Resampling.NEAREST)
    body = Image.new("RGB", (thumb.width + MARGIN + maps_grid.width, maps_grid.height), "white")
    body.paste(thumb, (0, PAD))
    ImageDraw.Draw(body).text((0, PAD + thumb.height + 4), "input", font=font(TEXT_SIZE), fill=MUTED)
    body.paste(maps_grid, (thumb.width + MARGIN, 0))
    return captioned(body, title, lines)


def filters_card(weight: torch.Tensor, title: str, count: int = 64) -> Image.Image:
    """First-layer conv filters (O, I, k, k) as an 8-wide grid, each scaled on its own: in colour when the input
    has 3 channels, else channel 0; enlarged (nearest) to 24 px so a 3x3 filter reads as 9 blocks."""
    w = weight[:count].detach().float().cpu()
    w = w if w.shape[1] == 3 else w[:, :1]
    shown = "RGB" if w.shape[1] == 3 else "grey" if weight.shape[1] == 1 else "input channel 0"
    lines = [f"first {len(w)} of {weight.shape[0]} filters, {weight.shape[-2]}x{weight.shape[-1]}, {shown}; "
             "each scaled to its own range"]
    # (a grey separator: white would merge with a filter's brightest weights)
    return captioned(grid(enlarge(scale_each(w), 24), nrow=8, pad_value=0.5), title, lines)


def inputs_card(images: torch.Tensor, names: list[str], title: str, lines: list[str]) -> Image.Image:
    """Images (B, C, H, W) in [0, 1] in a row of up to 4 per line, each labelled; the first framed, since the
    feature-map cards show it."""
    tile = max(64, images.shape[-2])
    big = enlarge(images.float(), tile)
    cell_w, cell_h = big.shape[-1] + 2 * PAD + 4, big.shape[-2] + 2 * PAD + 4 + TEXT_SIZE + 6
    cols = min(4, len(images))
    body = Image.new("RGB", (cols * cell_w, -(-len(images) // cols) * cell_h), "white")
    draw = ImageDraw.Draw(body)
    for i, (x, name) in enumerate(zip(big, names, strict=True)):
        left, top = (i % cols) * cell_w, (i // cols) * cell_h
        if i == 0:
            draw.rectangle((left, top, left + x.shape[-1] + 2 * PAD + 1, top + x.shape[-2] + 2 * PAD + 1),
                           outline=HIGHLIGHT, width=PAD)
        body.paste(to_pil(x), (left + PAD, top + PAD))
        draw.text((left, top + x.shape[-2] + 2 * PAD + 3), f"{i + 1}: {name}"[:24], font=font(TEXT_SIZE), fill=INK)
    return captioned(body, title, lines)


def figure_image(fig) -> Image.Image:
    """A matplotlib figure rendered once as an RGB image; the figure is closed."""
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return image
