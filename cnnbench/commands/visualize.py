"""``cnnbench-visualize run=<run dir> image=<image file> layer=<module name>``: one image's feature maps;
``cnnbench-visualize run=<run dir> explain=<method> [images=...] [target=...] [layer=...]``: why it decides.

Loads the run's best checkpoint, preprocesses the image as the run's data was (channels, size, mean/std), and
writes a captioned PNG (``out=<file>``, default ``<run dir>/figures/visualize_<layer>_<image>.png``; a checkpoint
outside a run directory needs ``out=``; an existing ``out=`` is replaced only with ``overwrite=true``): the input
as the model saw it, the first 16 maps of the layer as a 4x4 grid, the layer's kind and output shape, and the
model's top-k classes (``top_k=3``), which are also printed. Without ``layer=``, or with a wrong one, it lists
every block and layer that outputs feature maps, in network order, with its kind and output shape.

With ``explain=gradcam|saliency|integrated_gradients|occlusion`` it writes an attribution card instead
(``<run dir>/figures/visualize_explain_<method>_<target>[_<hash of images and layer>].png`` by default, never
a picture that training wrote): each image as the model saw it beside the map over it,
with the predicted class and probability. ``images=`` takes a file, a folder or a glob (default: 8 of the run's
test images, the first of each class first, with their true classes); ``target=predicted`` (default), ``true``
or a class name picks the class explained; ``layer=`` sets Grad-CAM's layer (default: the end of the last
convolutional stage).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import torch

from cnnbench.cli import error_boundary, fail, flag, key_values, output_file, positive_int
from cnnbench.errors import CnnbenchError
from cnnbench.explain.attribution import METHODS, attribute, predicted
from cnnbench.fileio import save_image
from cnnbench.finished_run import FinishedRun, load_finished_run
from cnnbench.manifest import own
from cnnbench.pictures import capture, denormalize, trace
from cnnbench.pictures.cards import GRID_CHANNELS, feature_card
from cnnbench.pictures.explain import explanation_card, explanation_title

USAGE = ("usage: cnnbench-visualize run=<run dir or .pt> image=<image file> layer=<module name> [top_k=3] "
         "[out=<png> [overwrite=true]]\n       cnnbench-visualize run=<run dir or .pt> explain=<method> "
         "[images=<file | folder | glob>] [target=predicted|true|<class>] [layer=<module name>] [out=<png>]\n"
         "       (either form: [allow_unfinished=true] to read a run that is training or did not complete)")
EXPLAINED = 8  # the run's test images explained when no images= is given


def layer_table(traced: dict) -> str:
    """The blocks and layers that output feature maps, in network order: name, kind and output shape."""
    width = max(len(name) for name in traced) + 2
    rows = [f"{'layer':<{width}}{'kind':<12}output (C x H x W)"]
    rows += [f"{name:<{width}}{info.kind:<12}{'x'.join(map(str, info.shape))}"
             for name, info in sorted(traced.items(), key=lambda item: item[1].order)]
    return "\n".join(rows)


def visualize(run: Path, image: Path, layer: str | None, out: Path | None = None, top_k: int = 3,
              allow_unfinished: bool = False) -> tuple[Path, list[tuple[str, float]]]:
    """Write the feature-map card of ``layer`` for ``image``; return the PNG path and the top-k classes with
    their probabilities."""
    trained = load_finished_run(run, allow_unfinished)
    cfg = trained.cfg
    spec = trained.spec
    model = trained.model
    names = trained.class_names
    x = spec.transforms()(image)[None]
    traced = trace(model, x)
    if not layer or layer not in traced:
        print(layer_table(traced))
        known = dict(model.named_modules())
        raise CnnbenchError("give layer=<name>, one of the blocks and layers listed above" if not layer else
                            f"no layer named {layer!r}; give one listed above" if layer not in known else
                            f"layer {layer!r} does not output feature maps (B, C, H, W); give one listed above")
    maps = capture(model, x, [layer])
    model.eval()
    with torch.no_grad():
        probs = model(x).float().softmax(1)[0]
    values, indices = probs.topk(min(top_k, len(names)))
    top = [(names[i], 100.0 * p) for p, i in zip(values.tolist(), indices.tolist(), strict=True)]
    in_run = out is None
    out = trained.output(out, f"figures/visualize_{layer}_{image.stem}.png")
    if in_run:
        own(trained.run_dir, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = denormalize(x, spec.mean, spec.std)[0]
    layer_info = traced[layer]
    predicted = ", ".join(f"{name} {p:.1f}%" for name, p in top)
    card = feature_card(maps[layer][0], seen, f"{layer_info.label()} of {image.name}", [
        f"first {min(GRID_CHANNELS, layer_info.shape[0])} of {layer_info.shape[0]} channels, each scaled to its "
        f"own range; input as the model sees it ({spec.image_size} px, un-normalised)",
        f"top {len(top)}: {predicted}   (model {cfg.model.name}, {trained.checkpoint.name} at step {trained.step})"])
    save_image(card, out)
    return out, top


def explained_images(trained: FinishedRun, images: str | None) -> tuple[torch.Tensor, list[int] | None, str]:
    """Normalised images to explain, their true classes when known, and what they are: ``images=``'s files, or
    the run's first test images."""
    from cnnbench.commands.evaluate import eval_loader
    from cnnbench.commands.predict import image_files

    if images:
        files = image_files(images)[:EXPLAINED * 2]
        transform = trained.spec.transforms()
        x = torch.stack([transform(f) for f in files])
        return x, None, ", ".join(f.name for f in files)
    loader = eval_loader(trained, "test", None, {}, EXPLAINED, torch.device("cpu"))
    labels = loader.labels.cpu()
    first = [int((labels == c).nonzero()[0]) for c in labels.unique().tolist()][:EXPLAINED]  # one per class
    rest = [i for i in range(len(labels)) if i not in set(first)][:EXPLAINED - len(first)]
    index = torch.tensor(sorted(first + rest))
    x = loader.normalize(loader.images(index)).contiguous()
    return x, labels[index].tolist(), f"the run's first test image of {len(first)} classes" + (
        f" and {len(rest)} more" if rest else "")


def target_classes(target: str, probs: torch.Tensor, labels: list[int] | None, names: list[str]) -> list[int]:
    """The class each map explains: the predicted one, the true one or a named class."""
    if target == "predicted":
        return probs.argmax(1).tolist()
    if target == "true":
        if labels is None:
            raise CnnbenchError("target=true needs images with known classes: leave out images= to explain the "
                                "run's test images, or use target=predicted or a class name")
        return labels
    if target not in names:
        raise CnnbenchError(f"target={target} is not predicted, true or one of the run's classes: "
                            f"{', '.join(names[:20])}")
    return [names.index(target)] * len(probs)


def explain_name(method: str, target: str, images: str | None, layer: str | None) -> str:
    """The default file of an attribution card: named after its settings (the images and layer as a hash), so
    that no setting replaces another's card or training's ``figures/explain_*.png``."""
    name = f"visualize_explain_{method}_" + re.sub(r"[^\w.-]", "_", target)
    if images or layer:
        name += "_" + hashlib.sha1(json.dumps([images, layer]).encode()).hexdigest()[:8]
    return f"figures/{name}.png"


def explain(run: Path, method: str, images: str | None = None, target: str = "predicted", layer: str | None = None,
            out: Path | None = None, allow_unfinished: bool = False) -> Path:
    """Write the ``method`` attribution card for ``images`` (default: the run's first test images)."""
    trained = load_finished_run(run, allow_unfinished)
    x, labels, what = explained_images(trained, images)
    probs = predicted(trained.model, x)
    explanation = attribute(trained.model, x, target_classes(target, probs, labels, trained.class_names), method,
                            layer)
    in_run = out is None
    out = trained.output(out, explain_name(method, target, images, layer))
    if in_run:
        own(trained.run_dir, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seen = denormalize(x, trained.spec.mean, trained.spec.std)
    card = explanation_card(seen, explanation, probs, trained.class_names, labels,
                            f"{explanation_title(explanation)} of the {target} class", [
                                f"{what}; bright = the class score depends more on it; red caption = a mistake",
                                f"model {trained.cfg.model.name}, {trained.checkpoint.name} at step {trained.step}"])
    save_image(card, out)
    return out


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-visualize``."""
    argv = sys.argv[1:] if argv is None else argv
    args = key_values(argv, USAGE, keys={"run", "image", "images", "layer", "out", "overwrite", "top_k", "explain",
                                         "target", "allow_unfinished"}, required={"run"}, doc=__doc__)
    unfinished = flag(args, "allow_unfinished")
    top_k = positive_int(args, "top_k", 3)
    out = output_file(args["out"], "out", (".png", ".jpg", ".jpeg"), flag(args, "overwrite")) if "out" in args else None
    if "explain" in args:
        if args["explain"] not in METHODS:
            fail(f"explain={args['explain']} is not a method; choose one of {', '.join(METHODS)}")
        with error_boundary():
            out = explain(Path(args["run"]), args["explain"], args.get("images") or args.get("image"),
                          args.get("target", "predicted"), args.get("layer"), out, unfinished)
        print(f"wrote {out}")
        return
    if "image" not in args:
        fail("give image=<image file> (its feature maps) or explain=<method> (why the model decides)")
    with error_boundary():
        out, top = visualize(Path(args["run"]), Path(args["image"]), args.get("layer"), out, top_k, unfinished)
    print(f"wrote {out}")
    for name, p in top:
        print(f"  {p:5.1f}%  {name}")


if __name__ == "__main__":
    main()
