"""The record comparisons' adapters (scripts/compare/records.py) on stand-in files written here: each stand-in
holds the lines its record's adapter changes, in the places the record has them, and trains two steps on the CPU;
a missing file, or one without a line to change, is refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnbench.engine.runtime import cpu_supports_bf16
from scripts.compare.records import RECORDS, adapted_source

ROOT = Path(__file__).resolve().parents[1]

LOADER = '''
import os
from math import ceil
import torch
from torch import nn
import torch.nn.functional as F


class CifarLoader:
    def __init__(self, path, train=True, batch_size=4):
        data = torch.load(os.path.join(path, "train.pt" if train else "test.pt"), {map_location})
        self.images, self.labels = data["images"], data["labels"]
        self.images = (self.images.half() / 255).permute(0, 3, 1, 2)
        self.batch_size, self.shuffle = batch_size, train
        {extra_loader}

    def __len__(self):
        return len(self.images) // self.batch_size

    def __iter__(self):
        order = torch.randperm(len(self.images)) if self.shuffle else torch.arange(len(self.images))
        for i in range(len(self)):
            idxs = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield self.images[idxs], self.labels[idxs]


def evaluate(model, loader, tta_level=0):
    with torch.no_grad():
        x = loader.images.flip(-1) if tta_level else loader.images
        return (model(x).argmax(1) == loader.labels).float().mean().item()


def print_training_details(variables, is_final_entry):
    print("final" if is_final_entry else "epoch", variables["tta_val_acc"])
'''

NET = '''

class CifarNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.whiten = nn.Conv2d(3, 4, 2)
        self.head = nn.Linear(4 * 31 * 31, 10, bias=False)
        for mod in self.modules():
            mod.half()

    def init_whiten(self, images):
        self.whiten.weight.data.normal_()

    def forward(self, x):
        return self.head(self.whiten(x).flatten(1))


@torch.compile()
def lr_at(step):
    return 0.1 * (1 - step / 100)


def main(run, model):
    train_loader = CifarLoader("cifar10", train=True)
    test_loader = CifarLoader("cifar10", train=False)
    total_train_steps = {steps}
    starter = torch.cuda.Event(enable_timing=True)
    ender = torch.cuda.Event(enable_timing=True)
    starter.record()
    model.init_whiten(train_loader.images)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = 0
    for epoch in range(ceil(total_train_steps / len(train_loader))):
        for inputs, labels in train_loader:
            F.cross_entropy(model(inputs).float(), labels).backward()
            opt.param_groups[0]["lr"] = lr_at(step)
            opt.step()
            opt.zero_grad()
            step += 1
    tta_val_acc = evaluate(model, test_loader, tta_level=2)
    ender.record()
    torch.cuda.synchronize()
    time_seconds = 1e-3 * starter.elapsed_time(ender)
    print(f"trained {{step}} steps in {{model.head.weight.dtype}}")
    print_training_details(locals(), is_final_entry=True)
    return tta_val_acc
'''

AIRBENCH94 = '''
gpu = "cuda"
hyp = {{"opt": {{'train_epochs': 9.9}}}}


def init_whitening_conv(layer, images):
    layer.weight.data.normal_()


def main(run):
    train_loader = CifarLoader("cifar10", train=True)
    test_loader = CifarLoader("cifar10", train=False)
    whiten = nn.Conv2d(3, 4, 2)
    net = nn.Sequential(whiten, nn.Flatten(), nn.Linear(4 * 31 * 31, 10, bias=False))
    net = net.half().cuda()
    averaged = [p.detach().clone() for p in net.parameters() if p.dtype in (torch.half, torch.float)]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    total_time_seconds = 0.0
    starter = torch.cuda.Event(enable_timing=True)
    ender = torch.cuda.Event(enable_timing=True)
    starter.record()
    init_whitening_conv(whiten, train_loader.images)
    step = 0
    for epoch in range(ceil(hyp["opt"]["train_epochs"])):
        for inputs, labels in train_loader:
            F.cross_entropy(net(inputs).float(), labels).backward()
            opt.step()
            opt.zero_grad()
            step += 1
    tta_val_acc = evaluate(net, test_loader, tta_level=2)
    ender.record()
    torch.cuda.synchronize()
    total_time_seconds += 1e-3 * starter.elapsed_time(ender)
    print(f"trained {{step}} steps in {{net[2].weight.dtype}}, {{len(averaged)}} averaged")
    print_training_details(locals(), is_final_entry=True)
    return tta_val_acc
'''

STAND_INS = {
    "airbench94": (LOADER + AIRBENCH94).format(
        map_location="map_location=torch.device(gpu)",
        extra_loader="pass"),
    "airbench94_muon": (LOADER + NET).format(
        map_location='map_location=torch.device("cuda")',
        extra_loader="pass", steps="ceil(8 * len(train_loader))"),
    "hiverge": (LOADER.replace("as F\n", "as F\n\nMEAN = torch.tensor((0.5, 0.5, 0.5), dtype=torch.half)\n", 1)
                + NET).format(
        map_location='map_location=torch.device("cuda"), weights_only=True',
        extra_loader='self._buffer = torch.zeros(2).pin_memory()\n'
                     '        self._indices = torch.empty(len(self.labels), dtype=torch.long, device="cuda")',
        steps="ceil(7.59 * len(train_loader))"),
}


def write_data(folder: Path) -> Path:
    """A tiny ``cifar10/{train,test}.pt``: 8 images of 32x32 (uint8, NHWC) each, as the records load them."""
    data = folder / "cifar10"
    data.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        torch.save({"images": torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, generator=g),
                    "labels": torch.randint(0, 10, (8,), generator=g), "classes": [str(i) for i in range(10)]},
                   data / f"{split}.pt")
    return data


def child(name: str, file: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    """The adapter's child process (one run of the record) on the CPU, 1 epoch of 8 images at batch 4."""
    return subprocess.run([sys.executable, "-m", "scripts.compare.records", "--child", name, str(file), str(data), "0",
                           "cpu", "1", str(out), "0", "0"], capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.parametrize("name", list(RECORDS))
def test_adapter_runs_the_stand_in_two_steps_on_the_cpu(tmp_path: Path, name: str) -> None:
    source = STAND_INS[name]
    for old, _, _ in RECORDS[name].adaptations:  # the stand-in holds every line the adapter changes
        assert old in source, old
    file = tmp_path / f"{name}.py"
    file.write_text(source)
    data = write_data(tmp_path / "data")
    out = tmp_path / "result.json"
    proc = child(name, file, data, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dtype = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    assert f"trained 2 steps in {dtype}" in proc.stdout  # on the CPU, in the run's dtype, for the epochs asked
    result = json.loads(out.read_text())
    assert result["steps"] == 2 and result["dtype"] == str(dtype).removeprefix("torch.")
    assert 0 <= result["test_acc"] <= 100 and result["train_time_s"] >= 0 and result["compiled"] is False


@pytest.mark.parametrize("name", list(RECORDS))
def test_a_missing_or_unknown_file_is_one_line(tmp_path: Path, name: str) -> None:
    def refusal(file: Path) -> str:
        with pytest.raises(SystemExit) as stop:
            adapted_source(RECORDS[name], file)
        assert isinstance(stop.value.code, str) and "\n" not in stop.value.code
        return stop.value.code

    assert "no such file" in refusal(tmp_path / "nope.py")
    first = RECORDS[name].adaptations[0][0]
    other = tmp_path / "other.py"
    other.write_text(STAND_INS[name].replace(first, "somewhere_else"))
    message = refusal(other)
    assert repr(first) in message and RECORDS[name].source.split(" ")[0] in message


@pytest.mark.parametrize(("spec", "says"), [
    ("hiverge={missing}", "no such file"),
    ("hiverg={missing}", "NAME one of airbench94, airbench94_muon, hiverge"),
    ("hiverge", "expected NAME=PATH"),
])
def test_the_command_refuses_before_unpacking_anything(tmp_path: Path, spec: str, says: str) -> None:
    spec = spec.format(missing=tmp_path / "nope.py")
    proc = subprocess.run([sys.executable, "-m", "scripts.compare.records", "--record", spec,
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "work").exists()


SHIM = """#!/usr/bin/env bash
# python as gpu_check.sh calls it on a GPU machine: the CUDA probes pass, the record comparison checks its
# arguments and files for real (--check), and every other command is only written down
echo "$*" >> "$SHIM_LOG"
if [ "$1 $2" = "-m scripts.compare.records" ]; then
  shift 2
  exec "$REAL_PYTHON" -m scripts.compare.records "$@" --check
fi
exit 0
"""


def gpu_check(tmp_path: Path, **paths: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """scripts/checks/gpu_check.sh with the record files ``paths`` (AIRBENCH94=..., HIVERGE=...), through SHIM;
    its exit and the commands it ran."""
    shim = tmp_path / "python"
    shim.write_text(SHIM)
    shim.chmod(0o755)
    log = tmp_path / "commands.txt"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHON": str(shim), "SHIM_LOG": str(log),
           "REAL_PYTHON": sys.executable, **{k: str(v) for k, v in paths.items()}}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "checks" / "gpu_check.sh"), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=600)
    return proc, log.read_text().splitlines() if log.exists() else []


def test_the_gpu_check_compares_every_record_named_in_one_run(tmp_path: Path) -> None:
    files = {}
    for name, source in STAND_INS.items():
        files[name.upper()] = tmp_path / f"{name}.py"
        files[name.upper()].write_text(source)
    proc, commands = gpu_check(tmp_path, **files)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    compare = [c for c in commands if c.startswith("-m scripts.compare.records") and "--check" not in c]
    assert len(compare) == 1, commands  # one comparison: every file, every recipe, seeds interleaved
    for name in RECORDS:
        assert f"--record {name}={files[name.upper()]}" in compare[0]
    assert "--experiment cifar10_speedrun,cifar10_speedrun_muon,cifar10_speedrun_2s" in compare[0]
    assert "--device cuda --compile" in compare[0]
    for said in ("records.txt", "speedrun.txt"):  # checked before the tests, then by the comparison itself
        assert (tmp_path / "out" / said).read_text().count("every line to change found") == len(RECORDS)


def test_the_gpu_check_stops_before_any_device_time_on_a_wrong_record(tmp_path: Path) -> None:
    proc, commands = gpu_check(tmp_path, HIVERGE=tmp_path / "nope.py")
    assert proc.returncode == 2 and "no such file" in proc.stderr, proc.stderr
    assert not any(c.startswith("-m pytest") for c in commands) and any("--check" in c for c in commands)


@pytest.mark.parametrize(("module", "args", "says"), [
    ("records", ["--file", "x.py"], "unrecognized arguments: --file x.py"),
    ("records", ["--seeds", "0", "--epocs", "1"], "unrecognized arguments: --epocs 1"),
    ("records", ["--experiment", "cifar10_speedrn"], "--experiment cifar10_speedrn: no such experiment"),
    ("speedrun", ["--device", "cpu"], "unrecognized arguments: --device cpu"),
])
def test_a_wrong_argument_is_refused_before_any_run(tmp_path: Path, module: str, args: list[str], says: str) -> None:
    """Left-over arguments are cnnbench overrides: a mistyped option is said at once, not by Hydra hours later."""
    record = tmp_path / "hiverge.py"
    record.write_text(STAND_INS["hiverge"])
    given = ["--record", f"hiverge={record}", "--work", str(tmp_path / "work")] if module == "records" else []
    proc = subprocess.run([sys.executable, "-m", f"scripts.compare.{module}", *given, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "work").exists()
