"""Pictures of what a network computes: feature maps, first-layer filters, confusion matrix, mistakes.

Everything goes to TensorBoard and, as PNG files, to ``<run dir>/figures/`` for people who do not open it.
Feature maps come from forward hooks on a few layers while a fixed set of test images (the same every time)
runs through the model; each map is min-max normalised on its own so that weak channels stay visible.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.utils import make_grid, save_image

from cnnbench.errors import CnnbenchError

GRID_CHANNELS = 16  # 4x4 grid per layer
MIN_TILE = 48  # small maps are upsampled (nearest) to at least this many pixels so they are visible


def default_feature_layers(model: nn.Module) -> list[str]:
    """The first conv, then the last block of each stage (or each pooled block of a plain conv stack)."""
    names = dict((m, n) for n, m in model.named_modules())
    first_conv = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    layers = [first_conv] if first_conv else []
    if hasattr(model, "feature_stages"):
        layers += list(model.feature_stages)
    elif isinstance(getattr(model, "stages", None), nn.Sequential):
        layers += [names[stage[-1]] for stage in model.stages if len(stage)]
    elif isinstance(getattr(model, "features", None), nn.Sequential):
        layers += [names[m] for m in model.features if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    return list(dict.fromkeys(layers))


def capture(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
    """Run ``x`` through ``model`` (eval, no grad) and return each named layer's output (B, C, H, W)."""
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        conv_like = [n for n, m in modules.items() if n and not isinstance(m, (nn.Identity,))]
        raise CnnbenchError(f"no layer named {unknown[0]!r}; layers: {', '.join(conv_like)}")
    outputs: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(lambda m, i, o, n=n: outputs.__setitem__(n, o.detach()))
               for n in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {n: o.float().cpu() for n, o in outputs.items() if o.ndim == 4}


def feature_grid(maps: torch.Tensor, channels: int = GRID_CHANNELS) -> torch.Tensor:
    """The first ``channels`` maps of one image's (C, H, W) activations as a 4x4 grid (3, H', W'), each map
    scaled to [0, 1] on its own."""
    maps = maps[:channels].float()
    lo = maps.amin(dim=(1, 2), keepdim=True)
    hi = maps.amax(dim=(1, 2), keepdim=True)
    maps = ((maps - lo) / (hi - lo).clamp_min(1e-8))[:, None]  # (c, 1, H, W)
    if maps.shape[-1] < MIN_TILE:
        maps = F.interpolate(maps, scale_factor=-(-MIN_TILE // maps.shape[-1]), mode="nearest")
    return make_grid(maps, nrow=4, padding=2, pad_value=1.0)


def filter_grid(weight: torch.Tensor, count: int = 64) -> torch.Tensor:
    """First-layer conv filters (O, I, k, k) as a grid: RGB when the input has 3 channels, else channel 0."""
    w = weight[:count].detach().float().cpu()
    w = w if w.shape[1] == 3 else w[:, :1]
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-8)
    w = F.interpolate(w, scale_factor=max(1, 24 // w.shape[-1]), mode="nearest")
    return make_grid(w, nrow=8, padding=2, pad_value=1.0)


def denormalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x * std_t + mean_t).clamp(0, 1)


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(true, predicted) counts."""
    return torch.bincount(labels * num_classes + preds, minlength=num_classes**2).view(num_classes, num_classes)


def confusion_figure(cm: torch.Tensor, class_names: list[str]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * n, 0.8 + 0.5 * n), dpi=100)
    rates = (cm.float() / cm.sum(1, keepdim=True).clamp_min(1)).numpy()
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    return fig


def mistakes_figure(images: torch.Tensor, labels: torch.Tensor, preds: torch.Tensor, class_names: list[str],
                    count: int = 16):
    """A grid of misclassified images (uint8 (N, C, H, W)) titled 'true -> predicted'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrong = (preds != labels).nonzero().flatten()[:count]
    cols = 4
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.8, rows * 2.0), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong.tolist(), strict=False):
        img = images[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None)
        ax.set_title(f"{class_names[labels[i]]} -> {class_names[preds[i]]}", fontsize=7)
    if len(wrong) == 0:
        axes.flat[0].set_title("no misclassified images", fontsize=8)
    fig.tight_layout()
    return fig


class Visualizer:
    """Logs the pictures of one run to a TensorBoard writer and to ``figures/``."""

    def __init__(self, writer, run_dir: Path, model: nn.Module, samples: torch.Tensor, mean: list[float],
                 std: list[float], layers: list[str] | None, class_names: list[str], figures: bool = True) -> None:
        self.writer, self.model = writer, model
        self.samples = samples  # normalised (B, C, H, W) on the model's device
        self.inputs = denormalize(samples.float().cpu(), mean, std)
        self.layers = layers or default_feature_layers(model)
        self.class_names = class_names
        self.fig_dir = run_dir / "figures" if figures else None
        capture(model, samples[:1], self.layers)  # fail now, not mid-training, on a wrong layer name

    def _image(self, tag: str, image: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image, step)
        if self.fig_dir is not None:
            self.fig_dir.mkdir(parents=True, exist_ok=True)
            save_image(image, self.fig_dir / f"{tag.replace('/', '_')}.png")

    def _figure(self, tag: str, fig, step: int) -> None:
        if self.fig_dir is not None:
            self.fig_dir.mkdir(parents=True, exist_ok=True)
            fig.savefig(self.fig_dir / f"{tag.replace('/', '_')}.png")
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step)  # closes the figure
        else:
            import matplotlib.pyplot as plt

            plt.close(fig)

    def log_images(self, step: int) -> None:
        """Input images, the feature maps of the first of them in every chosen layer, first-layer filters."""
        self._image("feature_maps/input", make_grid(self.inputs, nrow=4, padding=2, pad_value=1.0), step)
        for name, out in capture(self.model, self.samples, self.layers).items():
            self._image(f"feature_maps/{name}", feature_grid(out[0]), step)
        first = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None:
            first_name = next(n for n, m in self.model.named_modules() if m is first)
            self._image(f"filters/{first_name}", filter_grid(first.weight), step)

    def log_test(self, preds: torch.Tensor, labels: torch.Tensor, images: torch.Tensor, step: int) -> dict:
        """Confusion matrix, per-class accuracy and a grid of mistakes; returns the per-class accuracies."""
        cm = confusion_matrix(preds, labels, len(self.class_names))
        per_class = {name: 100.0 * cm[i, i].item() / max(cm[i].sum().item(), 1)
                     for i, name in enumerate(self.class_names)}
        if self.writer is not None:
            for name, acc in per_class.items():
                self.writer.add_scalar(f"test/acc/{name}", acc, step)
        self._figure("test/confusion_matrix", confusion_figure(cm, self.class_names), step)
        self._figure("test/misclassified", mistakes_figure(images, labels, preds, self.class_names), step)
        return per_class
