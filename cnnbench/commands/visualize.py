"""``cnnbench-visualize run=<run dir> image=<image file> layer=<module name>``: one image's feature maps.

Loads the run's best checkpoint, preprocesses the image as the run's data was (channels, size, mean/std), and
writes the first 16 maps of the layer as a 4x4 grid PNG (``out=<file>``, default
``<run dir>/figures/visualize_<layer>_<image>.png``). Without ``layer=``, or with a wrong one, it lists the layers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from cnnbench.cli import error_boundary, key_values
from cnnbench.data.build import normalization
from cnnbench.data.decode import read_image
from cnnbench.engine.checkpoint import load_checkpoint
from cnnbench.errors import CnnbenchError
from cnnbench.pictures import capture, feature_grid

USAGE = "usage: cnnbench-visualize run=<run dir or .pt> image=<image file> layer=<module name> [out=<png>]"


def load_image(path: Path, channels: int, size: int, data_cfg) -> torch.Tensor:
    """An image file as the normalised (1, C, size, size) batch the model was trained on."""
    mean, std = normalization(data_cfg, channels)
    x = read_image(path, channels, size)[None].float() / 255.0
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def visualize(run: Path, image: Path, layer: str | None, out: Path | None = None) -> tuple[Path, str]:
    """Write the feature-map grid of ``layer`` for ``image``; return the PNG path and the predicted class."""
    from cnnbench.models import build_from_config

    ckpt_path = run if run.suffix == ".pt" else run / "checkpoints" / "best.pt"
    ckpt = load_checkpoint(ckpt_path)
    if not ckpt.get("config") or not ckpt.get("meta"):
        raise CnnbenchError(f"{ckpt_path} has no config or input description (not written by this cnnbench); "
                            f"give a run directory or a checkpoint that cnnbench wrote")
    cfg, meta = OmegaConf.create(ckpt["config"]), ckpt["meta"]
    model = build_from_config(cfg.model, len(meta["class_names"]), meta["channels"], meta["image_size"])
    model.load_state_dict(ckpt["model"])
    layers = [n for n, m in model.named_modules() if n and not list(m.children())]
    if not layer:
        raise CnnbenchError(f"give layer=<name>; layers: {', '.join(layers)}")
    x = load_image(image, meta["channels"], meta["image_size"], cfg.data)
    maps = capture(model, x, [layer])
    if layer not in maps:
        raise CnnbenchError(f"layer {layer!r} does not output feature maps (B, C, H, W); layers: {', '.join(layers)}")
    model.eval()
    with torch.no_grad():
        logits = model(x)
    predicted = meta["class_names"][int(logits.argmax())]
    run_dir = ckpt_path.parent.parent if run.suffix == ".pt" else run
    out = out or run_dir / "figures" / f"visualize_{layer}_{image.stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    from torchvision.utils import save_image

    save_image(feature_grid(maps[layer][0]), out)
    return out, predicted


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-visualize``."""
    argv = sys.argv[1:] if argv is None else argv
    args = key_values(argv, USAGE, keys={"run", "image", "layer", "out"}, required={"run", "image"}, doc=__doc__)
    with error_boundary():
        out, predicted = visualize(Path(args["run"]), Path(args["image"]), args.get("layer"),
                                   Path(args["out"]) if "out" in args else None)
    print(f"wrote {out} (predicted class: {predicted})")


if __name__ == "__main__":
    main()
