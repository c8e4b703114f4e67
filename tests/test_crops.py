"""Photos of any size and aspect: the pad/crop pipelines, whole photos stored aspect kept, random resized crops
drawn and cut on the device as torchvision's, evaluation pixels equal to torchvision's Resize + CenterCrop
(and to ``weights.transforms()``), stored sizes set by the config, decoding on all cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from conftest import compose_config
from PIL import Image

from cnnbench.config import validate
from cnnbench.data import load_data, make_loaders
from cnnbench.data.checks import check_against_data
from cnnbench.data.crops import centre_boxes, crop_resize, resized_crop_boxes
from cnnbench.data.decode import Resize, decode, fit_shape
from cnnbench.data.parallel import decode_all
from cnnbench.data.pipeline import Pipeline
from cnnbench.errors import CnnbenchError

# (width, height): a landscape, a portrait, a wide panorama (aspect 3.3), a square, a small one
PHOTO_SIZES = [(120, 80), (90, 150), (200, 60), (100, 100), (50, 40)]


def smooth(width: int, height: int, seed: int) -> np.ndarray:
    """A photo-like uint8 (H, W, 3) image: smooth colour fields with some texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(2, height // 10), max(2, width // 10), generator=g) * 255
    image = F.interpolate(coarse, size=(height, width), mode="bicubic").clamp(0, 255)
    return image[0].permute(1, 2, 0).round().to(torch.uint8).numpy()


def photo_tree(root: Path, splits: tuple[str, ...] = ("train", "val"), per_class: int = 3) -> list[Path]:
    """``root/<split>/<class>/*.jpg`` of the sizes in PHOTO_SIZES; returns the files, sorted."""
    files = []
    for s, split in enumerate(splits):
        for k, name in enumerate(("ant", "bee")):
            for i in range(per_class):
                w, h = PHOTO_SIZES[(i + k + s) % len(PHOTO_SIZES)]
                path = root / split / name / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(smooth(w, h, 100 * s + 10 * k + i)).save(path, quality=95)
                files.append(path)
    return sorted(files)


def photos_cfg(root: Path, *overrides: str):
    """The data config of ``root``; a third of each class of train/ selects unless the overrides say."""
    val = () if any(o.startswith("data.val_fraction=") for o in overrides) else ("data.val_fraction=0.34",)
    return compose_config("data=imagefolder", f"data.root={root}", "data.cache_dir=null", *val, *overrides).data


# -- the random resized crop's boxes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("height", "width", "scale", "ratio"), [
    (300, 400, (0.08, 1.0), (3 / 4, 4 / 3)),  # a photo: almost every first try fits
    (60, 200, (0.08, 1.0), (3 / 4, 4 / 3)),  # a panorama: large crops rarely fit, some fall back
    (100, 100, (0.5, 1.0), (1.0, 1.0)),
])
def test_resized_crop_boxes_are_drawn_as_torchvision_draws_them(height, width, scale, ratio) -> None:
    n = 6000
    sizes = torch.tensor([[height, width]]).expand(n, 2)
    ours = resized_crop_boxes(sizes, scale, ratio, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    theirs = torch.tensor([T.RandomResizedCrop.get_params(torch.empty(1, height, width), list(scale), list(ratio))
                           for _ in range(n)], dtype=torch.float32)
    for boxes in (ours, theirs):  # inside the image, whole pixels
        assert (boxes >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= height).all()
        assert (boxes[:, 1] + boxes[:, 3] <= width).all() and torch.equal(boxes, boxes.round())

    def stats(boxes: torch.Tensor) -> tuple[float, ...]:
        area = boxes[:, 2] * boxes[:, 3] / (height * width)
        aspect = (boxes[:, 3] / boxes[:, 2]).log()
        centre = (boxes[:, 0] + boxes[:, 2] / 2) / height
        return area.mean().item(), area.std().item(), aspect.mean().item(), aspect.std().item(), centre.std().item()

    for a, b in zip(stats(ours), stats(theirs), strict=True):
        assert a == pytest.approx(b, abs=0.02)
    whole = ((theirs[:, 2] == height) | (theirs[:, 3] == width)).float().mean().item()
    assert ((ours[:, 2] == height) | (ours[:, 3] == width)).float().mean().item() == pytest.approx(whole, abs=0.02)


def test_a_crop_that_never_fits_falls_back_as_torchvision_does() -> None:
    sizes = torch.tensor([[10, 100], [100, 10], [50, 60]])  # aspects 10, 0.1 and 1.2 (inside the range)
    boxes = resized_crop_boxes(sizes, (1.0, 1.0), (3 / 4, 4 / 3), torch.Generator().manual_seed(0))
    # torchvision: height kept, width = round(h * 4/3), centred; width kept, height = round(w / (3/4)); whole
    assert boxes.tolist() == [[0, 43, 10, 13], [43, 0, 13, 10], [0, 0, 50, 60]]


# -- cutting and resizing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize(("box", "size"), [((10, 20, 40, 60), 32), ((5, 5, 20, 20), 32), ((0, 0, 64, 96), 48),
                                           ((3, 7, 57, 83), 24)])
def test_crop_resize_gives_torchvision_resized_crop_pixels(box, size, interpolation) -> None:
    image = torch.from_numpy(smooth(96, 64, 0)).permute(2, 0, 1)  # (3, 64, 96)
    canvas = torch.zeros(2, 3, 96, 96, dtype=torch.uint8)
    canvas[1, :, :64] = image  # at the top-left of its canvas, beside another image
    ours = crop_resize(canvas, torch.tensor([[0, 0, 96, 96], box], dtype=torch.float32), size, interpolation)[1]
    mode = T.InterpolationMode(interpolation)
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    theirs = torch.from_numpy(np.array(TF.resized_crop(pil, *box, [size, size], interpolation=mode))).permute(2, 0, 1)
    diff = (ours.int() - theirs.int()).abs()
    # Pillow rounds to 8 bits between its two passes; bicubic overshoots are clipped there too
    assert diff.max() <= (1 if interpolation == "bilinear" else 4) and diff.float().mean() < 0.3


def test_centre_boxes_are_resize_then_centre_crop() -> None:
    boxes = centre_boxes(torch.tensor([[64, 96], [128, 128]]), size=56, resize=64)
    # 64 x 96 -> shorter side 64 (no change) -> centre 56: rows 4..60, cols 20..76; 128 -> 64 halves everything
    assert boxes.tolist() == [[4.0, 20.0, 56.0, 56.0], [8.0, 8.0, 112.0, 112.0]]


# -- storage and evaluation on real files ---------------------------------------------------------------------------
def test_photos_are_stored_whole_with_their_aspect(tmp_path: Path) -> None:
    photo_tree(tmp_path, per_class=len(PHOTO_SIZES))
    data = load_data(photos_cfg(tmp_path, "data.image_size=32"))
    assert data.pipeline.name == "crop" and data.pipeline.store_size == 48 and data.pipeline.resize_size == 36
    train = data.train
    assert train.images.shape[1:] == (3, 48, 48) and train.sizes is not None
    for i in range(len(train)):
        h, w = train.sizes[i].tolist()
        assert max(h, w) == 48 and not train.images[i, :, h:].any() and not train.images[i, :, :, w:].any()
    # each photo as Pillow resizes it to the longer side 48, aspect kept (train/ has every size of PHOTO_SIZES)
    shapes = {tuple(s) for s in train.sizes.tolist()} | {tuple(s) for s in data.val.sizes.tolist()}
    assert shapes == {fit_shape(h, w, 48) for w, h in PHOTO_SIZES}
    first = sorted((tmp_path / "train").rglob("*.jpg"))[0]
    with Image.open(first) as img:
        h, w = fit_shape(img.height, img.width, 48)
        expected = np.zeros((48, 48, 3), np.uint8)
        expected[:h, :w] = np.array(img.convert("RGB").resize((w, h), Image.BILINEAR))
    assert np.array_equal(decode(first, 3, Resize("fit", 48)), expected)


def test_evaluation_pixels_are_torchvisions_resize_and_centre_crop(tmp_path: Path) -> None:
    photo_tree(tmp_path)
    cfg = photos_cfg(tmp_path, "data.image_size=40", "data.val_fraction=0")
    data = load_data(cfg)
    reference = T.Compose([T.Resize(45), T.CenterCrop(40)])  # 40 / 0.875 = 45.7 -> 45
    files = sorted((tmp_path / "val").rglob("*.jpg"))  # val/ is the reported (test) split here
    expected = torch.stack([torch.from_numpy(np.array(reference(Image.open(f).convert("RGB")))).permute(2, 0, 1)
                            for f in files])
    assert data.test.sizes is None and torch.equal(data.test.images, expected)


def test_pretrained_weights_get_exactly_their_transforms(tmp_path: Path) -> None:
    """Swin-T's weights: Resize(232, bicubic) + CenterCrop(224) + normalisation, from the weights themselves."""
    from torchvision.models import Swin_T_Weights

    from cnnbench.transfer.build import apply_weights_preprocessing

    photo_tree(tmp_path, per_class=2)
    cfg = compose_config("data=imagefolder", f"data.root={tmp_path}", "data.cache_dir=null", "data.val_fraction=0",
                         "data.batch_size=2", "model=tv_model", "model.arch=swin_t", "model.weights=IMAGENET1K_V1",
                         "transfer=finetune")
    apply_weights_preprocessing(cfg, explicit=set())
    assert (cfg.data.image_size, cfg.data.resize_size, cfg.data.interpolation) == (224, 232, "bicubic")
    data = load_data(cfg.data)
    loaders = make_loaders(data, cfg.data, torch.device("cpu"), seed=0, channels_last=False)
    x, _ = next(iter(loaders["test"]))
    transform = Swin_T_Weights.IMAGENET1K_V1.transforms()
    files = sorted((tmp_path / "val").rglob("*.jpg"))
    expected = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
    assert x.shape == expected.shape and (x - expected).abs().max() < 1e-5


def test_training_batches_are_crops_at_the_model_size(tmp_path: Path) -> None:
    photo_tree(tmp_path)
    cfg = photos_cfg(tmp_path, "data.image_size=32", "data.batch_size=4", "data.augment.crop_scale=[1.0,1.0]",
                     "data.augment.crop_ratio=[1.0,1.0]", "data.augment.hflip=false", "data.val_fraction=0",
                     "data.min_steps_per_epoch=0")
    data = load_data(cfg)
    train = make_loaders(data, cfg, torch.device("cpu"), seed=0, channels_last=False)["train"]
    start = train.generator.get_state()
    idx = next(iter(train.sampler))
    # scale 1 and ratio 1 never fit a non-square photo: the fallback, its centred largest square, every time
    sizes = data.train.sizes[idx]
    side = sizes.min(1).values.float()
    boxes = torch.stack([(sizes[:, 0] - side) // 2, (sizes[:, 1] - side) // 2, side, side], 1)
    expected = train.normalize(crop_resize(data.train.images[idx], boxes, 32))
    train.generator.set_state(start)
    x, _ = next(iter(train))
    assert x.shape == (4, 3, 32, 32) and torch.allclose(x, expected, atol=1e-5)


# -- which pipeline, which size ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_stored_size_comes_from_the_config_not_from_the_first_file(tmp_path: Path) -> None:
    """A 4000 x 4000 photo sorting first made every image 4000 x 4000 (an 816 MB cache, then out of memory)."""
    photo_tree(tmp_path, per_class=2)
    Image.new("RGB", (4000, 4000), (200, 30, 30)).save(tmp_path / "train" / "ant" / "000_big.png")
    data = load_data(photos_cfg(tmp_path))
    assert data.image_size == 224 and data.train.images.shape[-1] == 336  # 224 x 1.5
    data = load_data(photos_cfg(tmp_path, "data.image_size=32", "data.store_size=40"))
    assert data.train.images.shape[-2:] == (40, 40) and data.test.images.shape[-2:] == (32, 32)


def test_auto_takes_pad_for_one_small_square_size_and_crop_otherwise(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for k in range(2):
            for i in range(3):
                path = tmp_path / "thumbs" / split / f"c{k}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(smooth(32, 32, 10 * k + i)).save(path)
    cfg = photos_cfg(tmp_path / "thumbs", "data.batch_size=2")
    data = load_data(cfg)
    assert (data.pipeline.name, data.image_size, data.train.sizes) == ("pad", 32, None)
    train = make_loaders(data, cfg, torch.device("cpu"), seed=0, channels_last=False)["train"]
    assert train.augmenter.cfg.crop_padding == 4  # null: CIFAR's 4 px at 32
    photo_tree(tmp_path / "photos")
    assert load_data(photos_cfg(tmp_path / "photos")).pipeline.name == "crop"
    with pytest.raises(CnnbenchError, match=r"data.pipeline=pad .* differ in size \(50x40 to 200x150 px\)"):
        load_data(photos_cfg(tmp_path / "photos", "data.pipeline=pad"))
    with pytest.raises(CnnbenchError, match="data.pipeline=crop is for photos"):
        validate(compose_config("data=digits", "data.pipeline=crop"))
    data = load_data(photos_cfg(tmp_path / "photos", "data.pipeline=pad", "data.image_size=24"))  # a squash
    assert data.train.sizes is None and data.train.images.shape[-2:] == (24, 24)
    cfg = compose_config("data=imagefolder", f"data.root={tmp_path / 'photos'}", "data.pipeline=pad",
                         "data.augment.crop_scale=[0.5,1]")
    with pytest.raises(CnnbenchError, match="crop_scale and crop_ratio shape the random resized crops"):
        check_against_data(cfg, data, batch_size=2)


# -- decoding on every core -------------------------------------------------------------------------------------------
def test_decoding_in_worker_processes_equals_decoding_here(tmp_path: Path) -> None:
    files = []
    for i in range(300):  # well above the size that stays in this process
        files.append(tmp_path / f"{i:03d}.jpg")
        Image.fromarray(smooth(20 + i % 13, 16 + i % 7, i)).save(files[-1])
    spec = Resize("fit", 24)
    assert torch.equal(decode_all(files, 3, spec, workers=2), decode_all(files, 3, spec, workers=1))
    files[150].write_bytes(b"not an image")
    with pytest.raises(CnnbenchError, match=f"cannot decode image {files[150]}"):
        decode_all(files, 3, spec, workers=2)


@pytest.mark.slow
def test_real_photos_train_and_evaluate_with_aspect_kept(hymenoptera: Path) -> None:
    """The hymenoptera photos (193 to 2592 px wide, aspect 0.62 to 3.4): stored whole, evaluation as torchvision."""
    root = hymenoptera
    data = load_data(photos_cfg(root, "data.image_size=64"))
    aspects = data.train.sizes[:, 1] / data.train.sizes[:, 0]
    assert data.pipeline.name == "crop" and aspects.max() > 2.5 and aspects.min() < 0.7  # not squashed
    reference = T.Compose([T.Resize(73), T.CenterCrop(64)])
    files = sorted((root / "val").rglob("*.jpg"))  # val/: the reported split, in this order
    assert len(files) == len(data.test) == 153
    for f, image in list(zip(files, data.test.images, strict=True))[::10]:
        with Image.open(f) as img:
            if img.getexif().get(0x0112, 1) != 1:
                continue  # (torchvision's loader ignores EXIF orientation; cnnbench turns the photo upright)
            expected = torch.from_numpy(np.array(reference(img.convert("RGB")))).permute(2, 0, 1)
        assert torch.equal(image, expected)


@pytest.mark.slow
def test_a_photo_run_records_its_pipeline_and_its_tools_use_it(tmp_path: Path) -> None:
    """Train on photos (crop pipeline), then evaluate the reported split and predict its files: the same pixels,
    so the same scores; evaluating the carved val split centre-crops its stored canvases."""
    import json

    from cnnbench.commands.evaluate import evaluate_run
    from cnnbench.commands.predict import predict_files
    from cnnbench.finished_run import load_finished_run
    from cnnbench.train import run

    photo_tree(tmp_path / "photos", per_class=5)
    run(compose_config("data=imagefolder", f"data.root={tmp_path / 'photos'}", "data.image_size=32",
                       "data.val_fraction=0.4", "data.batch_size=4", f"data.cache_dir={tmp_path / 'cache'}",
                       "model=lenet5", "trainer.max_steps=2", "logger.progress=false", "logger.snapshots=0",
                       "logger.tensorboard=false", "logger.figures=false"), tmp_path / "run")
    trained = load_finished_run(tmp_path / "run")
    assert trained.spec.pipeline == Pipeline("crop", 32, 48, 36, "bilinear")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    evaluated = evaluate_run(tmp_path / "run", out=tmp_path / "eval.json")
    assert evaluated["acc"] == pytest.approx(results["test_acc"])
    files = sorted((tmp_path / "photos" / "val").rglob("*.jpg"))
    rows = predict_files(trained, files, top_k=1, batch_size=8, device="cpu", progress=False)
    correct = [r["predictions"][0]["class"] == Path(r["path"]).parent.name for r in rows]
    assert 100.0 * sum(correct) / len(rows) == pytest.approx(results["test_acc"])
    assert evaluate_run(tmp_path / "run", split="val", out=tmp_path / "val.json")["images"] == 4


def test_streamed_photos_give_the_batches_held_photos_give(tmp_path: Path) -> None:
    """Above data.max_memory_gb the photos stay files: decoded per batch to the same canvases, same crops."""
    photo_tree(tmp_path, per_class=5)
    common = ("data.image_size=32", "data.batch_size=4", "data.num_workers=0")
    batches = []
    for memory in ("8", "0.000001"):
        cfg = photos_cfg(tmp_path, *common, f"data.max_memory_gb={memory}")
        data = load_data(cfg)
        assert data.train.streamed == (memory != "8") and data.train.sizes is not None
        loaders = make_loaders(data, cfg, torch.device("cpu"), seed=3, channels_last=False)
        batches.append([next(iter(loaders["train"]))[0], next(iter(loaders["val"]))[0],
                        next(iter(loaders["test"]))[0]])
    for held, streamed in zip(*batches, strict=True):
        assert torch.equal(held, streamed)


def test_every_command_reads_images_through_the_runs_input_spec(tmp_path: Path) -> None:
    """The checkpoint's input spec rebuilds the training run's evaluation tensors for each photo, and eval,
    predict, visualize and export take their images (and normalisation) from it."""
    from cnnbench.commands.evaluate import eval_loader
    from cnnbench.commands.export import export_run
    from cnnbench.commands.predict import predict_files
    from cnnbench.commands.visualize import explained_images
    from cnnbench.engine.checkpoint import load_checkpoint
    from cnnbench.finished_run import load_finished_run
    from cnnbench.train import run

    photo_tree(tmp_path / "photos", per_class=3)
    run(compose_config("data=imagefolder", f"data.root={tmp_path / 'photos'}", "data.image_size=32",
                       "data.mean=[0.4,0.5,0.6]", "data.std=[0.2,0.25,0.3]", "data.batch_size=2",
                       "data.val_fraction=0", f"data.cache_dir={tmp_path / 'cache'}", "model=lenet5",
                       "trainer.max_steps=1", "logger.progress=false", "logger.snapshots=0",
                       "logger.tensorboard=false", "logger.figures=false", "logger.print_config=false"),
        tmp_path / "run")
    trained = load_finished_run(tmp_path / "run")
    spec = trained.spec
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")["meta"] == spec.to_dict()
    assert (spec.channels, spec.mean, spec.std) == (3, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    assert spec.class_names == ("ant", "bee") and spec.pipeline == Pipeline("crop", 32, 48, 36, "bilinear")

    files = sorted((tmp_path / "photos" / "val").rglob("*.jpg"))  # (the test split: val/, no test/ folder)
    data = load_data(trained.cfg.data)  # the training run's own evaluation tensors
    test = make_loaders(data, trained.cfg.data, torch.device("cpu"), seed=0, channels_last=False)["test"]
    every = torch.arange(len(files))
    trained_x = test.normalize(test.images(every))
    ours = torch.stack([spec.transforms()(f) for f in files])
    assert ours.shape == (6, 3, 32, 32) and torch.equal(ours, trained_x)
    for folder in (None, tmp_path / "photos" / "val"):  # eval on the run's split, and on a folder
        loader = eval_loader(trained, "test", folder, {}, 4, torch.device("cpu"))
        assert torch.equal(loader.normalize(loader.images(every)), trained_x)
    x, _, _ = explained_images(trained, str(tmp_path / "photos" / "val"))
    assert torch.equal(x, trained_x)
    rows = predict_files(trained, files, top_k=2, batch_size=4, device="cpu", progress=False)
    with torch.no_grad(), trained.precision(torch.device("cpu")).autocast():  # the run's precision (bf16 or fp32)
        probs = torch.cat([trained.model(batch).float().softmax(1) for batch in ours.split(4)])  # predict's batches
    for row, p in zip(rows, probs, strict=True):
        by_class = {q["class"]: q["prob"] for q in row["predictions"]}
        assert by_class == pytest.approx({"ant": float(p[0]), "bee": float(p[1])}, abs=1e-6)
    card = export_run(tmp_path / "run", "torchscript", out=tmp_path / "model.pt")
    assert {k: card["input"][k] for k in spec.to_dict()} == spec.to_dict()
