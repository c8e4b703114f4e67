"""``cnnbench-inspect``: the per-layer anatomy of any configured model, without loading data.

Takes the same overrides as ``cnnbench`` (``cnnbench-inspect model=resnet18 data=cifar10``) and prints, per
leaf layer, its type, output shape, parameters, receptive field and jump, then the totals. It also writes the
receptive-field picture (``out=<png>``, default ``outputs/inspect/receptive_field_<model>_<C>x<size>.png``;
``out=false`` for none): the theoretical field of the centre unit of each pictured layer as a box, and its
effective field at initialisation (the input gradient of that unit over random images) with its measured size.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch import nn

from cnnbench.anatomy import ModelReport, analyze
from cnnbench.cli import error_boundary, output_file
from cnnbench.config import register_configs
from cnnbench.config.checks import check_values
from cnnbench.config.keys import explain_override_error
from cnnbench.errors import CnnbenchError
from cnnbench.fileio import atomic_write


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def model_for_config(cfg: DictConfig) -> nn.Module:
    """The configured model, built for the configured data's shape."""
    from cnnbench.models import build_from_config

    d = cfg.data
    if d.image_size is None:
        raise CnnbenchError(f"data={d.name} takes its image size from the images; set data.image_size=N to inspect")
    num_classes = d.num_classes or (len(d.class_names) if d.class_names else None)
    if num_classes is None:
        raise CnnbenchError(f"data={d.name} takes its classes from the folders; set data.num_classes=N to inspect")
    return build_from_config(cfg.model, num_classes, d.channels, d.image_size)


def report_for_config(cfg: DictConfig) -> ModelReport:
    """Build the configured model for the configured data's shape and analyse it."""
    d = cfg.data
    return analyze(model_for_config(cfg), (d.channels, d.image_size, d.image_size))


def receptive_field_picture(model: nn.Module, cfg: DictConfig, out: Path) -> Path:
    """The theoretical and effective (at initialisation) receptive fields of the pictured layers, as a PNG."""
    from cnnbench.anatomy import layer_fields
    from cnnbench.explain.receptive_field import effective_field
    from cnnbench.pictures.explain import receptive_field_card
    from cnnbench.pictures.layers import default_feature_layers

    d = cfg.data
    shape = (d.channels, d.image_size, d.image_size)
    noise = torch.randn(4 if d.image_size > 64 else 16, *shape, generator=torch.Generator().manual_seed(0))
    layers = default_feature_layers(model, noise[:1])
    fields = layer_fields(model, shape, layers)
    effective = [effective_field(model, noise, name) for name in layers]
    card = receptive_field_card(torch.full(shape, 0.85), fields, effective,
                                f"receptive fields of {cfg.model.name} at {d.channels}x{d.image_size}x"
                                f"{d.image_size}, at initialisation", [
                                    "boxes: the theoretical field of the centre unit of each layer; heat maps: its "
                                    f"effective field (Luo et al. 2016), |d unit / d input| over {len(noise)} random "
                                    "images, and the side of the square holding 95% of it"])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda f: card.save(f, format="PNG"))
    return out


def print_report(report: ModelReport, title: str, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 140)
    table = Table(title=title)
    for col, justify in (("layer", "left"), ("type", "left"), ("output", "right"), ("params", "right"),
                         ("RF", "right"), ("jump", "right")):
        table.add_column(col, justify=justify)
    for layer in report.layers:
        table.add_row(layer.name, layer.type, "x".join(map(str, layer.output_shape)), f"{layer.params:,}",
                      str(layer.receptive_field or "-"), str(layer.jump or "-"))
    console.print(table)
    totals = Table(show_header=False, title="totals")
    totals.add_column(style="bold")
    totals.add_column(justify="right")
    totals.add_row("input", "x".join(map(str, report.input_shape)))
    totals.add_row("parameters", f"{report.params:,}")
    totals.add_row("multiply-accumulates / image", f"{report.macs:,} ({report.macs / 1e9:.3f} GMACs)")
    totals.add_row("activation memory / image (fp32)", _size(report.activation_bytes))
    totals.add_row("parameter memory", _size(report.param_bytes))
    console.print(totals)


def print_matches(cfg: DictConfig, console: Console | None = None) -> None:
    """timm's architectures matching ``model.arch``'s pattern, with parameters and MACs at the run's input
    (built on the meta device: shapes only, no weights in memory)."""
    from cnnbench.anatomy import count_macs
    from cnnbench.models.timm_zoo import MAX_LISTED, architectures

    d = cfg.data
    shape = (d.channels, d.image_size, d.image_size)
    names = architectures(cfg.model.arch)
    if not names:
        raise CnnbenchError(f"no timm architecture matches model.arch={cfg.model.arch}")
    table = Table(title=f"timm architectures matching {cfg.model.arch} at {'x'.join(map(str, shape))} "
                        f"({len(names)}{f', the first {MAX_LISTED}' if len(names) > MAX_LISTED else ''})")
    for column in ("model.arch", "parameters", "MACs"):
        table.add_column(column, justify="left" if column == "model.arch" else "right")
    for name in names[:MAX_LISTED]:
        try:
            with torch.device("meta"):
                model = model_for_config(OmegaConf.merge(cfg, {"model": {"arch": name}}))
            table.add_row(name, f"{sum(p.numel() for p in model.parameters()):,}",
                          f"{count_macs(model, shape) / 1e9:.3f} G")
        except (CnnbenchError, RuntimeError, ValueError, TypeError, AssertionError) as e:
            table.add_row(name, "-", f"not at this size ({type(e).__name__})")
    (console or Console(width=None if Console().is_terminal else 140)).print(table)


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-inspect``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print("usage: cnnbench-inspect [group=option ...] [key=value ...] [out=<png> | out=false]   (the overrides "
              "of `cnnbench`)")
        return
    outs = [a.split("=", 1)[1] for a in argv if a.startswith("out=")]
    argv = [a for a in argv if not a.startswith("out=")]
    out = outs[-1] if outs else None
    if out is not None and out != "false":
        output_file(out, "out", (".png",), overwrite=True)  # (a derived picture: written again on every call)
    register_configs()
    with error_boundary():
        with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
            try:
                cfg = compose(config_name="config", overrides=argv)
            except HydraException as e:  # (a misspelt key: the closest known one)
                explained = explain_override_error(e, argv)
                if explained is None:
                    raise
                raise explained from None
        check_values(cfg)  # (the values training accepts: sizes, finite numbers)
        if cfg.model.name == "timm" and any(c in (cfg.model.arch or "") for c in "*?["):
            print_matches(cfg)
            return
        model = model_for_config(cfg)
        d = cfg.data
        report = analyze(model, (d.channels, d.image_size, d.image_size))
    print_report(report, f"{cfg.model.name} on {d.channels}x{d.image_size}x{d.image_size} ({d.name})")
    if out != "false":
        with error_boundary():
            path = Path(out or f"outputs/inspect/receptive_field_{cfg.model.name}_{d.channels}x{d.image_size}.png")
            print(f"wrote {receptive_field_picture(model, cfg, path)}")


if __name__ == "__main__":
    main()
