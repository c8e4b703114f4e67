"""``data=hf``: a Hugging Face dataset as image data, read like a folder of photos.

``data.path`` is a Hub name (downloaded when online; offline, the local cache only, with the Hub's offline mode)
or a local folder: a ``save_to_disk`` output, or Parquet or Arrow files (splits from their names, as
``datasets.load_dataset`` finds them). Splits are found by their usual names (``train``; ``validation``,
``valid`` or ``val``; ``test``) or mapped with ``data.split_map`` (``data.split_map.train=my_train``); the
image and label columns are the dataset's one ``Image`` feature and one ``ClassLabel`` feature (class names from
it), or ``data.image_column`` and ``data.label_column``. The images are then what a folder's files are: their
sizes decide the pipeline, they are decoded once on every core into the cache (or streamed when large), with the
same checks (classes, held-out images that are training images, splits carved when absent). Needs the ``hf``
extra (``pip install 'cnnbench[hf]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import cnnbench.data.members as members
from cnnbench.data.folders import layout
from cnnbench.data.sources import RawSplits
from cnnbench.errors import CnnbenchError

SPLIT_NAMES = {"train": ("train",), "val": ("validation", "valid", "val"), "test": ("test",)}


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise CnnbenchError("data=hf needs Hugging Face's datasets: pip install 'cnnbench[hf]'") from None
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def open_dataset(path: str) -> Any:
    """The DatasetDict at ``path``: a local save_to_disk folder, a folder of Parquet or Arrow files, or a Hub
    name (from the local cache when offline)."""
    datasets = _datasets()
    local = Path(path).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            found = datasets.load_from_disk(str(local))
        elif local.exists():
            found = datasets.load_dataset(str(local))
        else:
            found = datasets.load_dataset(path)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as e:
        if local.exists():
            raise CnnbenchError(f"data.path={path}: not a dataset datasets can read ({type(e).__name__}: "
                                f"{str(e).splitlines()[0][:160]})") from None
        raise CnnbenchError(f"data.path={path}: no local folder of that name, and the Hub dataset {path} is not in "
                            f"the local Hugging Face cache {datasets.config.HF_DATASETS_CACHE} (offline, or no "
                            f"such dataset); fetch it once online, or give a folder") from None
    return found if isinstance(found, datasets.DatasetDict) else datasets.DatasetDict({"train": found})


def pick_splits(found: Any, split_map: dict | None) -> dict[str, Any]:
    """cnnbench's splits (train, val, test) from the dataset's, by their usual names or ``data.split_map``."""
    names = list(found)
    split_map = {k: v for k, v in (split_map or {}).items() if v is not None}
    chosen = {}
    for split, usual in SPLIT_NAMES.items():
        wanted = split_map.get(split)
        if wanted is not None and wanted not in names:
            raise CnnbenchError(f"data.split_map.{split}={wanted}: the dataset has no such split; its splits: "
                                f"{', '.join(names)}")
        name = wanted or next((n for n in usual if n in names), None)
        if name is not None:
            chosen[split] = found[name]
    unknown = sorted(set(split_map) - set(SPLIT_NAMES))
    if unknown:
        raise CnnbenchError(f"data.split_map.{unknown[0]}: cnnbench's splits are train, val and test")
    if "train" not in chosen:
        raise CnnbenchError(f"the dataset has no train split (its splits: {', '.join(names)}); map one with "
                            f"data.split_map.train=<split>")
    return chosen


def columns(dataset: Any, image: str | None, label: str | None) -> tuple[str, str, list[str]]:
    """The image column, the label column and the class names: given, or the one Image and the one ClassLabel
    feature; anything ambiguous or missing is one line listing the columns."""
    datasets = _datasets()
    features = dataset.features
    listing = ", ".join(f"{k} ({type(v).__name__})" for k, v in features.items())
    images = [k for k, v in features.items() if isinstance(v, datasets.Image)]
    labels = [k for k, v in features.items() if isinstance(v, datasets.ClassLabel)]
    image = image or (images[0] if len(images) == 1 else None)
    label = label or (labels[0] if len(labels) == 1 else None)
    if image is None or image not in features or not isinstance(features[image], datasets.Image):
        raise CnnbenchError(f"data=hf: {'no' if not images else 'more than one'} image column to take; its columns: "
                            f"{listing}; name it with data.image_column=<an Image column>")
    if label is None or label not in features or not isinstance(features[label], datasets.ClassLabel):
        raise CnnbenchError(f"data=hf: {'no' if not labels else 'more than one'} class-label column to take; its "
                            f"columns: {listing}; name it with data.label_column=<a ClassLabel column>")
    return image, label, list(features[label].names)


def read_hf(cfg: DictConfig) -> RawSplits:
    """The dataset at ``data.path`` as image splits (the module's docstring)."""
    if not cfg.path:
        raise CnnbenchError("data=hf needs data.path=<a Hub dataset name, or a folder: save_to_disk output, Parquet "
                            "or Arrow files>")
    splits = pick_splits(open_dataset(cfg.path), OmegaConf.to_container(cfg.split_map) if cfg.split_map else None)
    image, label, classes = columns(splits["train"], cfg.image_column, cfg.label_column)
    datasets = _datasets()
    found, names = {}, {}
    for split, dataset in splits.items():
        image_now, label_now, classes_now = columns(dataset, image, label)
        if classes_now != classes:
            raise CnnbenchError(f"data=hf: the {split} split's classes differ from train's ({len(classes_now)} "
                                f"against {len(classes)})")
        number = members.register(dataset.cast_column(image_now, datasets.Image(decode=False)), image_now)
        found[split] = ([f"hf:{number}:{row}" for row in range(len(dataset))],
                        torch.tensor(dataset[label_now], dtype=torch.long), classes)
        names[split] = f"the {dataset.split or split} split"
    return layout(cfg, found, names)


def fingerprint(cfg: DictConfig) -> str:
    """What names the dataset's content, for the decoded-image cache: each split's Arrow fingerprint."""
    found = open_dataset(cfg.path)
    splits = {name: getattr(found[name], "_fingerprint", None) for name in found}
    where = os.path.abspath(os.path.expanduser(cfg.path)) if Path(cfg.path).expanduser().exists() else cfg.path
    return hashlib.sha1(json.dumps([where, splits], sort_keys=True).encode()).hexdigest()
