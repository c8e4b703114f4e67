"""``data=webdataset``: images in WebDataset tar shards, streamed.

``data.shards`` (and ``data.val_shards``, ``data.test_shards``) name tar files, brace-expanded
(``train-{000000..000099}.tar``). A sample is the members of one key: an image (``jpg``, ``jpeg``, ``png`` or
``webp``) and its label: ``cls`` (the class index, or its name, as text) or, with ``data.label_key=json``, a
``json`` member's ``label``. The class names come from ``classes.txt`` beside the first shard (one a line, in
index order) or ``data.class_names``. Each shard is indexed once (its members' places, labels and image sizes,
read from the headers; kept in the cache folder, keyed by the shard's size and time), so the pipeline is chosen
from every image's size, as for a folder.

Training streams (``ShardStream``): every epoch the shards are shuffled (by the seed and the epoch) and dealt to
the data-parallel processes so that each gets as many samples as the others can match; each process's DataLoader
workers read their shards front to back through a shuffle buffer of ``data.shuffle_buffer`` samples, decode,
and the batches are cropped, flipped and normalised on the device as streamed folders are. Every sample is seen
once per epoch (but a remainder of less than one batch per process, dropped as training drops a last partial
batch). The order is fixed by the seed, the epoch and ``data.num_workers``: a run resumed mid-epoch replays it
and trains on exactly the batches it had not (the batches before are read and decoded again, not trained on);
with another number of workers the order after the resume differs. Validation and test splits are read in
order, into memory when they fit.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cnnbench.data.decode import fit_shape, probe
from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.data.sources import RawSplits
from cnnbench.data.stream import StreamLoader
from cnnbench.errors import CnnbenchError

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
INDEX_VERSION = 1


def expand(spec: str, key: str) -> list[Path]:
    """The tar files ``spec`` names (brace-expanded, ``~`` and variables expanded); a missing one is one line."""
    from braceexpand import braceexpand

    paths = [Path(os.path.expandvars(p)).expanduser() for p in braceexpand(spec)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CnnbenchError(f"data.{key}={spec}: {len(missing)} of {len(paths)} shards are missing, e.g. {missing[0]}")
    return paths


def _split_key(name: str) -> tuple[str, str]:
    """A member's (sample key, extension), WebDataset's way: the key up to the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def index_shard(path: Path, label_key: str) -> list[dict]:
    """The samples of one shard: key, image member (offset, size), raw label, height and width."""
    samples: dict[str, dict] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = _split_key(member.name)
            entry = samples.setdefault(key, {"key": key})
            if ext in IMAGE_KEYS:
                entry["image"] = (member.offset_data, member.size)
            elif ext == label_key:
                text = tar.extractfile(member).read().decode("utf-8").strip()
                entry["label"] = json.loads(text).get("label") if label_key == "json" else text
    found = [s for s in samples.values() if "image" in s]
    unlabeled = [s["key"] for s in found if s.get("label") is None]
    if unlabeled:
        raise CnnbenchError(f"{path}: sample {unlabeled[0]} has no label (a .{label_key} member; "
                            f"{len(unlabeled)} of {len(found)} samples have none); write shards with cnnbench-data "
                            f"to-webdataset, or set data.label_key")
    if not found:
        raise CnnbenchError(f"{path}: no images ({', '.join(IMAGE_KEYS)} members) in this shard")
    for s in found:
        s["height"], s["width"] = probe(member_name(path, *s["image"]))
    return found


def member_name(path: Path, offset: int, size: int) -> str:
    """The name an image member stands under where file paths stand (``cnnbench.data.members``)."""
    return f"wds:{path}:{offset}:{size}"


def cached_index(path: Path, label_key: str, cache_dir: str | None) -> list[dict]:
    """``index_shard``, kept in ``cache_dir`` keyed by the shard's path, size and modification time."""
    st = path.stat()
    key = hashlib.sha1(json.dumps([INDEX_VERSION, str(path.resolve()), st.st_size, st.st_mtime_ns,
                                   label_key]).encode()).hexdigest()[:16]
    where = Path(cache_dir).expanduser() / "shards" / f"{key}.json" if cache_dir else None
    if where is not None and where.is_file():
        try:
            return json.loads(where.read_text())
        except (OSError, ValueError):
            pass
    samples = index_shard(path, label_key)
    if where is not None:
        from cnnbench.fileio import atomic_write_json

        try:
            atomic_write_json(samples, where)
        except OSError:
            pass  # (a read-only cache only costs time)
    return samples


def class_names(first_shard: Path, given: list[str] | None, labels: list[str]) -> list[str]:
    """``classes.txt`` beside the shards, else ``data.class_names``, else the labels themselves when they are
    class indices (named by their numbers)."""
    listed = first_shard.parent / "classes.txt"
    if listed.is_file():
        return [line.strip() for line in listed.read_text().splitlines() if line.strip()]
    if given:
        return list(given)
    if all(label.isdigit() for label in labels):
        return [str(i) for i in range(max(int(label) for label in labels) + 1)]
    raise CnnbenchError(f"the shards' labels are names ({labels[0]!r}, ...): give the class list as classes.txt "
                        f"beside {first_shard.name} or data.class_names=[...]")


def label_index(raw: object, classes: list[str]) -> int:
    text = str(raw)
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    if text in classes:
        return classes.index(text)
    raise CnnbenchError(f"label {text!r} is neither a class index below {len(classes)} nor a class name "
                        f"({', '.join(classes[:5])}, ...)")


class ShardImageSet(FileImageSet):
    """A FileImageSet whose files are members of shards, read front to back when it trains (``ShardStream``)."""

    def subset(self, index: torch.Tensor | slice) -> ShardImageSet:
        base = super().subset(index)
        return ShardImageSet(base.paths, base.labels, base.channels, base.spec, base.sizes)

    def by_shard(self) -> dict[str, list[int]]:
        """Positions of the samples of each shard, in shard order and file order."""
        groups: dict[str, list[tuple[int, int]]] = {}
        for position, name in enumerate(self.paths):
            shard, offset, _ = name[4:].rsplit(":", 2)
            groups.setdefault(shard, []).append((int(offset), position))
        return {shard: [p for _, p in sorted(items)] for shard, items in sorted(groups.items())}


def fit_sizes(samples: list[dict], size: int) -> torch.Tensor:
    return torch.tensor([fit_shape(s["height"], s["width"], size) for s in samples])


def deal(shards: dict[str, list[int]], world_size: int, seed: int, epoch: int) -> list[list[str]]:
    """The shards of each process in ``epoch``: shuffled by (seed, epoch), then each, largest first, to the
    process holding the fewest samples so far (equal shards: equal shares)."""
    order = sorted(shards)
    random.Random(seed * 100003 + epoch).shuffle(order)
    owned: list[list[str]] = [[] for _ in range(world_size)]
    load = [0] * world_size
    for shard in sorted(order, key=lambda s: -len(shards[s])):
        rank = load.index(min(load))
        owned[rank].append(shard)
        load[rank] += len(shards[shard])
    return [[s for s in order if s in set(mine)] for mine in owned]  # (each in the shuffled order)


class ShardStream(IterableDataset):
    """One process's samples of an epoch: its shards split among the DataLoader's workers, each worker reading
    its shards front to back through a shuffle buffer; yields (position, uint8 image)."""

    def __init__(self, data: ShardImageSet, shards: list[str], groups: dict[str, list[int]], buffer: int,
                 seed: int) -> None:
        self.data = data
        self.shards = shards  # this process's, in this epoch's order
        self.groups = groups  # each shard's sample positions, in file order
        self.buffer = buffer
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[int, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = random.Random(self.seed * 7919 + worker)
        pool: list[int] = []
        for shard in self.shards[worker::workers]:
            for position in self.groups[shard]:
                pool.append(position)
                if len(pool) >= self.buffer:
                    yield self._take(pool, rng)
        while pool:
            yield self._take(pool, rng)

    def _take(self, pool: list[int], rng: random.Random) -> tuple[int, torch.Tensor]:
        i = rng.randrange(len(pool))
        pool[i], pool[-1] = pool[-1], pool[i]
        position = pool.pop()
        return position, self.data.read(self.data.paths[position])


class ShardLoader(StreamLoader):
    """Training batches streamed from shards (``ShardStream``), cropped, augmented and normalised on the device
    as a StreamLoader's; ``len`` is the same for every process."""

    def __init__(self, data: ShardImageSet, batch_size: int, device: torch.device, mean: list[float],
                 std: list[float], *, shuffle_buffer: int = 1000, **kwargs) -> None:
        super().__init__(data, batch_size, device, mean, std, **kwargs)
        self.groups = data.by_shard()
        self.buffer = shuffle_buffer
        self.rank = kwargs.get("rank", 0)
        self.seed = kwargs.get("seed", 0)
        self.batch_size = batch_size
        smallest = min(sum(len(self.groups[s]) for s in mine) for mine in deal(self.groups, self.world_size, 0, 0))
        if smallest < batch_size:
            raise ValueError(f"a process's share of the shards holds {smallest} samples, fewer than a batch of "
                             f"{batch_size}")
        self.steps = smallest // batch_size

    def __len__(self) -> int:
        return self.steps

    @property
    def num_images(self) -> int:
        return self.steps * self.batch_size

    def __iter__(self):
        mine = deal(self.groups, self.world_size, self.seed, self.epoch)[self.rank]
        stream = ShardStream(self.data, mine, self.groups, self.buffer, self.seed * 1000 + self.epoch)
        loader = DataLoader(stream, batch_size=None, num_workers=self.num_workers, persistent_workers=False)
        batch: list[tuple[int, torch.Tensor]] = []
        done = 0
        for sample in loader:
            batch.append(sample)
            if len(batch) < self.batch_size:
                continue
            idx = torch.tensor([p for p, _ in batch], device=self.device)
            x = torch.stack([image for _, image in batch]).to(self.device, non_blocking=True)
            batch = []
            yield self._finish(x, idx, shard=False)
            done += 1
            if done == self.steps:  # (a remainder under one batch waits for the next epoch's order)
                return


def read_webdataset(cfg) -> RawSplits:
    """The shards of ``data.shards`` (and ``val_shards``, ``test_shards``) as image splits (the module's
    docstring): training streamed, validation and test in memory when they fit."""
    from cnnbench.data.folders import overlap_warnings
    from cnnbench.data.pipeline import for_files

    if not cfg.shards:
        raise CnnbenchError('data=webdataset needs data.shards=<tar files>, e.g. \'data.shards="/data/train-'
                            '{000000..000099}.tar"\' (quoted: Hydra reads braces)')
    given = {"train": cfg.shards, "val": cfg.val_shards, "test": cfg.test_shards}
    samples = {}
    for split, spec in given.items():
        if spec:
            shards = expand(spec, "shards" if split == "train" else f"{split}_shards")
            samples[split] = [{**x, "shard": str(p)} for p in shards for x in cached_index(p, cfg.label_key,
                                                                                            cfg.cache_dir)]
    classes = class_names(Path(samples["train"][0]["shard"]), cfg.class_names,
                          [str(x["label"]) for x in samples["train"]])
    pipeline = for_files(cfg, torch.tensor([[x["height"], x["width"]] for xs in samples.values() for x in xs]))
    sets = {split: shard_set(found, classes, cfg.channels, pipeline.train_resize if split == "train" else
                             pipeline.eval_resize) for split, found in samples.items()}
    names = {split: f"the {split} shards" for split in sets}
    notes = tuple(overlap_warnings({split: (s.paths, None, None) for split, s in sets.items()}, names))
    for split in ("val", "test"):
        if split in sets:
            sets[split] = in_memory(sets[split], cfg)
    return RawSplits(sets["train"], sets.get("test"), classes, val=sets.get("val"), per_class=True, notes=notes,
                     pipeline=pipeline)


def shard_set(found: list[dict], classes: list[str], channels: int, spec) -> ShardImageSet:
    """The indexed samples as an image set read through their members' names, stored as ``spec`` says."""
    refs = [member_name(Path(x["shard"]), *x["image"]) for x in found]
    labels = torch.tensor([label_index(x["label"], classes) for x in found], dtype=torch.long)
    return ShardImageSet(refs, labels, channels, spec, fit_sizes(found, spec.size) if spec.mode == "fit" else None)


def in_memory(images: ShardImageSet, cfg) -> ImageSet | ShardImageSet:
    """A validation or test split decoded once into memory when it takes at most ``data.max_memory_gb``."""
    from cnnbench.data.parallel import decode_all

    if len(images) * images.channels * images.spec.size ** 2 > cfg.max_memory_gb * 2**30:
        return images
    return ImageSet(decode_all(images.paths, images.channels, images.spec, cfg.decode_workers), images.labels,
                    images.sizes)
