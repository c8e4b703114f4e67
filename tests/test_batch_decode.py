"""JPEGs decoded in batches (``data.decode_device``; nvJPEG on a GPU): the Pillow path's pixels within 2 grey
levels, and every file the batch decoder refuses decoded by the Pillow path. On the CPU, torchvision's own JPEG
decoder stands in for nvJPEG; the ``cuda`` cases run the same checks on a GPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, run_cli
from PIL import Image

from cnnbench.config.checks import validate
from cnnbench.data.batch_decode import decode_batched, is_jpeg
from cnnbench.data.decode import Resize
from cnnbench.data.parallel import decode_all
from cnnbench.errors import CnnbenchError

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def max_difference(paths: list[str], channels: int, spec: Resize, device: str) -> int:
    pillow = decode_all(paths, channels, spec, workers=1)
    batched = decode_batched(paths, channels, spec, torch.device(device))
    assert batched.shape == pillow.shape and batched.dtype == torch.uint8 and batched.device.type == "cpu"
    return int((batched.int() - pillow.int()).abs().max())


@pytest.mark.parametrize("device", DEVICES)
def test_real_jpegs_decode_as_pillow_decodes_them(cifar_subset: Path, hymenoptera: Path, device: str) -> None:
    """CIFAR-10 JPEGs at their 32 px; photos of every size stored whole (fit) and centre-cropped as torchvision's
    Resize + CenterCrop (on the CPU: equal, and within 1 level where resized)."""
    cifar = sorted(str(p) for p in cifar_subset.rglob("*.jpg"))
    photos = sorted(str(p) for p in (hymenoptera / "val").rglob("*.jpg"))[:48]
    assert max_difference(cifar, 3, Resize("square", 32), device) <= 2
    assert max_difference(photos, 3, Resize("fit", 96), device) <= 2
    assert max_difference(photos, 3, Resize("centre", 64, 73), device) <= 2
    assert max_difference(photos, 1, Resize("square", 48), device) <= 2


@pytest.mark.parametrize("device", DEVICES)
def test_files_the_batch_decoder_refuses_take_the_pillow_path(tmp_path: Path, device: str) -> None:
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).resize((112, 80))
    picture.save(tmp_path / "plain.jpg", quality=90)
    picture.convert("L").save(tmp_path / "grey.jpg")
    picture.convert("CMYK").save(tmp_path / "cmyk.jpg")  # (nvJPEG refuses CMYK)
    picture.save(tmp_path / "png_inside.jpg", format="PNG")  # not a JPEG, whatever its name says
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: display rotated 90 degrees clockwise
    picture.save(tmp_path / "turned.jpg", exif=exif, quality=90)
    wide = (rng.integers(0, 65536, (30, 50))).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "sixteen_bit.png")
    paths = [str(tmp_path / n) for n in ("plain.jpg", "grey.jpg", "cmyk.jpg", "png_inside.jpg", "turned.jpg",
                                        "sixteen_bit.png")]
    assert [is_jpeg(torch.frombuffer(bytearray(Path(p).read_bytes()), dtype=torch.uint8)) for p in paths] == [
        True, True, True, False, True, False]
    for channels in (3, 1):
        assert max_difference(paths, channels, Resize("fit", 64), device) <= 2
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))  # a JPEG's start, then nothing
    with pytest.raises(CnnbenchError, match="broken.jpg"):
        decode_batched([*paths, str(tmp_path / "broken.jpg")], 3, Resize("fit", 64), torch.device(device))


def test_decode_device_is_checked() -> None:
    for wrong in ("gpu", "cuda:first"):
        with pytest.raises(CnnbenchError, match=f"data.decode_device must be cpu, cuda or cuda:N, got '{wrong}'"):
            validate(compose_config("data=imagefolder", "data.root=/x", f"data.decode_device={wrong}"))
    with pytest.raises(CnnbenchError, match="decodes image files .* data=digits is not decoded from files on the GPU"):
        validate(compose_config("data.decode_device=cuda"))
    if not torch.cuda.is_available():
        with pytest.raises(CnnbenchError, match="needs a CUDA GPU and none is visible; use data.decode_device=cpu"):
            validate(compose_config("data=imagefolder", "data.root=/x", "data.decode_device=cuda"))


def test_the_gpu_decoder_has_its_own_cache_and_a_streamed_folder_says_it_decodes_on_the_cpu(cifar_subset: Path
                                                                                           ) -> None:
    from cnnbench.data import load_data
    from cnnbench.data.cache import cache_key

    folder = ("data=imagefolder", f"data.root={cifar_subset}")
    assert cache_key(compose_config(*folder, "data.decode_device=cuda").data) != cache_key(compose_config(
        *folder).data)
    streamed = load_data(compose_config(*folder, "data.decode_device=cuda", "data.max_memory_gb=0").data)
    assert streamed.train.streamed
    assert any("streams, decoded by DataLoader workers on the CPU" in note for note in streamed.notes)


@pytest.mark.cuda
def test_a_run_decodes_its_folder_on_the_gpu(cifar_subset: Path, tmp_path: Path) -> None:
    proc = run_cli("data=imagefolder", f"data.root={cifar_subset}", "data.decode_device=cuda", "trainer.device=cuda",
                   "trainer.epochs=1", "logger.tensorboard=false", "logger.snapshots=0", "logger.figures=false",
                   "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
