"""``cnnbench-inspect``: the per-layer anatomy of any configured model, without loading data.

Takes the same overrides as ``cnnbench`` (``cnnbench-inspect model=resnet18 data=cifar10``) and prints, per
leaf layer, its type, output shape, parameters, receptive field and jump, then the totals.
"""

from __future__ import annotations

import sys

from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from cnnbench.anatomy import ModelReport, analyze
from cnnbench.cli import error_boundary
from cnnbench.config import register_configs
from cnnbench.errors import CnnbenchError


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def report_for_config(cfg: DictConfig) -> ModelReport:
    """Build the configured model for the configured data's shape and analyse it."""
    from cnnbench.models import build_from_config

    d = cfg.data
    if d.image_size is None:
        raise CnnbenchError(f"data={d.name} takes its image size from the images; set data.image_size=N to inspect")
    num_classes = d.num_classes or (len(d.class_names) if d.class_names else None)
    if num_classes is None:
        raise CnnbenchError(f"data={d.name} takes its classes from the folders; set data.num_classes=N to inspect")
    model = build_from_config(cfg.model, num_classes, d.channels, d.image_size)
    return analyze(model, (d.channels, d.image_size, d.image_size))


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-inspect``."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print("usage: cnnbench-inspect [group=option ...] [key=value ...]   (the overrides of `cnnbench`)")
        return
    register_configs()
    with error_boundary():
        with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
            cfg = compose(config_name="config", overrides=argv)
        report = report_for_config(cfg)
    d = cfg.data
    print_report(report, f"{cfg.model.name} on {d.channels}x{d.image_size}x{d.image_size} ({d.name})")


if __name__ == "__main__":
    main()
