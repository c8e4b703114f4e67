"""Data where users keep it: Hugging Face datasets and WebDataset shards read with the folder's pipeline, the
shards written by cnnbench-data, and streaming that shows every image once per epoch to every process."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from cnnbench.data import load_data
from cnnbench.errors import CnnbenchError

datasets = pytest.importorskip("datasets")
pytest.importorskip("webdataset")

QUIET = ["logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.print_config=false",
         "logger.progress=false"]


def as_hf(folder: Path, out: Path) -> Path:
    """A folder of train/ and val/ class folders as a Hugging Face dataset saved to disk (train, validation)."""
    from cnnbench.data.folders import scan_folder

    splits = {}
    for split, name in (("train", "train"), ("val", "validation")):
        paths, labels, classes = scan_folder(folder / split)
        features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=classes)})
        splits[name] = datasets.Dataset.from_dict({"image": paths, "label": labels.tolist()}, features=features)
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return out


def data(*overrides: str):
    return load_data(compose_config(*overrides, "data.cache_dir=null").data)


@pytest.fixture(scope="module")
def photos(hymenoptera: Path, tmp_path_factory) -> dict[str, Path]:
    """The hymenoptera photos as a folder, as a Hugging Face dataset on disk and as shards."""
    from cnnbench.commands.data_tools import main as data_main

    tmp = tmp_path_factory.mktemp("sources")
    hf = as_hf(hymenoptera, tmp / "hf")
    data_main(["to-webdataset", f"src={hymenoptera}", f"out={tmp / 'shards'}", "shard_size=32"])
    return {"folder": hymenoptera, "hf": hf, "shards": tmp / "shards"}


def shard_args(shards: Path) -> list[str]:
    trains = sorted(shards.glob("train-*.tar"))
    vals = sorted(shards.glob("val-*.tar"))
    return ["data=webdataset", f'data.shards="{shards}/train-{{{0:06d}..{len(trains) - 1:06d}}}.tar"',
            f'data.test_shards="{shards}/val-{{{0:06d}..{len(vals) - 1:06d}}}.tar"']  # (quoted: Hydra reads braces)


def test_the_same_photos_decode_to_the_same_tensors_from_a_folder_a_dataset_and_shards(photos) -> None:
    """The reported split's images are bit for bit the folder's, read from a Hugging Face dataset on disk and from
    shards the converter wrote (the same files, the same decoding)."""
    folder = data("data=imagefolder", f"data.root={photos['folder']}", "data.image_size=64")
    hf = data("data=hf", f"data.path={photos['hf']}", "data.image_size=64")
    shards = data(*shard_args(photos["shards"]), "data.image_size=64")
    assert folder.class_names == hf.class_names == shards.class_names == ["ants", "bees"]
    assert folder.pipeline == hf.pipeline == shards.pipeline
    assert torch.equal(folder.test.images, hf.test.images) and torch.equal(folder.test.labels, hf.test.labels)
    assert torch.equal(folder.test.images, shards.test.images)
    assert torch.equal(folder.train.images, hf.train.images)  # (the same rows in the same order: the same run)
    assert len(shards.train) + len(shards.val) == len(folder.train) + len(folder.val)


@pytest.mark.slow
def test_a_dataset_trains_as_its_folder_does_and_shards_within_noise(photos, cli, tmp_path: Path) -> None:
    """The same seed and pipeline: from the Hugging Face dataset the run is the folder's, to the digit; from
    shards (another order: streamed through a shuffle buffer) within a few points."""
    common = [*QUIET, "model=small_resnet", "model.widths=[8,16,32]", "data.image_size=64", "trainer.epochs=4"]
    acc = {}
    for source, args in (("folder", ["data=imagefolder", f"data.root={photos['folder']}"]),
                         ("hf", ["data=hf", f"data.path={photos['hf']}"]),
                         ("shards", shard_args(photos["shards"]))):
        proc = cli(*common, *args, f"hydra.run.dir={source}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        acc[source] = json.loads((tmp_path / source / "results.json").read_text())["test_acc"]
    assert acc["hf"] == acc["folder"] and abs(acc["shards"] - acc["folder"]) < 15, acc


def make_shards(out: Path, shards: int, per_shard: int) -> list[Path]:
    """``shards`` tar files of ``per_shard`` 8x8 PNGs with .cls labels (10 classes)."""
    import io

    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = out / f"train-{s:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                key, buffer = f"s{s}_{i:04d}", io.BytesIO()
                Image.new("RGB", (8, 8), (s * 20, i * 3, 7)).save(buffer, format="PNG")
                for ext, payload in (("png", buffer.getvalue()), ("cls", str((s + i) % 10).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        paths.append(path)
    return paths


def test_two_processes_over_eight_shards_see_every_training_image_once_per_epoch(tmp_path: Path) -> None:
    """Dealt to two data-parallel processes, each streaming with two DataLoader workers through a shuffle buffer:
    every image exactly once per epoch, the shares disjoint and equally long, the order new each epoch."""
    from torch.utils.data import DataLoader

    from cnnbench.data.shards import ShardStream, deal

    make_shards(tmp_path, 9, 16)
    (tmp_path / "train-000008.tar").rename(tmp_path / "test.tar")
    d = data("data=webdataset", f'data.shards="{tmp_path}/train-{{000000..000007}}.tar"', "data.val_fraction=0",
             f"data.test_shards={tmp_path}/test.tar")
    train = d.train
    groups = train.by_shard()
    orders = []
    for epoch in range(2):
        seen = []
        for mine in deal(groups, 2, seed=0, epoch=epoch):
            stream = ShardStream(train, mine, groups, buffer=20, seed=epoch)
            seen.append([int(p) for p, _ in DataLoader(stream, batch_size=None, num_workers=2)])
        assert sorted(seen[0] + seen[1]) == list(range(len(train))) and len(seen[0]) == len(seen[1])
        orders.append(seen[0])
    assert orders[0] != orders[1]


@pytest.mark.parametrize(("args", "message"), [
    (["data=webdataset", 'data.shards="{root}/missing-{{000..003}}.tar"'], "4 of 4 shards are missing"),
    (["data=webdataset", "data.shards={root}/nolabel.tar"], "has no label (a .cls member"),
    (["data=hf", "data.path={root}/nocolumn"], "no image column to take; its columns: label (ClassLabel)"),
    (["data=hf", "data.path={root}/nocolumn", "data.split_map={{train: nope}}"], "has no such split"),
    (["data=hf", "data.path=user/no-such-dataset-anywhere"], "not in the local Hugging Face cache"),
])
def test_sources_that_cannot_be_read_are_one_line(cli, tmp_path: Path, args: list[str], message: str,
                                                  monkeypatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import io

    with tarfile.open(tmp_path / "nolabel.tar", "w") as tar:
        info = tarfile.TarInfo("a.png")
        payload = b"not really a png"
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"label": [0, 1]}, features=datasets.Features({"label": datasets.ClassLabel(names=["a", "b"])}))}
    ).save_to_disk(str(tmp_path / "nocolumn"))
    proc = cli(*QUIET, *(a.format(root=tmp_path) for a in args), "trainer.max_steps=1", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert message in proc.stderr, proc.stderr


def test_without_the_extra_the_error_names_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # (an import of it fails, as when it is not installed)
    with pytest.raises(CnnbenchError, match=r"pip install 'cnnbench\[hf\]'"):
        data("data=hf", "data.path=/x")
