"""Cards for the explanations: attribution maps over the images they explain, and receptive fields (theoretical
boxes, effective heat maps). Same style as ``cards``: a title strip saying what is shown, pixels never smoothed
beyond the map's own upsampling."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from cnnbench.explain.attribution import TITLES, Explanation
from cnnbench.explain.receptive_field import EffectiveField
from cnnbench.pictures.cards import INK, MUTED, PAD, TEXT_SIZE, captioned, enlarge, font, to_pil, wrap

TILE = 96  # images and maps are enlarged (nearest) to at least this many pixels a side
ALPHA = 0.55  # the map's share of an overlay
BOX_COLOURS = [(230, 120, 0), (0, 140, 200), (200, 0, 120), (60, 160, 60), (120, 80, 200), (200, 170, 0)]


def heat_colours(heat: torch.Tensor) -> torch.Tensor:
    """(H, W) >= 0 scaled to its own maximum and coloured with matplotlib's ``inferno``: (3, H, W) in [0, 1]."""
    from matplotlib import colormaps

    scaled = (heat / heat.max().clamp_min(1e-12)).clamp(0, 1).numpy()
    return torch.from_numpy(colormaps["inferno"](scaled)[..., :3].astype(np.float32)).permute(2, 0, 1)


def overlay(image: torch.Tensor, heat: torch.Tensor) -> torch.Tensor:
    """The map coloured over a grey copy of ``image`` (C, H, W) in [0, 1]: (3, H, W)."""
    grey = image.float().mean(0, keepdim=True).expand(3, -1, -1)
    return (1 - ALPHA) * grey + ALPHA * heat_colours(heat)


def _label(probs: torch.Tensor, target: int, names: list[str], true: int | None) -> str:
    top = int(probs.argmax())
    text = f"predicted {names[top]} ({100 * float(probs[top]):.0f}%)"
    if target != top:
        text += f", map of {names[target]} ({100 * float(probs[target]):.0f}%)"
    return text + (f", true {names[true]}" if true is not None else "")


def explanation_card(images: torch.Tensor, explanation: Explanation, probs: torch.Tensor, names: list[str],
                     labels: list[int] | None, title: str, lines: list[str]) -> Image.Image:
    """Each image (B, C, H, W in [0, 1], as the model saw it) beside its map over it, two pairs a row, labelled
    with the predicted class and probability, the class the map explains when another, and the true class."""
    side = max(TILE, images.shape[-2])
    pairs = [torch.stack([images[i].float().expand(3, -1, -1) if images.shape[1] == 1 else images[i].float()[:3],
                          overlay(images[i], explanation.maps[i])]) for i in range(len(images))]
    cols = min(2, len(pairs))
    cell_w = 2 * (enlarge(pairs[0], side).shape[-1] + PAD) + 3 * PAD + 4
    cell_h = enlarge(pairs[0], side).shape[-2] + 2 * PAD + 2 * (TEXT_SIZE + 4) + 6
    body = Image.new("RGB", (cols * cell_w, -(-len(pairs) // cols) * cell_h), "white")
    draw = ImageDraw.Draw(body)
    for i, pair in enumerate(pairs):
        left, top = (i % cols) * cell_w, (i // cols) * cell_h
        big = enlarge(pair, side)
        for k in range(2):
            body.paste(to_pil(big[k]), (left + PAD + k * (big.shape[-1] + 2 * PAD), top + PAD))
        true = labels[i] if labels is not None else None
        caption = f"{i + 1}: {_label(probs[i], explanation.targets[i], names, true)}"
        y = top + big.shape[-2] + 2 * PAD + 2
        colour = INK if true is None or true == int(probs[i].argmax()) else (200, 0, 0)
        for text in _wrap2(caption, cell_w - 4):
            draw.text((left, y), text, font=font(TEXT_SIZE), fill=colour)
            y += TEXT_SIZE + 4
    return captioned(body, title, lines)


def _wrap2(text: str, width: int) -> list[str]:
    return wrap(text, font(TEXT_SIZE), width)[:2]


def explanation_title(explanation: Explanation, layer_label: str | None = None) -> str:
    """``Grad-CAM at stages.2.1 (basic 256x8x8)``, ``saliency``, ..."""
    title = TITLES[explanation.method]
    return f"{title} at {layer_label or explanation.layer}" if explanation.layer else title


def field_boxes(image: torch.Tensor, fields: dict[str, tuple[int, int]]) -> Image.Image:
    """The theoretical receptive field of one unit at the centre of each layer's map, drawn as a square centred
    on ``image`` (C, H, W in [0, 1]), clipped at its edges and labelled with the layer and its size."""
    factor = max(1, -(-TILE * 2 // image.shape[-2]))
    big = to_pil(enlarge(image[None].float(), TILE * 2)[0])
    h, w = image.shape[-2:]
    labels = [f"{name}: {r}x{r}" + (" (beyond the image)" if r > max(h, w) else "") for name, (r, _) in fields.items()]
    width = max(big.width, *(int(font(TEXT_SIZE).getlength(t)) + 2 for t in labels)) if labels else big.width
    canvas = Image.new("RGB", (width, big.height + len(fields) * (TEXT_SIZE + 4) + 4), "white")
    canvas.paste(big, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (r, _) in enumerate(fields.values()):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        top, left = (h - r) / 2 * factor, (w - r) / 2 * factor
        box = (max(0, left), max(0, top), min(big.width - 1, left + r * factor), min(big.height - 1, top + r * factor))
        draw.rectangle(box, outline=colour, width=2)
        draw.text((0, big.height + 2 + i * (TEXT_SIZE + 4)), labels[i], font=font(TEXT_SIZE), fill=colour)
    return canvas


def receptive_field_card(image: torch.Tensor, fields: dict[str, tuple[int, int]], effective: list[EffectiveField],
                         title: str, lines: list[str]) -> Image.Image:
    """Theoretical boxes over ``image`` on the left; each effective field's heat map on the right, captioned with
    its measured side beside the theoretical one."""
    left = field_boxes(image, fields)
    tiles = []
    for field in effective:
        heat = enlarge(heat_colours(field.heat.sqrt())[None], TILE)[0]  # sqrt: the faint tails stay visible
        theory = fields.get(field.layer, (None,))[0]
        captions = [(field.layer, INK), (f"effective {field.side} px", MUTED), (f"theoretical {theory} px", MUTED)]
        width = max(heat.shape[-1], *(int(font(TEXT_SIZE).getlength(t)) + 2 for t, _ in captions))
        tile = Image.new("RGB", (width, heat.shape[-2] + 3 * (TEXT_SIZE + 4) + 2), "white")
        tile.paste(to_pil(heat), (0, 0))
        draw = ImageDraw.Draw(tile)
        for k, (text, colour) in enumerate(captions):
            draw.text((0, heat.shape[-2] + 2 + k * (TEXT_SIZE + 4)), text, font=font(TEXT_SIZE), fill=colour)
        tiles.append(tile)
    width = left.width + sum(t.width + 3 * PAD for t in tiles) + 3 * PAD
    body = Image.new("RGB", (width, max([left.height, *(t.height for t in tiles)])), "white")
    body.paste(left, (0, 0))
    x = left.width + 3 * PAD
    for tile in tiles:
        body.paste(tile, (x, 0))
        x += tile.width + 3 * PAD
    return captioned(body, title, lines)
