"""Generate the architecture table of docs/models.md: every registered model at CIFAR size (3x32x32, 10 classes).

    python -m scripts.docs.model_table            # print the table
    python -m scripts.docs.model_table --write   # also replace the table between the markers in docs/models.md
"""

from __future__ import annotations

import argparse

import torch

from cnnbench.anatomy import analyze
from cnnbench.models import build_model, list_models
from scripts.runs import ROOT, write_between_markers

# name prefix -> (year, key idea)
FAMILIES = {
    "lenet5": (1998, "tanh convs + average pooling, 6/16 maps, 120-84 FC"),
    "alexnet": (2012, "ReLU, dropout, overlapping max pooling, 5 conv + 3 FC"),
    "vgg": (2014, "only 3x3 convs, depth 11-19"),
    "googlenet": (2014, "Inception: parallel 1x1/3x3/5x5/pool, 1x1 bottlenecks"),
    "resnet": (2015, "identity shortcuts; basic (18/34) and bottleneck (50+) blocks"),
    "small_resnet": (2015, "the CIFAR reference ResNet: 3 stages of 2 basic blocks"),
    "se_resnet": (2017, "squeeze-and-excitation channel attention on residual blocks"),
    "efficientnet": (2019, "MBConv + SE + SiLU, compound scaling of depth/width/resolution"),
    "vit": (2020, "patches as tokens, class token, pre-norm transformer encoder"),
    "airbench": (2024, "CIFAR speedrun net: conv-pool-BN-GELU groups, no shortcuts"),
}


def family(name: str) -> tuple[int, str]:
    for prefix in sorted(FAMILIES, key=len, reverse=True):
        if name.startswith(prefix):
            return FAMILIES[prefix]
    raise KeyError(name)


def table() -> str:
    rows = ["| model | year | key idea | parameters | MACs / image |", "|---|---|---|---:|---:|"]
    entries = []
    for name in list_models(include_zoos=False):  # our implementations
        torch.manual_seed(0)
        report = analyze(build_model(name, num_classes=10, in_channels=3, image_size=32), (3, 32, 32))
        year, idea = family(name)
        entries.append((year, report.params, name, idea, report.macs))
    for year, params, name, idea, macs in sorted(entries):
        rows.append(f"| `{name}` | {year} | {idea} | {params / 1e6:.2f} M | {macs / 1e6:,.0f} M |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/models.md in place")
    args = parser.parse_args()
    text = table()
    print(text)
    if args.write:
        write_between_markers(ROOT / "docs" / "models.md", "model-table", text)


if __name__ == "__main__":
    main()
