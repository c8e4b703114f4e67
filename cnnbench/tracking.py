"""What a run shows and records: rich console output and TensorBoard scalars.

Named ``tracking`` rather than ``logging`` so it does not shadow the standard library.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table

from cnnbench.manifest import own


class Reporter:
    """Console (rich) and TensorBoard output of one run. Quiet and line-based when not on a terminal."""

    def __init__(self, run_dir: Path, tensorboard: bool = True, progress: bool = True, quiet: bool = False,
                 run_name: str = "run") -> None:
        self.console = Console(highlight=False, soft_wrap=True, quiet=quiet)
        self.live = progress and self.console.is_terminal
        self.run_dir = Path(run_dir)
        self.tensorboard, self.log_dir = tensorboard, tensorboard_dir(self.run_dir, run_name)
        self._writer = None
        self._progress: Progress | None = None
        self._task = None

    @property
    def writer(self):
        """TensorBoard's SummaryWriter (None when off), made at the first write: a run that stops before it
        logs anything leaves no event file."""
        if self._writer is None and self.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            own(self.run_dir, f"{self.log_dir.relative_to(self.run_dir)}/")
            self._writer = SummaryWriter(log_dir=str(self.log_dir))
        return self._writer

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self, message: str) -> None:
        self.console.print(message)

    def print_config(self, yaml_text: str, title: str = "config") -> None:
        self.console.rule(title)
        self.console.print(Syntax(yaml_text.rstrip(), "yaml", theme="ansi_dark", background_color="default"))
        self.console.rule()

    # -- TensorBoard ---------------------------------------------------------------------------------------------
    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def hparams(self, hparams: dict, metrics: list[str], shown: list[str] = ()) -> None:
        """Record the run for TensorBoard's HParams tab. ``metrics`` name scalar tags this run writes (HParams
        shows their last values); unlike ``SummaryWriter.add_hparams``, no second copy of them is written as
        one-point ``hparam/*`` charts. ``shown``: the columns ticked when the tab opens (TensorBoard ticks the
        first five of those its experiment marks as differing, by name; they are marked so). The trial is named
        after the run (its Trial ID column would otherwise start with the run directory's date, and show no more)."""
        if self.writer is not None:
            from tensorboard.plugins.hparams import plugin_data_pb2
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            experiment, start, end = hparams_summary(hparams, dict.fromkeys(metrics, 0.0))
            value = experiment.value[0]
            data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            for info in data.experiment.hparam_infos:
                info.differs = info.name in shown
            value.metadata.plugin_data.content = data.SerializeToString()
            value = start.value[0]
            data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
            data.session_start_info.group_name = f"{self.log_dir.name} ({self.run_dir.name})"
            value.metadata.plugin_data.content = data.SerializeToString()
            for summary in (experiment, start, end):
                self.writer.file_writer.add_summary(summary)

    def image(self, tag: str, image, step: int) -> None:
        """A PIL image (RGB)."""
        if self.writer is not None:
            import numpy as np

            self.writer.add_image(tag, np.asarray(image), step, dataformats="HWC")

    def embedding(self, tag: str, features, rows: list[list[str]], header: list[str], thumbnails, step: int
                  ) -> None:
        """Vectors (N, D) for TensorBoard's projector, a metadata row per vector and thumbnails (N, 3, h, w) in
        [0, 1] for its sprite."""
        if self.writer is not None:
            self.writer.add_embedding(features, metadata=rows, metadata_header=header, label_img=thumbnails,
                                      global_step=step, tag=tag)

    # -- progress --------------------------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if not self.live:
            return
        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"), console=self.console, transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, stats="")

    def advance(self, completed: int, stats: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, stats=stats)

    def end_epoch(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        parts = [f"epoch {epoch:>3}/{epochs}"]
        for key, fmt in (("train/loss", ".4f"), ("train/acc", ".2f"), ("val/loss", ".4f"), ("val/acc", ".2f"),
                         ("test/acc", ".2f"), ("lr", ".3g"), ("train/images_per_s", ",.0f")):
            if key in metrics:
                parts.append(f"{key.replace('train/images_per_s', 'img/s')} {metrics[key]:{fmt}}")
        self.console.print("  ".join(parts))

    def summary(self, results: dict) -> None:
        table = Table(title=f"cnnbench: {results.get('arch') or results['model']} on {results['data']}",
                      show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        rows = [
            ("status", results["status"]),
            ("parameters", f"{results['params']:,}"),
            ("best val acc", _pct(results.get("best_val_acc"))),
            ("test acc", _pct(results.get("test_acc"))),
            ("test loss", f"{results['test_loss']:.4f}" if results.get("test_loss") is not None else "-"),
            ("epochs / steps", f"{results['epochs_completed']}"
                               + (f" of {results['epochs_planned']} planned" if results.get("epochs_planned") else "")
                               + f" / {results['steps']}"),
            ("train time", f"{results['train_time_s']:.1f} s"),
            ("throughput", f"{results['train_images_per_s']:,.0f} img/s"),
            ("compute", f"{results['train_tflops']:.3g} TFLOP/s = {100 * results['mfu']:.1f}% MFU "
                        f"(of a {results['peak_tflops']:.3g} TFLOP/s peak)" if "mfu" in results else "-"),
            ("device / precision", f"{results['device']} / {results['precision']}"),
            ("machine", results.get("machine", "-")),
            ("run dir", results["run_dir"]),
        ]
        for key, value in rows:
            table.add_row(key, str(value))
        self.console.print(table)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._writer is not None:
            self._writer.close()


NAME_LIMIT = 60  # characters: what TensorBoard's run lists show without cutting
UNNAMED = ("trainer.resume", "trainer.overwrite", "hydra.", "logger.", "sweep.")  # never in a name
IN_LABEL = ("model", "model.name", "model.arch")  # said by the name's first part, the model's label


def run_name(model: str, overrides: dict[str, str], keys: list[str] | None = None) -> str:
    """What TensorBoard lists a run as: the model, then the overrides ``keys`` (default: every override that
    changes the result; in a sweep, those the sweep varies) as ``key=value``, with each key shortened to its last
    part where that is unambiguous and each path to its last component: ``resnet18,lr=0.05,root=photos``. At
    most ``NAME_LIMIT`` characters: a longer name keeps its start and ends in a digest of the whole, so names
    stay distinct."""
    keys = [k for k in (overrides if keys is None else keys)
            if k in overrides and not k.startswith(UNNAMED) and k not in IN_LABEL
            and not (k == "data" and "data.root" in overrides)]  # (a folder's name says more than imagefolder)
    last = [k.rsplit(".", 1)[-1] for k in keys]
    parts = [model]
    for key, short in zip(keys, last, strict=True):
        value = overrides[key]
        if "/" in value.rstrip("/"):
            value = Path(value.rstrip("/")).name
        parts.append(re.sub(r"[^\w.=+-]", "_", f"{short if last.count(short) == 1 else key}={value}"))
    name = ",".join(parts)
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha1(",".join([model, *(f"{k}={overrides[k]}" for k in keys)]).encode()).hexdigest()[:8]
    while len(parts) > 1 and len(",".join(parts)) > NAME_LIMIT - 9:  # whole key=value parts give way, never cut
        parts.pop()
    return f"{','.join(parts)[:NAME_LIMIT - 9]}~{digest}"


def tensorboard_dir(run_dir: Path, name: str) -> Path:
    """``<run dir>/tensorboard/<name>``: TensorBoard names a run by its folder, so ``--logdir outputs`` lists
    ``<date>/<time>/tensorboard/<name>``. A resumed run keeps the folder it started with."""
    root = run_dir / "tensorboard"
    existing = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return existing[0] if len(existing) == 1 else root / name


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"
