"""Users' own photo folders: decoding (EXIF orientation, 16-bit, palette), the three folder layouts, symbolic
links followed once, and a cache keyed on every file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from PIL import Image, ImageOps

from cnnbench.data import load_data
from cnnbench.data.decode import read_image
from cnnbench.data.folders import scan_folder
from cnnbench.errors import CnnbenchError


def data_cfg(*overrides: str):
    return compose_config("data=imagefolder", "data.image_size=8", *overrides).data


def write_image(path: Path, value: int, size: tuple[int, int] = (8, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, (3 * value) % 256)).save(path)


def make_tree(root: Path, counts: dict[str, dict[str, int]]) -> None:
    """``counts``: {split: {class: number of images}}; image i of class k has colour 10 * k + i."""
    for split, classes in counts.items():
        for k, (name, n) in enumerate(classes.items()):
            for i in range(n):
                write_image(root / split / name / f"{i:03d}.png", (10 * k + i) % 256)


# -- decoding -------------------------------------------------------------------------------------------------------
def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 32768, 65535]] * 4, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    img = read_image(tmp_path / "deep.png", channels=1, size=None)  # (1, 4, 4): width kept, square
    assert img[0, 0].tolist() == [0, 1, 128, 255]  # v / 257, rounded (Pillow alone: 0, 255, 255, 255)
    rgb = read_image(tmp_path / "deep.png", channels=3, size=None)
    assert rgb[:, 0, 2].tolist() == [128, 128, 128]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (16, 16))
    img.paste((255, 0, 0), (0, 0, 8, 16))  # left half red, right half blue
    img.paste((0, 0, 255), (8, 0, 16, 16))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the camera says rotate 90 degrees clockwise to display
    img.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    ours = read_image(tmp_path / "turned.jpg", channels=3, size=16)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "turned.jpg")).convert("RGB"))
    assert torch.equal(ours, torch.from_numpy(upright.copy()).permute(2, 0, 1))
    assert ours[0, 2, 8] > 200 and ours[2, 13, 8] > 200  # red on top, blue below: the halves are now rows


def test_palette_images_convert_as_torchvision_does(tmp_path: Path) -> None:
    img = Image.new("P", (8, 8))
    img.putpalette([0, 0, 0, 200, 30, 10, 10, 180, 40] + [0] * (256 * 3 - 9))
    img.putdata([(i % 3) for i in range(64)])
    img.save(tmp_path / "palette.png")
    expected = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    assert torch.equal(read_image(tmp_path / "palette.png", 3, 8), torch.from_numpy(expected.copy()).permute(2, 0, 1))


# -- symbolic links -------------------------------------------------------------------------------------------------
def test_symlinks_are_followed_once(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"ants": 3, "bees": 2}})
    os.symlink("..", tmp_path / "train" / "ants" / "loop")  # train/ants/loop -> train/: a loop through bees
    os.symlink("../bees", tmp_path / "train" / "ants" / "also_bees")  # the other class's folder
    elsewhere = tmp_path / "more"
    write_image(elsewhere / "extra.png", 99)
    os.symlink(elsewhere, tmp_path / "train" / "ants" / "more")  # a real folder elsewhere: followed
    paths, labels, classes = scan_folder(tmp_path / "train")
    assert classes == ["ants", "bees"]
    assert labels.tolist() == [0, 0, 0, 0, 1, 1]  # 3 + 1 linked ants, 2 bees, no copies, none relabelled
    assert any(p.endswith("extra.png") for p in paths)


# -- layouts --------------------------------------------------------------------------------------------------------
def test_train_folder_alone_is_split_per_class(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"common": 40, "rare": 5}})
    data = load_data(data_cfg(f"data.root={tmp_path}", "data.cache_dir=null", "data.test_fraction=0.2",
                              "data.val_fraction=0.25"))
    assert torch.bincount(data.test.labels).tolist() == [8, 1]  # 20% of each class, the rare one included
    assert torch.bincount(data.val.labels).tolist() == [8, 1]  # 25% of each remaining class
    assert torch.bincount(data.train.labels).tolist() == [24, 3]
    assert "train/ alone" in data.notes[0]
    again = load_data(data_cfg(f"data.root={tmp_path}", "data.cache_dir=null", "data.test_fraction=0.2",
                               "data.val_fraction=0.25"))
    assert torch.equal(again.test.images, data.test.images)  # fixed by data.split_seed
    other = load_data(data_cfg(f"data.root={tmp_path}", "data.cache_dir=null", "data.test_fraction=0.2",
                               "data.val_fraction=0.25", "data.split_seed=1"))
    assert not torch.equal(other.test.images, data.test.images)


def test_train_and_val_folders_report_on_val_and_select_on_train(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"a": 10, "b": 10}, "val": {"a": 3, "b": 4}})
    data = load_data(data_cfg(f"data.root={tmp_path}", "data.cache_dir=null", "data.val_fraction=0.2"))
    assert len(data.test) == 7 and len(data.val) == 4 and len(data.train) == 16
    assert "val/ is the reported (test) split" in data.notes[0]


def test_val_folder_selects_when_there_is_a_test_folder(tmp_path: Path) -> None:
    make_tree(tmp_path, {"train": {"a": 10, "b": 10}, "val": {"a": 3, "b": 4}, "test": {"a": 5, "b": 5}})
    data = load_data(data_cfg(f"data.root={tmp_path}", "data.cache_dir=null"))
    assert (len(data.train), len(data.val), len(data.test)) == (20, 7, 10)
    assert "val/ selects" in data.notes[0]


def test_layout_errors_are_one_line(tmp_path: Path) -> None:
    make_tree(tmp_path, {"test": {"a": 2}})
    with pytest.raises(CnnbenchError, match="must hold a train/ folder"):
        load_data(data_cfg(f"data.root={tmp_path}", "data.cache_dir=null"))
    make_tree(tmp_path, {"train": {"a": 2, "b": 2}})
    with pytest.raises(CnnbenchError, match="class folders differ"):
        load_data(data_cfg(f"data.root={tmp_path}", "data.cache_dir=null"))


def test_file_lists_in_csv_and_tsv(tmp_path: Path) -> None:
    make_tree(tmp_path / "images", {"all": {"cat": 6, "dog": 4}})
    files = sorted((tmp_path / "images" / "all").rglob("*.png"))
    rows = [(f.relative_to(tmp_path), f.parent.name) for f in files]
    (tmp_path / "train.csv").write_text("path,label\n" + "".join(f"{p},{label}\n" for p, label in rows[:8]))
    (tmp_path / "test.tsv").write_text("".join(f"{p}\t{label}\n" for p, label in rows[8:] + rows[:2]))
    data = load_data(compose_config("data=filelist", f"data.root={tmp_path}", "data.image_size=8",
                                    "data.cache_dir=null", "data.val_fraction=0.25").data)
    assert data.class_names == ["cat", "dog"] and len(data.test) == 4 and len(data.train) + len(data.val) == 8
    assert torch.bincount(data.test.labels).tolist() == [2, 2]
    assert "test.tsv is the reported split" in data.notes[0]
    expected = read_image(tmp_path / rows[8][0], 3, 8)
    assert torch.equal(data.test.images[0], expected)  # in list order, each path relative to its list


def test_file_list_errors_name_the_line(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", 1)
    cfg = compose_config("data=filelist", f"data.root={tmp_path}", "data.cache_dir=null").data
    with pytest.raises(CnnbenchError, match="must hold train.csv"):
        load_data(cfg)
    (tmp_path / "train.csv").write_text("a.png,cat\nmissing.png,dog\n")
    with pytest.raises(CnnbenchError, match=r"train.csv line 2: no file .*missing.png"):
        load_data(cfg)
    (tmp_path / "train.csv").write_text("a.png,cat\na.png\n")
    with pytest.raises(CnnbenchError, match=r"train.csv line 2: expected path,label"):
        load_data(cfg)
    (tmp_path / "train.csv").write_text("a.png,cat\n")
    write_image(tmp_path / "b.png", 2)
    (tmp_path / "test.csv").write_text("b.png,bird\n")
    with pytest.raises(CnnbenchError, match="label 'bird' is not a label of train.csv"):
        load_data(cfg)
    # one image with two labels (in one list or across lists): refused, never trained as both
    (tmp_path / "train.csv").write_text("a.png,cat\nb.png,dog\n" + "a.png,cat\n" * 5 + "./a.png,dog\n")
    (tmp_path / "test.csv").unlink()
    with pytest.raises(CnnbenchError, match=r"a.png is listed with two labels \('cat' in train.csv, 'dog' in train"):
        load_data(cfg)


# -- the cache ------------------------------------------------------------------------------------------------------
def test_cache_follows_every_file(tmp_path: Path) -> None:
    root, cache = tmp_path / "photos", tmp_path / "cache"
    make_tree(root, {"train": {"a": 6, "b": 6}, "test": {"a": 2, "b": 2}})
    cfg = data_cfg(f"data.root={root}", f"data.cache_dir={cache}")
    first = load_data(cfg)
    assert len(list(cache.glob("*.pt"))) == 1
    # an image overwritten in place (same name, same folder): its new pixels, not the cached ones
    target = root / "test" / "a" / "000.png"
    write_image(target, 200)
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    changed = load_data(cfg)
    assert not torch.equal(changed.test.images, first.test.images)
    # an image added in a nested folder (the class folder's own time unchanged)
    write_image(root / "train" / "b" / "nested" / "deep" / "new.png", 77)
    assert len(load_data(cfg).train) + len(load_data(cfg).val) == 13
    # a damaged cache file is rebuilt
    for f in cache.glob("*.pt"):
        f.write_bytes(b"not a checkpoint")
    assert len(load_data(cfg).test) == 4


def test_test_fraction_is_checked() -> None:
    from cnnbench.config import validate

    with pytest.raises(CnnbenchError, match=r"data.test_fraction must be in \(0, 1\)"):
        validate(compose_config("data.test_fraction=1.0"))


# -- unequal classes ------------------------------------------------------------------------------------------------
def test_balanced_sampler_draws_classes_equally_and_resumes() -> None:
    from cnnbench.data.images import ImageSet
    from cnnbench.data.loader import DeviceLoader

    labels = torch.tensor([0] * 900 + [1] * 100)
    images = torch.arange(1000).view(1000, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8)
    loader = DeviceLoader(ImageSet(images, labels), 100, torch.device("cpu"), [0.0], [1.0], train=True,
                          balanced=True, num_classes=2)
    state = loader.state_dict()
    drawn = torch.cat([y for _, y in loader])
    assert len(drawn) == 1000 and 0.45 < drawn.float().mean() < 0.55  # class 1 half the time, not a tenth
    loader.load_state_dict(state)
    assert torch.equal(torch.cat([y for _, y in loader]), drawn)


def test_class_weights(tmp_path: Path) -> None:
    from cnnbench.data.checks import check_against_data
    from cnnbench.engine.loop import class_weight_tensor

    labels = torch.tensor([0] * 6 + [1] * 2 + [2] * 0)
    assert class_weight_tensor(None, labels, 3) is None
    balanced = class_weight_tensor("balanced", labels, 3)
    assert torch.allclose(balanced[:2], torch.tensor([8 / (3 * 6), 8 / (3 * 2)]))
    assert class_weight_tensor([1.0, 2.0, 3.0], labels, 3).tolist() == [1.0, 2.0, 3.0]
    make_tree(tmp_path, {"train": {"a": 4, "b": 4, "c": 4}})
    cfg = compose_config("data=imagefolder", f"data.root={tmp_path}", "data.cache_dir=null", "data.val_fraction=0",
                         "trainer.class_weights=[1.0,2.0]")
    data = load_data(cfg.data)
    with pytest.raises(CnnbenchError, match="trainer.class_weights has 2 values but the data has 3 classes"):
        check_against_data(cfg, data, batch_size=2)
    check_against_data(compose_config("data=imagefolder", f"data.root={tmp_path}", "data.val_fraction=0",
                                      "trainer.class_weights=[1.0,2.0,3.0]"), data, batch_size=2)


@pytest.mark.parametrize("override", ["trainer.class_weights=oops", "trainer.class_weights=[1,-1]",
                                      "trainer.monitor=val/top5", "data.sampler=weighted"])
def test_imbalance_options_refuse_bad_values(override: str) -> None:
    from cnnbench.config import validate

    with pytest.raises(CnnbenchError) as err:
        validate(compose_config(override))
    assert override.split("=")[0] in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_monitor_selects_the_best_checkpoint(tmp_path: Path) -> None:
    from conftest import run_cli

    quiet = ("logger.tensorboard=false", "logger.snapshots=0", "logger.figures=false", "logger.print_config=false",
             "logger.progress=false", "trainer.epochs=4")
    proc = run_cli(*quiet, "trainer.monitor=val/macro_f1", "trainer.class_weights=balanced",
                   "data.sampler=balanced", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    r = json.loads((tmp_path / "run" / "results.json").read_text())
    best = max(r["history"], key=lambda h: (h["val/macro_f1"], -h["val/loss"]))
    assert r["scored_step"] == best["step"] and r["best_val_acc"] == best["val/acc"]
    assert all({"val/balanced_acc", "val/macro_f1"} <= h.keys() for h in r["history"])
