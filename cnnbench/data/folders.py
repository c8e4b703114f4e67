"""Users' own images: a folder per split (class folders below it) or a list file per split (path and label per
line), in one of three layouts, read into image sets.

Layouts (folders ``train/``, ``val/``, ``test/``, or lists ``train.csv``, ``val.csv``, ``test.csv``):
train + test (+ val: it selects the best checkpoint instead of a part of train), train + val (val is the
reported split; a part of train selects), or train alone (the test and validation parts carved from it, class
by class). Every file's size (from its header) decides the pipeline (``cnnbench.data.pipeline``). The images are
decoded on all cores into memory when they take at most ``data.max_memory_gb`` as uint8; larger sets stay
files and are decoded per batch (``cnnbench.data.stream``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from omegaconf import DictConfig

import cnnbench.data.members as members
from cnnbench.data.batch_decode import decode_batched
from cnnbench.data.decode import IMAGE_EXTENSIONS, fit_shape
from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.data.parallel import decode_all, probe_all
from cnnbench.data.pipeline import for_files
from cnnbench.data.sources import RawSplits
from cnnbench.errors import CnnbenchError

SPLITS = ("train", "val", "test")
LIST_SUFFIXES = {".csv": ",", ".tsv": "\t", ".txt": None}  # None: tab if the line has one, else comma
Scanned = tuple[list[str], torch.Tensor, list[str]]  # paths, labels, class names


def walk_files(folder: Path, skip: set[str] | None = None) -> list[str]:
    """Every file under ``folder`` (sorted), following symbolic links at most once: a directory is entered
    once by its real path, and never when it is in ``skip`` (real paths) or holds ``folder`` itself (a link to
    ``..`` or ``/``), so a link loop adds nothing and a link to another class's folder adds no copies."""
    top = os.path.realpath(folder)
    seen = set(skip or ())
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        inside = real == top or real.startswith(top + os.sep)
        if real in seen or (not inside and top.startswith(real + os.sep)):
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames.sort()
        found.extend(os.path.join(dirpath, f) for f in filenames)
    return sorted(found)


def scan_folder(folder: Path, skipped: list[str] | None = None) -> tuple[list[str], torch.Tensor, list[str]]:
    """The image files of an ImageFolder-style tree (one sub-folder per class, images at any depth below it),
    their labels and the classes, as torchvision's ``ImageFolder`` finds them, except that symbolic links are
    followed at most once (``walk_files``): a file reached twice counts once, under the first class. Names with
    an image suffix that are not regular files (a FIFO, a device: reading one would block) are left out and
    appended to ``skipped``."""
    classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise CnnbenchError(f"{folder}: no class folders; expected one sub-folder per class holding images")
    class_dirs = {os.path.realpath(folder / c) for c in classes} | {os.path.realpath(folder)}
    paths = []
    labels = []
    seen = set()
    for label, name in enumerate(classes):
        own = os.path.realpath(folder / name)
        for path in walk_files(folder / name, skip=class_dirs - {own}):
            real = os.path.realpath(path)
            if not path.lower().endswith(IMAGE_EXTENSIONS):
                continue
            if not os.path.isfile(path):
                if skipped is not None:
                    skipped.append(path)
                continue
            if real not in seen:
                seen.add(real)
                paths.append(path)
                labels.append(label)
    return paths, torch.tensor(labels, dtype=torch.long), classes


def _root(cfg: DictConfig, what: str) -> Path:
    if cfg.root is None:
        raise CnnbenchError(f"data={cfg.name} needs data.root=<folder holding {what}>")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise CnnbenchError(f"data.root={cfg.root} does not exist or is not a folder")
    return root


def read_imagefolder(cfg: DictConfig) -> RawSplits:
    """``data.root`` holding ``train/`` (and ``val/``, ``test/``), each a folder of class folders."""
    root = _root(cfg, "train/ (and test/ or val/)")
    if not (root / "train").is_dir():
        raise CnnbenchError(f"data.root={cfg.root} must hold a train/ folder of class folders (and optionally "
                            f"test/ and val/)")
    skipped: list[str] = []
    found = {split: scan_folder(root / split, skipped) for split in SPLITS if (root / split).is_dir()}
    for split, (_, _, classes) in found.items():
        if classes != found["train"][2]:
            raise CnnbenchError(class_mismatch(found["train"][2], classes, root / "train", root / split))
    notes = (f"skipped {len(skipped)} name(s) with an image suffix that are not regular files (FIFOs, devices), "
             f"e.g. {skipped[0]}",) if skipped else ()
    return layout(cfg, found, {split: f"{split}/" for split in found}, notes)


def class_mismatch(train: list[str], other: list[str], train_dir: Path, other_dir: Path, shown: int = 3) -> str:
    """One line on class folders that differ: the counts and the first few names on each side."""
    only_train = [c for c in train if c not in set(other)]
    only_other = [c for c in other if c not in set(train)]

    def names(found: list[str]) -> str:
        return ", ".join(found[:shown]) + (f" and {len(found) - shown} more" if len(found) > shown else "")

    sides = [f"only in {d.name}/: {names(n)}" for d, n in ((train_dir, only_train), (other_dir, only_other)) if n]
    order = "" if sides else " (the same names, sorted differently)"
    return (f"class folders differ between {train_dir} ({len(train)} classes) and {other_dir} ({len(other)})"
            f"{order}: {'; '.join(sides)}; every split needs the same class folders")


def read_filelist(cfg: DictConfig) -> RawSplits:
    """``data.root`` holding ``train.csv`` (and ``val.csv``, ``test.csv``; or .tsv, .txt): one image per line,
    ``path,label`` (a header line ``path,label`` is skipped), paths relative to the list's folder."""
    root = _root(cfg, "train.csv (and test.csv or val.csv)")
    lists = list_files(root)
    if "train" not in lists:
        raise CnnbenchError(f"data.root={cfg.root} must hold train.csv (or .tsv, .txt: path,label per line) and "
                            f"optionally test.csv and val.csv")
    rows = {split: read_list(path) for split, path in lists.items()}
    one_label_each(rows, lists)
    classes = sorted({label for _, label in rows["train"]})
    index = {name: i for i, name in enumerate(classes)}
    found = {}
    for split, entries in rows.items():
        unknown = sorted({label for _, label in entries} - index.keys())
        if unknown:
            raise CnnbenchError(f"{lists[split]}: label {unknown[0]!r} is not a label of {lists['train'].name}; "
                                f"its labels: {', '.join(classes)}")
        found[split] = ([p for p, _ in entries], torch.tensor([index[label] for _, label in entries]), classes)
    return layout(cfg, found, {split: path.name for split, path in lists.items()})


def one_label_each(rows: dict[str, list[tuple[str, str]]], lists: dict[str, Path]) -> None:
    """Refuse an image (by real path) that the lists give two labels: it would teach both, and score as both."""
    seen: dict[str, tuple[str, str]] = {}
    for split, entries in rows.items():
        for path, label in entries:
            first = seen.setdefault(os.path.realpath(path), (label, lists[split].name))
            if first[0] != label:
                raise CnnbenchError(f"{path} is listed with two labels ({first[0]!r} in {first[1]}, {label!r} in "
                                    f"{lists[split].name}); an image has one label: correct the lists")


def list_files(root: Path) -> dict[str, Path]:
    """The list file of each split that ``root`` holds (``train.csv`` or .tsv or .txt, and so on)."""
    lists = {split: next((root / f"{split}{suffix}" for suffix in LIST_SUFFIXES if (root / f"{split}{suffix}")
                          .is_file()), None) for split in SPLITS}
    return {split: path for split, path in lists.items() if path is not None}


def read_list(path: Path) -> list[tuple[str, str]]:
    """The (image path, label) rows of a list file; each path made absolute and checked to exist."""
    delimiter = LIST_SUFFIXES[path.suffix]
    rows = []
    try:
        lines = path.read_bytes().decode("utf-8-sig").splitlines()  # (the byte-order mark spreadsheets write)
    except UnicodeDecodeError as e:
        raise CnnbenchError(f"{path} is not UTF-8 text (byte {e.start}); save the list as UTF-8") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        sep = delimiter or ("\t" if "\t" in line else ",")
        fields = [x.strip() for x in next(csv.reader([line], delimiter=sep))]
        if number == 1 and [x.lower() for x in fields[:2]] == ["path", "label"]:
            continue
        if len(fields) != 2 or not all(fields):
            raise CnnbenchError(f"{path} line {number}: expected path{sep}label, got {line.strip()!r}")
        image = Path(fields[0]) if Path(fields[0]).is_absolute() else path.parent / fields[0]
        if not image.is_file():
            what = "not a regular file:" if image.exists() else "no file"
            raise CnnbenchError(f"{path} line {number}: {what} {image}")
        rows.append((str(image), fields[1]))
    if not rows:
        raise CnnbenchError(f"{path}: no images listed")
    return rows


def layout(cfg: DictConfig, found: dict[str, Scanned], names: dict[str, str], notes: tuple[str, ...] = ()
            ) -> RawSplits:
    """Image sets for the splits ``found`` (named ``names`` on the console), and which selects and which is
    reported."""
    for split, (paths, _, _) in found.items():
        if not paths:
            where = f"data.root={cfg.root}" if cfg.root else f"data.path={cfg.get('path')}"
            raise CnnbenchError(f"{where}: no images in {names[split]}")
    every = [p for paths, _, _ in found.values() for p in paths]
    shapes = probe_all(every, cfg.decode_workers)  # (N, 2): the whole data set decides, never one file
    pipeline = for_files(cfg, shapes)
    shapes = dict(zip(found, shapes.split([len(found[s][0]) for s in found]), strict=True))
    files = {}
    for split, (paths, labels, _) in found.items():
        spec = pipeline.train_resize if split == "train" else pipeline.eval_resize
        sizes = None
        if spec.mode == "fit":  # where each photo lies on its canvas
            sizes = torch.tensor([fit_shape(h, w, spec.size) for h, w in shapes[split].tolist()])
        files[split] = FileImageSet(paths, labels, cfg.channels, spec, sizes)
    gigabytes = sum(len(f) * cfg.channels * f.spec.size ** 2 for f in files.values()) / 2**30
    if gigabytes <= cfg.max_memory_gb:
        # Decode everything now. A file that is not a readable image stops the run with its path: silently
        # training on fewer images would hide a broken data set.
        files = {split: ImageSet(_decode(f, cfg), f.labels, f.sizes) for split, f in files.items()}
    elif cfg.decode_device != "cpu":
        notes += (f"data.decode_device={cfg.decode_device} decodes folders held in memory: this one "
                  f"({gigabytes:.1f} GB decoded) streams, decoded by DataLoader workers on the CPU",)
    train = names["train"]
    if "test" in files:
        test, val = files["test"], files.get("val")
        notes += (f"{names['test']} is the reported split; {names['val'] if val else 'data.val_fraction of ' + train}"
                 f" selects the best checkpoint",)
    elif "val" in files:
        test, val = files["val"], None
        notes += (f"no test split: {names['val']} is the reported (test) split, never used to select; "
                 f"data.val_fraction of {train} selects the best checkpoint",)
    else:
        test = val = None
        notes += (f"{train} alone: data.test_fraction={cfg.test_fraction} of each class is the reported split and "
                 f"data.val_fraction={cfg.val_fraction} of the rest selects (fixed by data.split_seed)",)
    notes += tuple(overlap_warnings(found, names))
    return RawSplits(files["train"], test, found["train"][2], val=val, per_class=True, notes=notes, pipeline=pipeline)


def _decode(files: FileImageSet, cfg: DictConfig) -> torch.Tensor:
    """Every image of ``files``, decoded as ``data.decode_device`` says (Pillow on every core, or nvJPEG)."""
    if cfg.decode_device == "cpu":
        return decode_all(files.paths, files.channels, files.spec, cfg.decode_workers)
    return decode_batched(files.paths, files.channels, files.spec, torch.device(cfg.decode_device))


def overlap_warnings(found: dict[str, Scanned], names: dict[str, str]) -> list[str]:
    """A warning for each held-out split whose images are also training images: the same file (by real path) or
    the same bytes (files of equal size compared by digest, so only likely twins are read)."""
    train = found["train"][0]
    warnings = []
    for split in ("val", "test"):
        held = found.get(split, ([], None, None))[0]
        same_file, same_bytes = shared_files(train, held)
        if same_file or same_bytes:
            warnings.append(overlap_warning(names[split], len(held), same_file, same_bytes, "bytes"))
    return warnings


def overlap_warning(name: str, held: int, same_file: int, same_content: int, content: str) -> str:
    return (f"warning: {same_file + same_content} of {held} images in {name} are also training images "
            f"({same_file} the same file, {same_content} the same {content}): its scores overstate how well the "
            f"model generalises")


def shared_files(train: list[str], held: list[str]) -> tuple[int, int]:
    """How many of ``held`` are files of ``train`` (by real path; a container's member by its name), and how many
    others have the bytes of one (equal sizes compared by digest, so only likely twins are read)."""
    real = {members.identity(p) for p in train}
    by_size: dict[int, list[str]] = {}
    for p in train:
        by_size.setdefault(members.size(p), []).append(p)
    digests: dict[str, str] = {}

    def digest(path: str) -> str:
        if path not in digests:
            digests[path] = members.digest(path)
        return digests[path]

    same_file = same_bytes = 0
    for p in held:
        if members.identity(p) in real:
            same_file += 1
        elif any(digest(p) == digest(t) for t in by_size.get(members.size(p), ())):
            same_bytes += 1
    return same_file, same_bytes
