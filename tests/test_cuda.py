"""The GPU paths: mixed precision (bf16, fp16 with a gradient scaler), channels_last, pinned-memory streaming,
nccl DDP, torch.compile. Marked ``cuda``: they skip without a GPU; ``scripts/checks/gpu_check.sh`` runs them."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cli_env, compose_config

from cnnbench.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.cuda
QUIET = ("logger.print_config=false", "logger.progress=false", "logger.tensorboard=false", "logger.figures=false",
         "logger.snapshots=0")


def train(tmp_path: Path, *overrides: str) -> dict:
    from cnnbench.train import run

    cfg = compose_config("trainer.device=cuda", "trainer.epochs=2", *QUIET, *overrides)
    return run(cfg, tmp_path)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path: Path, precision: str) -> None:
    results = train(tmp_path, f"trainer.precision={precision}", "model=small_resnet", "model.widths=[16,32,64]")
    assert results["precision"] == precision and results["device"].startswith("cuda")
    assert math.isfinite(results["test_loss"]) and results["test_acc"] > 20  # 2 epochs on digits learn something
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    if precision == "fp16":  # the gradient scaler ran, and its scale is checkpointed
        assert ckpt["scaler"] and ckpt["scaler"]["scale"] > 0
    assert 0 < results["mfu"] < 1


def test_channels_last_on_cuda(tmp_path: Path) -> None:
    from cnnbench.assemble import place_model
    from cnnbench.models import build_model

    model, channels_last = place_model(build_model("resnet18", num_classes=10, in_channels=3, image_size=32),
                                       compose_config().trainer, torch.device("cuda"))
    conv = model.stem[0].weight
    assert channels_last and conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
    assert train(tmp_path, "model=resnet18")["channels_last"] is True


def test_streamed_batches_come_from_pinned_memory(cifar_subset: Path, monkeypatch) -> None:
    from cnnbench.data import load_data, make_loaders, stream

    made: dict = {}
    data_loader = stream.DataLoader

    def recording(*args, **kwargs):  # torch's DataLoader, its arguments noted
        made.update(kwargs)
        return data_loader(*args, **kwargs)

    monkeypatch.setattr(stream, "DataLoader", recording)
    cfg = compose_config("data=imagefolder", f"data.root={cifar_subset}", "data.max_memory_gb=0.0001",
                         "data.batch_size=16")
    loader = make_loaders(load_data(cfg.data), cfg.data, torch.device("cuda"), seed=0, channels_last=True)["train"]
    assert isinstance(loader, stream.StreamLoader)
    x, y = next(iter(loader))
    assert made["pin_memory"] is True
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32 and x.shape[0] == 16


def test_photo_crops_on_the_gpu(tmp_path: Path) -> None:
    """The crop pipeline's batches made on the GPU: evaluation centre crops equal the CPU's, training crops are
    the model's size."""
    from test_crops import photo_tree, photos_cfg

    from cnnbench.data import load_data, make_loaders

    photo_tree(tmp_path, per_class=5)
    cfg = photos_cfg(tmp_path, "data.image_size=32", "data.batch_size=4")
    data = load_data(cfg)
    on = {d: make_loaders(data, cfg, torch.device(d), seed=0, channels_last=False) for d in ("cpu", "cuda")}
    assert torch.allclose(next(iter(on["cuda"]["val"]))[0].cpu(), next(iter(on["cpu"]["val"]))[0], atol=1e-5)
    x, y = next(iter(on["cuda"]["train"]))
    assert x.is_cuda and x.shape == (4, 3, 32, 32) and y.is_cuda


def test_nccl_ddp_with_one_process(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                           "-m", "cnnbench", "trainer.strategy=ddp", "trainer.device=cuda", "trainer.epochs=2",
                           "hydra.run.dir=run", *QUIET], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["processes"] == 1 and results["device"] == "cuda:0" and results["status"] == "completed"


def test_default_logging_on_cuda(tmp_path: Path) -> None:
    """Feature maps, filters, test charts and TensorBoard, as a user's run at the defaults draws them, from a
    model and data on the GPU."""
    from cnnbench.train import run

    cfg = compose_config("trainer.device=cuda", "trainer.epochs=1", "logger.print_config=false",
                         "logger.progress=false")
    results = run(cfg, tmp_path)
    assert results["status"] == "completed" and results["device"].startswith("cuda")
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))
    assert list((tmp_path / "figures").glob("*.png"))


def test_torch_compile_on_cuda(tmp_path: Path) -> None:
    results = train(tmp_path, "trainer.compile=true", "model=small_resnet", "model.widths=[16,32,64]")
    assert results["status"] == "completed" and math.isfinite(results["test_loss"])


GRAPH_RUN = ("trainer.device=cuda", "model=small_resnet", "model.widths=[16,32,64]", "data.num_train=1024",
             "data.num_test=128", "data.batch_size=64", "trainer.epochs=2", "trainer.precision=fp32",
             "trainer.deterministic=true", "trainer.accumulate_steps=2", "trainer.lookahead_every=2",
             "trainer.ema_decay=0.9", *QUIET)
GRAPHS = ("trainer.compile=true", "trainer.compile_mode=reduce-overhead")


def test_cuda_graph_steps_train_like_eager_ones_and_resume_bit_exact(tmp_path: Path) -> None:
    """``trainer.compile_mode=reduce-overhead`` replays the step as CUDA graphs. With accumulation, lookahead and
    EMA, the weights after 4 steps are the eager step's within rounding (the compiled kernels fuse differently);
    a graph run killed after a mid-epoch checkpoint and resumed ends bit for bit as the uninterrupted one. Each
    run is a process of its own, as the resumed one is (torch.compile keeps state per process)."""
    from conftest import run_cli, start_cli
    from test_resume import final_weights, wait_for_checkpoint

    printed = {}

    def trained(name: str, *extra: str) -> dict[str, torch.Tensor]:
        proc = run_cli(*GRAPH_RUN, *extra, f"hydra.run.dir={name}", cwd=tmp_path, timeout=1200, process=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        printed[name] = proc.stdout
        return final_weights(tmp_path / name)

    eager, graphs = trained("eager", "trainer.max_steps=4"), trained("graphs", *GRAPHS, "trainer.max_steps=4")
    for key, value in eager.items():  # (after 4 steps on the CPU: 1e-3 at most, on BatchNorm's running variances)
        torch.testing.assert_close(graphs[key], value, rtol=1e-2, atol=1e-3, msg=key)
    losses = [json.loads((tmp_path / name / "results.json").read_text())["test_loss"] for name in ("eager", "graphs")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
    uninterrupted = trained("whole", *GRAPHS)
    killed = start_cli(*GRAPH_RUN, *GRAPHS, "hydra.run.dir=killed", "trainer.checkpoint_every_steps=3",
                       cwd=tmp_path)
    ckpt = wait_for_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt", killed, min_step=3)
    killed.kill()
    killed.wait()
    assert ckpt["batch_in_epoch"] > 0
    resumed = trained("killed", *GRAPHS, "trainer.checkpoint_every_steps=3", "trainer.resume=auto")
    for key, value in resumed.items():
        assert torch.equal(value, uninterrupted[key]), key
    assert "compiled (reduce-overhead, CUDA graphs)" in printed["whole"]
