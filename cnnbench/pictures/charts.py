"""Test-time charts drawn with matplotlib: confusion matrix, per-class precision and recall, mistakes.

Beyond ``MAX_CLASSES`` classes a chart shows the classes that matter most (most confused, lowest recall) and says
so in its title: a 200-class matrix would be an 11000-pixel image that nobody can read and that takes minutes to
draw. Every title is wrapped to its figure's width and long class names are shortened (``NAME_CHARS``), so every
text lies inside the picture at 2 classes as at 100 (tests/test_pictures.py measures it).
"""

from __future__ import annotations

import os
import textwrap

import torch

MAX_CLASSES = 30
NAME_CHARS = 24  # a class name longer than this is shortened on the axes: its start, ..., its end


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points (a character is about 0.6
    of the font size wide), each line of the original wrapped on its own."""
    chars = max(12, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


def short(name: str, chars: int = NAME_CHARS) -> str:
    """A class name for an axis: whole when short, else its start and end around an ellipsis."""
    return name if len(name) <= chars else f"{name[:chars - 9]}...{name[-6:]}"


def short_names(names: list[str], chars: int = NAME_CHARS) -> list[str]:
    """Class names for an axis, each at most ``chars`` long, keeping what tells them apart: a start or an end
    that every name shares is elided first (``a_long_name_3_of_set`` -> ``a_lon...3_of...``)."""
    if all(len(n) <= chars for n in names) or len(names) < 2:
        return [short(n, chars) for n in names]
    prefix = os.path.commonprefix(names)
    suffix = os.path.commonprefix([n[::-1] for n in names])[::-1]
    out = []
    for name in names:
        middle = name[len(prefix):len(name) - len(suffix)] if len(prefix) + len(suffix) < len(name) else name
        head = prefix if len(prefix) <= 6 else prefix[:5] + "..."
        tail = suffix if len(suffix) <= 6 else "..." + suffix[-3:]
        out.append(short(head + middle + tail, chars) if len(head + middle + tail) > chars else head + middle + tail)
    return out


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display), imported when first drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def most_confused(cm: torch.Tensor, limit: int = MAX_CLASSES) -> list[int]:
    """All classes when there are at most ``limit``, else the ``limit`` classes with the most errors (as true or
    as predicted class), in class order."""
    n = len(cm)
    if n <= limit:
        return list(range(n))
    off = cm.clone()
    off.fill_diagonal_(0)
    errors = off.sum(0) + off.sum(1)
    return sorted(torch.argsort(-errors, stable=True)[:limit].tolist())


def confusion_figure(cm: torch.Tensor, class_names: list[str]):
    """Rates per true class (rows), counts written in the cells up to 20 classes."""
    plt = pyplot()
    shown = most_confused(cm)
    rates = (cm.float() / cm.sum(1, keepdim=True).clamp_min(1))[shown][:, shown].numpy()
    counts = cm[shown][:, shown]
    names = short_names([class_names[i] for i in shown])
    n = len(shown)
    width = max(4.5, 2.0 + 0.45 * n)
    fig, ax = plt.subplots(figsize=(width, max(3.5, 1.6 + 0.4 * n)), dpi=100)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    title = "test confusion matrix (colour: share of each true class)"
    if n < len(cm):
        title += f"\nthe {n} of {len(cm)} classes most often confused"
    ax.set_title(wrap(title, width - 0.4, 9), fontsize=9)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def per_class_figure(per_class: dict[str, dict[str, float]]):
    """Precision and recall (percent) per class as horizontal bars; beyond ``MAX_CLASSES``, the lowest recalls."""
    plt = pyplot()
    names = list(per_class)
    if len(names) > MAX_CLASSES:
        names = sorted(names, key=lambda c: per_class[c]["recall"])[:MAX_CLASSES]
    n = len(names)
    fig, ax = plt.subplots(figsize=(6.0, max(2.4, 1.2 + 0.28 * n)), dpi=100)
    y = torch.arange(n).numpy()
    ax.barh(y - 0.2, [per_class[c]["recall"] for c in names], height=0.4, color="tab:blue")
    ax.barh(y + 0.2, [per_class[c]["precision"] for c in names], height=0.4, color="tab:orange")
    ax.set_yticks(y, short_names(names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("percent of test images")
    title = "test recall (blue: accuracy on the class) and precision (orange) per class"
    if n < len(per_class):
        title += f"\nthe {n} of {len(per_class)} classes with the lowest recall"
    ax.set_title(wrap(title, 4.5, 9), fontsize=9)
    fig.tight_layout()
    return fig


def mistakes_figure(images: torch.Tensor, labels: list[int], preds: list[int], class_names: list[str],
                    total: int, of: int):
    """Misclassified images (uint8 (N, C, H, W)) titled 'true -> predicted'; ``total`` wrong of ``of``."""
    plt = pyplot()
    cols = 4
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, 0.5 + rows * 2.0), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    shown = short_names(class_names, 16)
    for ax, img, true, pred in zip(axes.flat, images, labels, preds, strict=False):
        img = img.permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  interpolation="nearest")
        ax.set_title(wrap(f"{shown[true]} -> {shown[pred]}", 1.7, 7), fontsize=7)
    fig.suptitle(wrap(f"misclassified test images, true -> predicted: first {len(images)} of {total} "
                      f"(of {of} test images)" if total else f"no misclassified images among {of}", cols * 1.8 - 0.3,
                      9), fontsize=9)
    fig.tight_layout()
    return fig


def reliability_figure(bins, ece: float, title: str):
    """Accuracy against confidence per bin (``cnnbench.evaluation.calibration.Bin``), the diagonal of perfect
    calibration, and how many images each bin holds."""
    plt = pyplot()
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5.0, 5.6), dpi=100, height_ratios=[3, 1], sharex=True)
    width = bins[0].high - bins[0].low
    centres = [(b.low + b.high) / 2 for b in bins]
    filled = [b for b in bins if b.images]
    ax.bar([(b.low + b.high) / 2 for b in filled], [b.accuracy for b in filled], width=width * 0.95,
           color="tab:blue", label="accuracy in the bin")
    ax.bar([(b.low + b.high) / 2 for b in filled], [b.confidence - b.accuracy for b in filled], width=width * 0.95,
           bottom=[b.accuracy for b in filled], color="tab:red", alpha=0.35, label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(wrap(f"{title}\nreliability: ECE {100 * ece:.2f}% ({len(bins)} equal-width bins)", 4.6, 9),
                 fontsize=9)
    counts.bar(centres, [b.images for b in bins], width=width * 0.95, color="grey")
    counts.set_xlim(0, 1)
    counts.set_xlabel("confidence (top probability)")
    counts.set_ylabel("images")
    fig.tight_layout()
    return fig


def robustness_figure(accuracy: dict[str, list[float]], clean: float, title: str):
    """Accuracy against corruption severity, one line per type, the clean accuracy at severity 0."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=100)
    for name, accs in accuracy.items():
        ax.plot(range(0, len(accs) + 1), [clean, *accs], marker="o", markersize=3, linewidth=1, label=name)
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    ax.set_title(wrap(f"{title}\naccuracy under common corruptions (CIFAR-10-C parameters)", 6.6, 9), fontsize=9)
    fig.tight_layout()
    return fig
