"""Choosing a model to ship: latency measured beside accuracy (with the Pareto front), int8 through ONNX Runtime
with what it costs, and distillation from a finished run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from torch import nn

from cnnbench.commands.evaluate import main as eval_main
from cnnbench.commands.export import main as export_main
from cnnbench.evaluation.latency import time_torch
from cnnbench.precision import Precision
from cnnbench.report_files import pareto_front

QUIET = ["logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.print_config=false",
         "logger.progress=false"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """small_resnet on the digits for 40 steps (in this process)."""
    tmp = tmp_path_factory.mktemp("ship")
    proc = run_cli(*QUIET, "model=small_resnet", "model.widths=[8,16,32]", "trainer.max_steps=40",
                   "hydra.run.dir=run", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


def test_latency_is_timed_after_a_warm_up_with_its_noise() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    t = time_torch(model, (1, 32, 32), torch.device("cpu"), Precision("fp32", "cpu"), batch=16, calls=20, warmup=3)
    assert 0 < t.p50_ms <= t.p95_ms and t.calls == 20 and t.noise >= 0 and t.images_per_s > 0
    assert t.threads == torch.get_num_threads() and t.runtime == "eager" and t.throughput_batch == 16


def test_the_pareto_front_keeps_what_nothing_beats_on_both() -> None:
    points = [(1.0, 80.0), (2.0, 85.0), (2.5, 84.0), (3.0, 90.0), (0.5, 70.0), (4.0, 89.0), (1.0, 75.0)]
    assert pareto_front(points) == [(0.5, 70.0), (1.0, 80.0), (2.0, 85.0), (3.0, 90.0)]


def test_speed_is_measured_for_eager_and_each_onnx_export_and_recorded(small_run: Path, capsys) -> None:
    export_main([f"run={small_run}", "format=onnx", "overwrite=true"])
    eval_main([f"run={small_run}", "speed=true", "speed_compile=false", "speed_calls=10", "speed_batch=16"])
    out = capsys.readouterr().out
    measured = json.loads((small_run / "latency_cpu.json").read_text())
    runtimes = [t["runtime"] for t in measured["timings"]]
    assert runtimes == ["eager", "onnxruntime"] and "batch-1 p50 ms" in out
    assert all(t["p50_ms"] > 0 and t["throughput_batch"] == 16 for t in measured["timings"])
    assert measured["step"] == json.loads((small_run / "results.json").read_text())["scored_step"]


def test_int8_export_scores_and_times_both_files(small_run: Path, capsys) -> None:
    """cnnbench-export format=onnx int8=true: model.int8.onnx and its card, with the int8 and float test accuracy,
    their agreement and both latencies; int8 beside another format is refused in one line."""
    export_main([f"run={small_run}", "format=onnx", "int8=true", "calib_images=64", "overwrite=true"])
    printed = capsys.readouterr().out
    card = json.loads((small_run / "export" / "model.int8.onnx.json").read_text())
    q = card["int8"]
    assert (small_run / "export" / "model.int8.onnx").is_file() and card["quantization"]["calibration_images"] == 64
    assert q["test_images"] == 359 and abs(q["acc_change"] - (q["test_acc_int8"] - q["test_acc_float"])) < 1e-9
    assert q["top1_agreement"] > 80 and [t["runtime"] for t in q["timings"]] == ["onnxruntime", "onnxruntime-int8"]
    assert "int8: wrote model.int8.onnx" in printed
    with pytest.raises(SystemExit) as stop:
        export_main([f"run={small_run}", "format=torchscript", "int8=true", "overwrite=true"])
    assert stop.value.code == 2 and "give format=onnx" in capsys.readouterr().err


def test_a_student_with_only_the_teacher_s_term_learns_the_teacher_s_answers(tmp_path: Path) -> None:
    """A known answer: with alpha=1 and T=1 a student (LeNet-5, another initialisation) trained on a fixed
    teacher's logits alone (a nearly untrained LeNet-5: answers no label would teach) comes to agree with it."""
    from cnnbench.commands.evaluate import eval_loader
    from cnnbench.finished_run import load_finished_run

    assert run_cli(*QUIET, "trainer.max_steps=3", "hydra.run.dir=teacher", cwd=tmp_path).returncode == 0
    proc = run_cli(*QUIET, "transfer=distill", f"transfer.teacher={tmp_path / 'teacher'}", "transfer.alpha=1",
                   "transfer.temperature=1", "optimizer=adam", "optimizer.lr=3e-3", "trainer.epochs=12",
                   "trainer.seed=5", "data.val_fraction=0", "hydra.run.dir=student", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "student" / "results.json").read_text())
    assert results["teacher"]["run"] == str(tmp_path / "teacher") and results["teacher"]["step"] == 3
    teacher, student = (load_finished_run(tmp_path / d) for d in ("teacher", "student"))
    x, labels = next(iter(eval_loader(student, "test", None, {}, 512, torch.device("cpu"))))
    with torch.no_grad():
        t, s = teacher.model(x.float()), student.model(x.float())
    agree = (t.argmax(1) == s.argmax(1)).float().mean().item()
    label_acc = (t.argmax(1) == labels).float().mean().item()
    assert agree > 0.9 and agree > label_acc + 0.3, (agree, label_acc)  # (the teacher's answers, not the labels)


def test_distillation_resumes_exactly(tmp_path: Path) -> None:
    """A distilled run of one epoch resumed to two ends with the weights of one run of two (the teacher adds no
    state a checkpoint would have to carry)."""
    assert run_cli(*QUIET, "trainer.max_steps=3", "hydra.run.dir=teacher", cwd=tmp_path).returncode == 0
    common = [*QUIET, "transfer=distill", f"transfer.teacher={tmp_path / 'teacher'}", "scheduler=none",
              "trainer.deterministic=true", "data.num_train=320"]
    assert run_cli(*common, "trainer.epochs=2", "hydra.run.dir=whole", cwd=tmp_path).returncode == 0
    assert run_cli(*common, "trainer.epochs=1", "hydra.run.dir=split", cwd=tmp_path).returncode == 0
    resumed = run_cli(*common, "trainer.epochs=2", "trainer.resume=auto", "hydra.run.dir=split", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    whole, split = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=True)["model"]
                    for d in ("whole", "split"))
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_a_teacher_of_other_classes_is_refused(tmp_path: Path) -> None:
    assert run_cli(*QUIET, "trainer.max_steps=3", "hydra.run.dir=teacher", cwd=tmp_path).returncode == 0
    proc = run_cli(*QUIET, "transfer=distill", f"transfer.teacher={tmp_path / 'teacher'}", "data.class_names=[a,b,c,"
                   "d,e,f,g,h,i,j]", "trainer.max_steps=2", cwd=tmp_path)
    assert proc.returncode == 2 and "a teacher answers for the same classes" in proc.stderr, proc.stderr[-2000:]
    proc = run_cli(*QUIET, "transfer=distill", "trainer.max_steps=2", cwd=tmp_path)
    assert proc.returncode == 2 and "transfer=distill needs transfer.teacher=" in proc.stderr


@pytest.mark.slow
def test_a_sweep_of_four_architectures_ends_with_latency_and_the_pareto_plot(tmp_path: Path) -> None:
    """(Issue 45) accuracy, params, MACs, batch-1 latency (p50, p95) and throughput in one leaderboard, and the
    accuracy-against-latency plot with its Pareto front."""
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *QUIET, "model=lenet5,small_resnet,vgg11_bn,alexnet", "trainer.max_steps=10",
                   "trainer.measure_latency=true", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = (sweep / "leaderboard.md").read_text().splitlines()[0]
    for column in ("params", "MACs", "test acc %", "latency ms (p50)", "p95 ms", "serving img/s"):
        assert column in header, header
    assert (sweep / "acc_vs_latency.png").is_file()
    for job in sweep.glob("*/results.json"):
        latency = json.loads(job.read_text())["latency"]
        assert latency[0]["runtime"] == "eager" and latency[0]["p50_ms"] > 0
