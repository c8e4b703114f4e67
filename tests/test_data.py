"""Data sets load into uint8 tensors; batched augmentation matches torchvision's transforms."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2 as T
from conftest import CLASSES, compose_config

from cnnbench.data import augment, load_data, make_loaders
from cnnbench.data.augment import AugmentConfig
from cnnbench.data.images import FileImageSet, ImageSet
from cnnbench.data.loader import DeviceLoader
from cnnbench.errors import CnnbenchError


def data_cfg(*overrides: str):
    return compose_config(*overrides).data


def test_digits_split_is_deterministic_and_disjoint() -> None:
    a, b = load_data(data_cfg()), load_data(data_cfg())
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert len(a.test) == 359 and len(a.val) == round(1438 * 0.1)
    assert a.train.images.dtype == torch.uint8 and a.train.images.shape[1:] == (1, 32, 32)
    assert a.class_names == [str(i) for i in range(10)]
    # No image is in two splits (digits has a few exact duplicates, so compare counts, not sets).
    flat = lambda s: {bytes(x.numpy()) for x in s.images}  # noqa: E731
    assert len(flat(a.test) & flat(a.train)) <= 3
    other = load_data(data_cfg("data.split_seed=1"))
    assert not torch.equal(other.test.labels, a.test.labels)


def test_the_checks_know_every_data_set_there_is_a_reader_for() -> None:
    from cnnbench.config import validate
    from cnnbench.config.schema import LIBRARY_SETS, PHOTO_SETS
    from cnnbench.data.build import READERS

    assert sorted(READERS) == sorted(LIBRARY_SETS + PHOTO_SETS)
    with pytest.raises(CnnbenchError, match="unknown data set 'cifar11'; available: cifar10, cifar100, digits"):
        validate(compose_config("data=digits", "data.name=cifar11"))


def test_num_train_and_num_test_take_that_many_images() -> None:
    full = load_data(data_cfg())
    data = load_data(data_cfg("data.num_train=100", "data.num_test=50"))
    assert len(data.train) + len(data.val) == 100 and len(data.val) == 10 and len(data.test) == 50
    assert len(torch.unique(data.train.labels)) == 10  # a random subset keeps every class
    test_rows = {bytes(x.numpy()) for x in full.test.images}
    assert all(bytes(x.numpy()) in test_rows for x in data.test.images)  # drawn from the test split


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_random_crop_is_a_window_of_the_padded_image(mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment.random_crop(x, 2, g, mode)
    padded = T.Pad(2, padding_mode=mode)(x)  # torchvision's padding of the same name
    for i in range(64):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_augmentations_match_torchvision_statistics() -> None:
    """Per-pixel mean over many augmented copies equals torchvision's RandomCrop(padding)+RandomHorizontalFlip."""
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    n = 4000
    ours = augment.hflip(augment.random_crop(img.expand(n, -1, -1, -1), 4, torch.Generator().manual_seed(1)),
                         torch.Generator().manual_seed(2)).float().mean(0)
    tv = T.Compose([T.RandomCrop(16, padding=4), T.RandomHorizontalFlip()])
    ref = torch.stack([tv(img) for _ in range(n)]).float().mean(0)
    # standard error of a per-pixel mean over 4000 draws is ~1.5 grey levels; the maps agree far below 4
    assert (ours - ref).abs().mean() < 2.0
    assert (ours - ref).abs().max() < 12.0
    # and both differ clearly from an un-augmented image
    assert (ref - img.float()).abs().mean() > 20


def test_cutout_zeroes_one_square_per_image() -> None:
    x = torch.full((200, 1, 16, 16), 255, dtype=torch.uint8)
    out = augment.cutout(x, 4, torch.Generator().manual_seed(0))
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert zeros.max() == 16 and zeros.min() >= 4  # clipped at the border, never empty


def test_loader_normalises_like_torchvision() -> None:
    x = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
    loader = DeviceLoader(ImageSet(x, torch.arange(10)), 4, torch.device("cpu"), mean, std)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [4, 4, 2]  # evaluation keeps the last partial batch
    ref = T.Normalize(mean, std)(x.float() / 255)
    torch.testing.assert_close(torch.cat([b[0] for b in batches]), ref, atol=1e-5, rtol=1e-5)


def test_train_loader_shuffles_reproducibly_and_keeps_a_partial_batch_only_when_it_matters() -> None:
    data = ImageSet(torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10))
    make = lambda seed: DeviceLoader(data, 4, torch.device("cpu"), [0.5], [0.5], train=True, seed=seed)  # noqa: E731
    first = [y.tolist() for _, y in make(0)]
    assert len(first) == 3 and first == [y.tolist() for _, y in make(0)]  # 4 + 4 + 2: a fifth of the set, kept
    assert sorted(sum(first, [])) == list(range(10))
    assert first != [y.tolist() for _, y in make(1)]
    many = ImageSet(torch.zeros(401, 1, 4, 4, dtype=torch.uint8), torch.arange(401))
    batches = [len(y) for _, y in DeviceLoader(many, 4, torch.device("cpu"), [0.5], [0.5], train=True)]
    assert batches == [4] * 100  # one image left over: dropped (BatchNorm cannot use a batch of one)


def test_alternating_flip_mirrors_each_image_in_every_other_epoch() -> None:
    n = 64
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, :, 0] = torch.arange(n, dtype=torch.uint8)[:, None] + 1  # left column = id + 1, right = 0
    loader = DeviceLoader(ImageSet(images, torch.arange(n)), 16, torch.device("cpu"), [0.0], [1 / 255],
                          train=True, augment=AugmentConfig(hflip=True, alternate_flip=True))

    def flipped(epoch: int) -> torch.Tensor:
        loader.set_epoch(epoch)
        out = torch.zeros(n, dtype=torch.bool)
        for x, y in loader:
            assert torch.equal(x[:, 0, :, :].amax((1, 2)).long(), y + 1)  # each image still its own
            out[y] = x[:, 0, 0, 1] > 0  # its pixels moved to the right column: mirrored
        return out

    first, second, third = flipped(0), flipped(1), flipped(2)
    assert 16 < first.sum() < 48  # at random in the first epoch
    assert torch.equal(second, ~first) and torch.equal(third, first)  # then alternating


@pytest.mark.slow
def test_imagefolder_on_real_cifar10_subset(cifar_subset: Path, tmp_path: Path) -> None:
    cfg = data_cfg("data=imagefolder", f"data.root={cifar_subset}", f"data.cache_dir={tmp_path}")
    data = load_data(cfg)
    assert data.class_names == CLASSES
    assert len(data.train) + len(data.val) == 200 and len(data.test) == 100
    assert data.train.images.shape[1:] == (3, 32, 32) and data.image_size == 32
    assert torch.bincount(data.test.labels).tolist() == [10] * 10
    cached = list(tmp_path.glob("imagefolder-*.pt"))
    assert len(cached) == 1
    again = load_data(cfg)  # from the cache
    assert torch.equal(again.train.images, data.train.images)
    # resizing to another size is a different cache entry
    small = load_data(data_cfg("data=imagefolder", f"data.root={cifar_subset}", f"data.cache_dir={tmp_path}",
                               "data.image_size=16", "data.channels=1", "data.mean=[0.5]", "data.std=[0.25]"))
    assert small.train.images.shape[1:] == (1, 16, 16) and len(list(tmp_path.glob("*.pt"))) == 2


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(CnnbenchError, match="does not exist"):
        load_data(data_cfg("data=imagefolder", f"data.root={tmp_path / 'nope'}", "data.cache_dir=null"))
    (tmp_path / "train").mkdir()
    (tmp_path / "test").mkdir()
    with pytest.raises(CnnbenchError, match="expected one sub-folder per class"):
        load_data(data_cfg("data=imagefolder", f"data.root={tmp_path}", "data.cache_dir=null"))
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir()
        (tmp_path / split / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(CnnbenchError, match="cannot decode image .*broken.jpg"):
        load_data(data_cfg("data=imagefolder", f"data.root={tmp_path}", "data.cache_dir=null"))


def _write_cifar10_batches(root: Path, per_batch: int) -> None:
    """Small files in CIFAR-10's on-disk format (pickled dicts of uint8 rows), as torchvision reads them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CLASSES}))


def test_torchvision_cifar10_reader_on_files_in_its_format(tmp_path: Path, monkeypatch) -> None:
    import torchvision.datasets.cifar

    _write_cifar10_batches(tmp_path, per_batch=8)
    # Only torchvision's md5 check is patched: our files are real pickles but not the official bytes.
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    data = load_data(data_cfg("data=cifar10", f"data.root={tmp_path}", "data.download=false"))
    assert len(data.train) + len(data.val) == 40 and len(data.test) == 8
    assert data.train.images.shape[1:] == (3, 32, 32) and data.class_names == CLASSES
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes())
    expected = torch.from_numpy(raw["data"].reshape(-1, 3, 32, 32))
    assert torch.equal(data.test.images, expected)  # channel order and layout preserved
    assert data.test.labels.tolist() == raw["labels"]
    loaders = make_loaders(data, data_cfg("data=cifar10", "data.batch_size=16"), torch.device("cpu"), seed=0,
                           channels_last=True)
    x, _ = next(iter(loaders["train"]))
    assert x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("download", [False, True])
def test_missing_dataset_offline_message(tmp_path: Path, monkeypatch, download: bool) -> None:
    # Route any download attempt to a closed local port so the test is offline even on a networked machine.
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    root = tmp_path / "empty"
    with pytest.raises(CnnbenchError) as err:
        load_data(data_cfg("data=cifar10", f"data.root={root}", f"data.download={str(download).lower()}"))
    msg = str(err.value)
    assert str(root) in msg and "data.root=" in msg and "data=digits" in msg and "\n" not in msg


def test_large_imagefolders_stream_the_same_batches_from_files(cifar_subset: Path, tmp_path: Path) -> None:
    """Above data.max_memory_gb the images stay files (DataLoader workers decode each batch); the batches,
    their order and their augmentation are the ones the in-memory path serves."""
    from cnnbench.data.stream import StreamLoader

    common = ("data=imagefolder", f"data.root={cifar_subset}", "data.batch_size=32", "data.augment.cutout=8")
    memory = load_data(data_cfg(*common, f"data.cache_dir={tmp_path}"))
    cfg = data_cfg(*common, "data.max_memory_gb=0.0001", f"data.cache_dir={tmp_path / 'unused'}")
    files = load_data(cfg)
    assert isinstance(files.train, FileImageSet) and not isinstance(memory.train, FileImageSet)
    assert not (tmp_path / "unused").exists()  # streamed sets are not cached
    assert torch.equal(files.train.labels, memory.train.labels)
    assert torch.equal(files.val.take(slice(0, 5)), memory.val.images[:5])
    kwargs = {"device": torch.device("cpu"), "seed": 3, "channels_last": False}
    streamed = make_loaders(files, cfg, **kwargs)
    in_memory = make_loaders(memory, cfg, **kwargs)
    assert isinstance(streamed["train"], StreamLoader) and isinstance(streamed["test"], StreamLoader)
    for split in ("train", "val", "test"):
        assert len(streamed[split]) == len(in_memory[split])
        for (xa, ya), (xb, yb) in zip(streamed[split], in_memory[split], strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb), split


@pytest.mark.slow
def test_streamed_imagefolder_trains(cifar_subset: Path, tmp_path: Path) -> None:
    from cnnbench.train import run

    cfg = compose_config("data=imagefolder", f"data.root={cifar_subset}", "data.max_memory_gb=0.0001",
                         "model=small_resnet", "model.widths=[8,16,32]", "trainer.max_steps=4", "data.batch_size=16",
                         "logger.print_config=false", "logger.progress=false", "logger.tensorboard=false")
    results = run(cfg, tmp_path)
    assert results["status"] == "completed" and results["steps"] == 4 and 0 <= results["test_acc"] <= 100


def _write_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name, n in (("train", 30), ("test", 10)):
        (folder / name).write_bytes(pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                                                  "fine_labels": rng.integers(0, 100, n).tolist()}))
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [f"class{i}" for i in range(100)]}))


def _write_svhn(root: Path) -> None:
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", 30), ("test", 10)):
        savemat(root / f"{name}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                              "y": rng.integers(1, 11, (n, 1))})  # 10 stands for the digit 0


def _write_stl10(root: Path) -> None:
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name, n in (("train", 30), ("test", 10)):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(folder / f"{name}_X.bin")
        rng.integers(1, 11, n, dtype=np.uint8).tofile(folder / f"{name}_y.bin")  # labels 1..10 on disk
    (folder / "unlabeled_X.bin").write_bytes(b"")
    (folder / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)))


@pytest.mark.parametrize(("name", "write", "module", "size", "classes"), [
    ("cifar100", _write_cifar100, "cifar", 32, 100), ("svhn", _write_svhn, "svhn", 32, 10),
    ("stl10", _write_stl10, "stl10", 96, 10)])
def test_more_torchvision_datasets_from_files_in_their_format(tmp_path: Path, monkeypatch, name, write, module,
                                                              size, classes) -> None:
    """CIFAR-100, SVHN and STL-10 read by torchvision's classes from files where they look first (only the md5
    check is patched: these are real files in each format, not the official bytes)."""
    import importlib

    write(tmp_path)
    monkeypatch.setattr(importlib.import_module(f"torchvision.datasets.{module}"), "check_integrity",
                        lambda path, md5=None: Path(path).is_file())
    data = load_data(data_cfg(f"data={name}", f"data.root={tmp_path}", "data.download=false", "data.val_fraction=0"))
    assert len(data.train) == 30 and len(data.test) == 10 and data.num_classes == classes
    assert data.train.images.shape[1:] == (3, size, size) and data.train.images.dtype == torch.uint8
    assert 0 <= int(data.train.labels.min()) and int(data.train.labels.max()) < classes
    if name == "svhn":  # torchvision maps the label 10 to the digit 0
        raw = __import__("scipy.io", fromlist=["loadmat"]).loadmat(tmp_path / "train_32x32.mat")
        assert data.train.labels.tolist() == [int(v) % 10 for v in raw["y"][:, 0]]
        assert torch.equal(data.train.images, torch.from_numpy(raw["X"]).permute(3, 2, 0, 1))


@pytest.mark.parametrize("name", ["cifar100", "svhn", "stl10"])
def test_more_datasets_offline_message(tmp_path: Path, name: str) -> None:
    with pytest.raises(CnnbenchError) as err:
        load_data(data_cfg(f"data={name}", f"data.root={tmp_path / 'empty'}", "data.download=false"))
    assert "data=digits" in str(err.value) and "\n" not in str(err.value)
