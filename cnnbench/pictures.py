"""Pictures of what a network computes: feature maps, first-layer filters, confusion matrix, mistakes.

Everything goes to TensorBoard and, as PNG files, to ``<run dir>/figures/`` for people who do not open it.
Feature maps come from forward hooks on a few layers while a fixed set of test images (the same every time)
runs through the model; each map is min-max normalised on its own so that weak channels stay visible.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from cnnbench.engine.callbacks import Callback
from cnnbench.engine.evaluate import Scores, confusion_matrix
from cnnbench.errors import CnnbenchError
from cnnbench.tracking import Reporter

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer


def make_grid(images: torch.Tensor, **kwargs) -> torch.Tensor:
    """torchvision's ``make_grid``, imported when first drawn (torchvision.utils costs seconds at start-up)."""
    from torchvision.utils import make_grid as grid

    return grid(images, **kwargs)

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


class Pictures(Callback):
    """Feature maps, input images and first-layer filters at the end of every ``every``-th epoch (and of the
    last one); the confusion matrix and mistakes after testing. To TensorBoard through the reporter, and as
    PNG files to ``<run dir>/figures/`` when ``figures``. ``seconds`` counts the time spent drawing."""

    state_key = "pictures"

    def __init__(self, reporter: Reporter, run_dir: Path, model: nn.Module, samples: torch.Tensor,
                 mean: list[float], std: list[float], layers: list[str] | None, class_names: list[str], *,
                 every: int = 0, figures: bool = True) -> None:
        self.reporter, self.model, self.every = reporter, model, every
        self.samples = samples  # normalised (B, C, H, W) on the model's device
        self.inputs = denormalize(samples.float().cpu(), mean, std)
        self.layers = layers or default_feature_layers(model)
        self.class_names = class_names
        self.fig_dir = run_dir / "figures" if figures else None
        self.seconds = 0.0
        capture(model, samples[:1], self.layers)  # fail now, not mid-training, on a wrong layer name

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict | None) -> None:
        self.seconds = (state or {}).get("seconds", 0.0)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.every and (trainer.last_epoch or epoch % self.every == 0):
            self.log_images(trainer.state.step)

    def _png(self, tag: str) -> Path | None:
        if self.fig_dir is None:
            return None
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        return self.fig_dir / f"{tag.replace('/', '_')}.png"

    def _image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.reporter.image(tag, image, step)
        if (path := self._png(tag)) is not None:
            from torchvision.utils import save_image

            save_image(image, path)

    def _figure(self, tag: str, fig, step: int) -> None:
        if (path := self._png(tag)) is not None:
            fig.savefig(path)
        self.reporter.figure(tag, fig, step)

    def log_images(self, step: int) -> None:
        """Input images, the feature maps of the first of them in every chosen layer, first-layer filters."""
        start = time.perf_counter()
        self._image("feature_maps/input", make_grid(self.inputs, nrow=4, padding=2, pad_value=1.0), step)
        for name, out in capture(self.model, self.samples, self.layers).items():
            self._image(f"feature_maps/{name}", feature_grid(out[0]), step)
        first = next(((n, m) for n, m in self.model.named_modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None:
            self._image(f"filters/{first[0]}", filter_grid(first[1].weight), step)
        self.seconds += time.perf_counter() - start

    def log_test(self, scores: Scores, per_class_acc: dict[str, float], images: torch.Tensor, step: int) -> None:
        """Per-class accuracy, the confusion matrix and a grid of mistakes (``images``: the test split, uint8)."""
        start = time.perf_counter()
        self.reporter.scalars({f"test/acc/{name}": acc for name, acc in per_class_acc.items()}, step)
        cm = confusion_matrix(scores.preds, scores.labels, len(self.class_names))
        self._figure("test/confusion_matrix", confusion_figure(cm, self.class_names), step)
        self._figure("test/misclassified", mistakes_figure(images, scores.labels, scores.preds, self.class_names),
                     step)
        self.seconds += time.perf_counter() - start
