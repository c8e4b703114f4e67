"""The pictures callback: what the network computes, drawn at a few epochs spread over the run, and the test
charts at the end; to TensorBoard through the reporter and as PNG files to ``<run dir>/figures/``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch import nn

from cnnbench.anatomy import layer_fields
from cnnbench.engine.callbacks import Callback
from cnnbench.evaluation.metrics import confusion_matrix
from cnnbench.evaluation.scores import Scores
from cnnbench.explain.attribution import attribute, default_layer, predicted
from cnnbench.explain.embeddings import penultimate_features
from cnnbench.explain.receptive_field import effective_field
from cnnbench.fileio import save_image
from cnnbench.manifest import own
from cnnbench.pictures.cards import GRID_CHANNELS, feature_card, figure_image, filters_card, inputs_card
from cnnbench.pictures.charts import confusion_figure, mistakes_figure, per_class_figure
from cnnbench.pictures.explain import explanation_card, explanation_title, receptive_field_card
from cnnbench.pictures.layers import capture, default_feature_layers, tags, trace
from cnnbench.tracking import Reporter

if TYPE_CHECKING:
    from cnnbench.engine.trainer import Trainer

MISTAKES = 16
THUMBNAIL = 48  # the projector's sprite: larger test images are shrunk to this side


def snapshot_epochs(epochs: int, snapshots: int) -> list[int]:
    """``snapshots`` epochs spread evenly over a run of ``epochs``: the first, the last and some in between."""
    if snapshots <= 0 or epochs <= 0:
        return []
    if snapshots == 1:
        return [epochs]
    return sorted({1 + round(i * (epochs - 1) / (snapshots - 1)) for i in range(snapshots)})


def denormalize(x: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """Normalised (B, C, H, W) back to [0, 1]: the images as the model sees them, before normalisation."""
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x * std_t + mean_t).clamp(0, 1)


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


class Pictures(Callback):
    """Feature maps, the input images and first-layer filters at the ``snapshot_epochs`` (and at the last epoch
    trained, when a run ends early); the confusion matrix, per-class precision/recall and mistakes after testing.
    With ``explain``: Grad-CAM of the fixed images at each snapshot and of the mistakes, and the receptive fields
    (theoretical and effective) at the start and the end. ``embedding_images`` test images' penultimate features
    go to TensorBoard's projector at the end. ``seconds`` counts all the time spent drawing and writing them."""

    state_key = "pictures"

    def __init__(self, reporter: Reporter, run_dir: Path, model: nn.Module, samples: torch.Tensor,
                 sample_names: list[str], mean: list[float], std: list[float], layers: list[str] | None,
                 class_names: list[str], *, epochs: list[int], figures: bool = True, explain: bool = True,
                 embedding_images: int = 0, normalize: Callable[[torch.Tensor], torch.Tensor]) -> None:
        start = time.perf_counter()
        self.reporter = reporter
        self.model = model
        self.epochs = set(epochs)
        self.samples, self.sample_names = samples, sample_names  # normalised (B, C, H, W) on the model's device
        self.normalize = normalize  # uint8 test images -> the model's input: the test loader's own
        self.inputs = denormalize(samples.float().cpu(), mean, std)
        self.layers = layers or default_feature_layers(model, samples)
        self.traced = trace(model, samples)
        self.tags = tags(self.traced, self.layers)  # fails now, not mid-training, on a wrong layer
        self.class_names = class_names
        self.labels = [class_names.index(n) for n in sample_names]
        self.fig_dir = run_dir / "figures" if figures else None
        self.explain, self.embedding_images = explain, embedding_images
        self.cam_layer = default_layer(model, samples) if explain else None
        self.fields = layer_fields(model, tuple(samples.shape[1:]), self.layers) if explain else {}
        self.seconds = time.perf_counter() - start

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state: dict | None) -> None:
        self.seconds = (state or {}).get("seconds", 0.0)

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.explain and self.epochs and trainer.state.step == 0:
            self.log_receptive_fields(0, "at initialisation")

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if epoch in self.epochs or (self.epochs and trainer.last_epoch):
            self.log_images(trainer.state.step, epoch)
            if self.explain and trainer.last_epoch:
                self.log_receptive_fields(trainer.state.step, f"after training (epoch {epoch})")

    def _write(self, tag: str, image: Image.Image, step: int) -> None:
        self.reporter.image(tag, image, step)
        if self.fig_dir is not None:
            path = self.fig_dir / f"{tag.replace('/', '_').replace(' ', '_')}.png"
            own(self.fig_dir.parent, f"figures/{path.name}")
            self.fig_dir.mkdir(parents=True, exist_ok=True)
            save_image(image, path)

    def log_images(self, step: int, epoch: int) -> None:
        """The input images, the first one's feature maps in every chosen layer, the first-layer filters."""
        start = time.perf_counter()
        when = f"epoch {epoch}, step {step}"
        first = f"test image 1 ({self.sample_names[0]})"
        self._write("feature_maps/00 input", inputs_card(
            self.inputs, self.sample_names, f"input: {len(self.inputs)} fixed test images as the model sees them",
            [f"{when}; the feature maps are of image 1 (framed)"]), step)
        for name, out in capture(self.model, self.samples[:1], self.layers).items():
            tag = self.tags[name]
            shown = min(GRID_CHANNELS, out.shape[1])
            self._write(tag, feature_card(out[0], self.inputs[0], tag.split("/", 1)[1],
                                          [f"first {shown} of {out.shape[1]} channels of {first}, each map scaled "
                                           f"to its own range; {when}"]), step)
        if (conv := first_conv(self.model)) is not None:
            name, module = conv
            shape = "x".join(map(str, module.weight.shape))
            self._write(f"filters/{name} conv {shape}", filters_card(module.weight, f"{name}: first-layer filters "
                                                                     f"{shape}, {when}"), step)
        if self.explain:
            self._write("explain/gradcam", self.gradcam_card(self.samples, self.inputs, self.labels, when), step)
        self.seconds += time.perf_counter() - start

    def gradcam_card(self, x: torch.Tensor, inputs: torch.Tensor, labels: list[int], when: str) -> Image.Image:
        """Grad-CAM of the predicted class for normalised ``x``, over ``inputs`` (the same images in [0, 1])."""
        probs = predicted(self.model, x)
        explanation = attribute(self.model, x, probs.argmax(1), "gradcam", self.cam_layer)
        layer = self.traced[self.cam_layer].label() if self.cam_layer in self.traced else self.cam_layer
        return explanation_card(inputs, explanation, probs, self.class_names, labels,
                                f"{explanation_title(explanation, layer)}: where the evidence for the predicted "
                                "class lies", [f"{when}; bright = more evidence; red caption = a mistake"])

    def log_receptive_fields(self, step: int, when: str) -> None:
        """The theoretical receptive field of each pictured layer as a box, and its effective field measured over
        the fixed images."""
        start = time.perf_counter()
        effective = [effective_field(self.model, self.samples, name) for name in self.fields]
        card = receptive_field_card(self.inputs[0], self.fields, effective, f"receptive fields {when}", [
            "boxes: the theoretical field of the centre unit of each layer; heat maps: its effective field (Luo et "
            f"al. 2016), |d unit / d input| over the {len(self.samples)} fixed images, and the side of the square "
            "holding 95% of it"])
        self._write(f"receptive_field/{'start' if step == 0 else 'end'}", card, step)
        self.seconds += time.perf_counter() - start

    def log_test(self, scores: Scores, per_class: dict[str, dict[str, float]],
                 take: Callable[[torch.Tensor], torch.Tensor], step: int) -> None:
        """The confusion matrix, precision/recall per class and a grid of mistakes (``take``: test images by
        position, uint8)."""
        start = time.perf_counter()
        cm = confusion_matrix(scores.preds, scores.labels, len(self.class_names))
        self._write("test/confusion_matrix", figure_image(confusion_figure(cm, self.class_names)), step)
        self._write("test/per_class", figure_image(per_class_figure(per_class)), step)
        wrong = (scores.preds != scores.labels).nonzero().flatten()
        shown = wrong[:MISTAKES]
        images = take(shown) if len(shown) else torch.zeros(0, 1, 1, 1, dtype=torch.uint8)
        fig = mistakes_figure(images, scores.labels[shown].tolist(), scores.preds[shown].tolist(), self.class_names,
                              total=len(wrong), of=len(scores.labels))
        self._write("test/misclassified", figure_image(fig), step)
        if self.explain and len(shown):
            self._write("test/misclassified_gradcam", self.gradcam_card(
                self.normalize(images.to(self.samples.device)), images.float() / 255, scores.labels[shown].tolist(),
                f"the first {len(shown)} of {len(wrong)} mistakes"), step)
        if self.embedding_images and self.reporter.writer is not None:
            self.log_embeddings(scores, take, step)
        self.seconds += time.perf_counter() - start

    def log_embeddings(self, scores: Scores, take: Callable[[torch.Tensor], torch.Tensor], step: int) -> None:
        """The first ``embedding_images`` test images' penultimate features, labels and thumbnails."""
        shown = torch.arange(min(self.embedding_images, len(scores.labels)))
        images = take(shown)
        features = penultimate_features(self.model, self.normalize(images.to(self.samples.device)))
        thumbnails = images.float() / 255
        if thumbnails.shape[-1] > THUMBNAIL:
            thumbnails = torch.nn.functional.interpolate(thumbnails, size=(THUMBNAIL, THUMBNAIL), mode="bilinear",
                                                         antialias=True).clamp(0, 1)
        rows = [[self.class_names[t], self.class_names[p]] for t, p in zip(
            scores.labels[shown].tolist(), scores.preds[shown].tolist(), strict=True)]
        self.reporter.embedding("test_embeddings", features, rows, ["true", "predicted"],
                                thumbnails.expand(-1, 3, -1, -1), step)
