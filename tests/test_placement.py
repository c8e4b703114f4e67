"""Speed on every machine: FLOP accounting and MFU, the peak probe and its cache, thread budgets, one GPU per
sweep job, and the warning when other processes compete for the cores."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import page_faults, run_cli
from torch import nn

from cnnbench.anatomy import count_macs
from cnnbench.engine import hardware
from cnnbench.engine.hardware import efficiency, machine_name, peak_tflops
from cnnbench.engine.placement import LoadProbe, describe, job_device, thread_budget


def test_flops_match_a_hand_count() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8 * 4 * 4, 10))
    # conv: 8 output channels x 8x8 positions x (3 x 3 x 3) weights; linear: 128 x 10 (ReLU and pooling: no MACs)
    macs = 8 * 8 * 8 * 27 + 128 * 10
    assert count_macs(net, (3, 8, 8)) == macs
    speed = efficiency(macs, images_per_s=1000.0, peak=0.5, processes=2)
    assert speed["train_tflops"] == pytest.approx(3 * 2 * macs * 1000 / 1e12)  # forward + backward = 3 forwards
    assert speed["peak_tflops"] == 1.0 and speed["mfu"] == pytest.approx(speed["train_tflops"])


def test_peak_is_measured_once_and_cached(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(hardware, "probe_peak_tflops", lambda *a, **k: calls.append(a) or 1.25)  # (measuring:
    cpu = torch.device("cpu")  # test_the_peak_probe_grows_sizes_while_they_improve)
    first = peak_tflops(cpu, "fp32")
    assert first == 1.25 and peak_tflops(cpu, "fp32") == first and len(calls) == 1
    cached = json.loads((tmp_path / "cnnbench" / "peak_tflops.json").read_text())
    (key,) = cached
    assert machine_name(cpu) in key and torch.__version__ in key and "| fp32 |" in key
    assert key.endswith(hardware.PROBE_VERSION)  # peaks of an earlier probe are not reused
    (tmp_path / "cnnbench" / "peak_tflops.json").write_text("{not json")  # a corrupt cache is measured again
    assert peak_tflops(cpu, "fp32") > 0 and len(calls) == 2


def test_precision_names_are_plain_strings() -> None:
    """The config's enum resolves to its value: the peak's cache key reads "| fp32 |" whichever way it was set."""
    from cnnbench.config.schema import PrecisionChoice
    from cnnbench.engine.runtime import resolve_precision

    for choice in (PrecisionChoice.fp32, "fp32"):
        name = resolve_precision(choice, torch.device("cpu")).name
        assert type(name) is str and f"{name}" == "fp32"


def test_a_run_near_the_cached_peak_measures_it_again(tmp_path: Path, monkeypatch) -> None:
    """A peak probed while other work shared the cores is too low: a run reaching more than RECHECK_SHARE of it
    probes again, and the cache keeps the larger of the two."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    probes = iter([0.10, 0.30, 0.25])
    monkeypatch.setattr(hardware, "probe_peak_tflops", lambda *a, **k: next(probes))
    cpu = torch.device("cpu")
    assert peak_tflops(cpu, "fp32") == 0.10  # measured on a busy host
    assert peak_tflops(cpu, "fp32", achieved=0.08) == 0.10  # 80% of it: believed
    assert peak_tflops(cpu, "fp32", achieved=0.09) == 0.30  # 90%: probed again, the larger kept
    assert peak_tflops(cpu, "fp32", achieved=0.20) == 0.30  # (67%: no probe)
    assert peak_tflops(cpu, "fp32", achieved=0.29) == 0.30  # probed again (0.25), the larger kept
    assert next(probes, None) is None  # exactly three probes


def test_the_peak_probe_grows_sizes_while_they_improve() -> None:
    """The sweep keeps growing the matrices while the rate improves (a fake rate per size stands in for the
    timer); the peak is the best rate it measured."""
    cpu = torch.device("cpu")
    tried: list[int] = []

    def rates(table: dict[int, float]):
        return lambda n: tried.append(n) or table[n]

    assert hardware.probe_peak_tflops(cpu, torch.float32, rate=rates({1024: 1.09, 2048: 2.06, 4096: 1.83})) == 2.06
    assert tried == [1024, 2048, 4096]
    tried.clear()
    assert hardware.probe_peak_tflops(cpu, torch.float32, rate=rates({1024: 1.39, 2048: 1.40, 4096: 9.0})) == 1.40
    assert tried == [1024, 2048]  # 2048 did not beat 1024 by 2%: the sweep stops there
    tried.clear()
    assert hardware.probe_peak_tflops(cpu, torch.float32, rate=rates({1024: 1.0, 2048: 1.5, 4096: 2.5})) == 2.5
    measured = hardware.gemm_tflops(cpu, torch.float32, 256, seconds=0.05)  # and a real one, of one size
    assert 0 < measured < 1e3


def test_machine_name_says_cpu_model_and_flags() -> None:
    name = machine_name(torch.device("cpu"))
    model, flags = hardware.cpu_info()
    assert name.startswith(model) and f", {torch.get_num_threads()} thread" in name
    assert set(flags) <= set(hardware.CPU_FLAGS) and all(f in name for f in flags)


def test_thread_budgets_of_parallel_processes_are_disjoint() -> None:
    assert thread_budget(None, env={}, available=2) == (2, "2 cores")
    for cores in (2, 8, 16):
        for local in (1, 2, 3, 4):  # torchrun sets OMP_NUM_THREADS=1 itself: it is not the user's choice there
            threads, _ = thread_budget(None, env={"LOCAL_WORLD_SIZE": str(local), "OMP_NUM_THREADS": "1"},
                                       available=cores)
            assert threads == max(1, cores // local) and (threads * local <= cores or threads == 1)
    assert thread_budget(None, env={"OMP_NUM_THREADS": "1"}, available=2) == (1, "OMP_NUM_THREADS")  # joblib
    assert thread_budget(3, env={"LOCAL_WORLD_SIZE": "2"}, available=2) == (3, "trainer.threads")


def test_sweep_jobs_take_one_gpu_each(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cuda = torch.device("cuda")
    assert [job_device(cuda, job) for job in range(6)] == [torch.device("cuda", i) for i in (0, 1, 2, 3, 0, 1)]
    assert job_device(cuda, None) == cuda  # not a sweep
    assert job_device(torch.device("cuda", 2), 1) == torch.device("cuda", 2)  # a GPU the user named
    assert job_device(torch.device("cpu"), 1) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert job_device(cuda, 3) == cuda


SPIN = "import time\nwhile time.process_time() < 1.5: pass"  # 1.5 CPU seconds (however busy the machine is)


def _ended(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def test_a_competing_process_is_noticed() -> None:
    """Another process (here not this one's child: its parent left without waiting) keeps a core busy."""
    probe = LoadProbe()
    launcher = f"import subprocess, sys; print(subprocess.Popen([sys.executable, '-c', {SPIN!r}]).pid)"
    pid = int(subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, timeout=120).stdout)
    ceiling = time.monotonic() + 120
    while not _ended(pid) and time.monotonic() < ceiling:  # wait on the process itself
        time.sleep(0.05)
    other = probe.competing()
    assert other is not None and other >= 0.5, other
    assert "warning: other processes keep" in describe((2, "2 cores"), probe)


def test_this_runs_own_worker_processes_are_not_competition() -> None:
    """Decoding workers (a process pool) and other children this run waits for are its own work."""
    probe = LoadProbe()
    subprocess.run([sys.executable, "-c", SPIN], timeout=120)
    # the child's 1.5 CPU seconds count as this run's own time, which competing() takes off the busy time (a
    # busy machine, e.g. another test worker, changes the busy time but not this)
    own_seconds = probe._read()[2] - probe.start[2]
    assert own_seconds >= 1.4, own_seconds


@pytest.mark.slow
def test_run_reports_threads_and_mfu(tmp_path: Path) -> None:
    proc = run_cli("trainer.max_steps=3", "trainer.epochs=1", "trainer.threads=1", "logger.print_config=false",
               "logger.progress=false", "logger.tensorboard=false", "logger.figures=false", "hydra.run.dir=run",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "cpu threads: 1 (trainer.threads)" in proc.stdout and "MFU" in proc.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["threads"] == 1 and results["machine"].endswith(", 1 thread")
    assert 0 < results["mfu"] < 1 and results["train_tflops"] == pytest.approx(results["mfu"] * results["peak_tflops"])
    assert results["train_tflops"] == pytest.approx(6 * results["macs"] * results["train_images_per_s"] / 1e12)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_host_memory_is_reused_without_page_faults() -> None:
    returned = page_faults("")
    kept = page_faults("from cnnbench.engine.host_memory import keep_freed_memory\n"
                       "if not keep_freed_memory():\n    sys.exit(3)")
    assert returned > 10 * 4 * 5000  # each 40 MiB block faulted in again (10,240 pages of 4 KiB)
    assert kept * 10 < returned  # the memory freed reused from the heap
