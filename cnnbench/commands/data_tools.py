"""``cnnbench-data to-webdataset src=<folder | file lists | Hugging Face dataset> out=<dir> [shard_size=1000]
[shuffle=true] [overwrite=true]``: a user's images written as WebDataset shards that ``data=webdataset`` reads.

``src`` is read as cnnbench reads it: a folder holding train/ (and val/, test/) of class folders, a folder of
file lists (train.csv, ...), or a Hugging Face dataset (a save_to_disk folder, Parquet or Arrow files, or a Hub
name). Each split becomes ``<out>/<split>-000000.tar``, ``-000001.tar``, ... of ``shard_size`` samples: the
image's own bytes (jpg, png, webp; other formats re-encoded as PNG, losslessly) and its class index (``.cls``);
the training samples are shuffled first (seed 0, ``shuffle=false`` keeps their order) so that every shard holds
every class. ``<out>/classes.txt`` lists the classes. Needs the ``webdataset`` extra.
"""

from __future__ import annotations

import io
import random
import sys
from collections.abc import Iterator
from pathlib import Path

from cnnbench.cli import error_boundary, fail, flag, key_values, positive_int
from cnnbench.errors import CnnbenchError

USAGE = ("usage: cnnbench-data to-webdataset src=<folder | file lists | Hugging Face dataset> out=<dir> "
         "[shard_size=1000] [shuffle=true] [overwrite=true]")
KEEP = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "webp": "webp"}  # formats written as they are


def source_splits(src: str) -> tuple[dict[str, list[tuple[object, int]]], list[str]]:
    """``src``'s splits as (image, class index) pairs (a file path, or bytes) and the class names."""
    from cnnbench.data.folders import SPLITS, list_files, read_list, scan_folder

    root = Path(src).expanduser()
    if (root / "dataset_dict.json").is_file() or (root / "state.json").is_file():  # (save_to_disk: train/ too)
        return hf_splits(src)
    if root.is_dir() and (root / "train").is_dir():
        found = {split: scan_folder(root / split) for split in SPLITS if (root / split).is_dir()}
        classes = found["train"][2]
        return {split: list(zip(paths, labels.tolist(), strict=True)) for split, (paths, labels, _) in found.items()
                }, classes
    if root.is_dir() and list_files(root):
        rows = {split: read_list(path) for split, path in list_files(root).items()}
        classes = sorted({label for _, label in rows["train"]})
        return {split: [(p, classes.index(label)) for p, label in entries] for split, entries in rows.items()
                }, classes
    return hf_splits(src)


def hf_splits(src: str) -> tuple[dict[str, list[tuple[object, int]]], list[str]]:
    from cnnbench.data.hf import _datasets, columns, open_dataset, pick_splits

    splits = pick_splits(open_dataset(src), None)
    image, label, classes = columns(splits["train"], None, None)
    datasets = _datasets()
    out = {}
    for split, dataset in splits.items():
        raw = dataset.cast_column(image, datasets.Image(decode=False))
        out[split] = [(cell["bytes"] if cell.get("bytes") is not None else cell["path"], int(y))
                      for cell, y in zip(raw[image], raw[label], strict=True)]
    return out, classes


def encoded(image: object) -> tuple[str, bytes]:
    """(extension, bytes) of an image file or encoded bytes: kept as they are in jpg, png or webp, re-encoded
    losslessly as png otherwise."""
    from PIL import Image

    data = Path(image).read_bytes() if isinstance(image, (str, Path)) else bytes(image)
    with Image.open(io.BytesIO(data)) as img:
        fmt = (img.format or "").lower()
        if fmt in KEEP:
            return KEEP[fmt], data
        buffer = io.BytesIO()
        img.save(buffer, format="PNG")
        return "png", buffer.getvalue()


def write_split(split: str, samples: list[tuple[object, int]], out: Path, shard_size: int) -> int:
    """The samples of one split as ``<out>/<split>-%06d.tar``; how many shards."""
    import webdataset as wds

    with wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for i, (image, label) in enumerate(samples):
            ext, data = encoded(image)
            sink.write({"__key__": f"{split}_{i:08d}", ext: data, "cls": str(label).encode()})
        return sink.shard


def to_webdataset(src: str, out: Path, shard_size: int, shuffle: bool, overwrite: bool) -> Iterator[str]:
    """Write the shards; yield a line per split written."""
    try:
        import webdataset  # noqa: F401
    except ImportError:
        raise CnnbenchError("cnnbench-data to-webdataset needs webdataset: pip install 'cnnbench[webdataset]'"
                            ) from None
    if out.exists() and any(out.glob("*.tar")) and not overwrite:
        raise CnnbenchError(f"out={out} holds .tar files already; give an empty folder or overwrite=true")
    splits, classes = source_splits(src)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    for split, samples in splits.items():
        if shuffle and split == "train":
            random.Random(0).shuffle(samples)
        shards = write_split(split, samples, out, shard_size)
        yield f"{split}: {len(samples)} samples in {shards} shards ({out}/{split}-000000.tar ...)"


def main(argv: list[str] | None = None) -> None:
    """Console entry point of ``cnnbench-data``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + __doc__.strip().replace("``", ""))
        sys.exit(0 if argv else 2)
    if argv[0] != "to-webdataset":
        fail(f"unknown action {argv[0]!r}; {USAGE}")
    args = key_values(argv[1:], USAGE, keys={"src", "out", "shard_size", "shuffle", "overwrite"},
                      required={"src", "out"})
    size = positive_int(args, "shard_size", 1000)
    with error_boundary():
        for line in to_webdataset(args["src"], Path(args["out"]).expanduser(), size, flag(args, "shuffle", True),
                                  flag(args, "overwrite")):
            print(line)
    print(f"classes: {Path(args['out']).expanduser() / 'classes.txt'}")


if __name__ == "__main__":
    main()
