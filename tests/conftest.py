"""Shared fixtures: Hydra composition, the CLI in-process or in a subprocess, and a small real CIFAR-10 subset."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from cnnbench.config import register_configs

ROOT = Path(__file__).resolve().parents[1]
CIFAR_TAR = ROOT.parent / "shared" / "datasets" / "cifar10-jpg.tar.gz"
HYMENOPTERA_TAR = ROOT.parent / "shared" / "datasets" / "hymenoptera.tar"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

register_configs()

# Under pytest-xdist (CI runs `pytest -n 2`), each worker gets its share of the cores: torch (and every cnnbench
# process a test starts, which reads OMP_NUM_THREADS) would otherwise run as many threads as there are cores in
# every worker, and oversubscribed threads slow each other far more than the shared cores alone would.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT", "").isdigit():
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // int(
        os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def compose_config(*overrides: str) -> DictConfig:
    """The config `cnnbench <overrides>` would run, composed in-process."""
    with initialize_config_module(config_module="cnnbench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(*args: str, cwd: Path, env: dict | None = None, timeout: int = 300, process: bool = False
            ) -> subprocess.CompletedProcess:
    """Run ``cnnbench ARGS`` in ``cwd`` and capture its output and exit code: in this process (``main()`` with
    ``sys.argv``, the process-wide state it changes put back), or as ``python -m cnnbench`` in a new one with
    ``process=True`` or an ``env`` (where the process itself is under test: signals, launchers, start-up)."""
    if process or env is not None:
        return subprocess.run([sys.executable, "-m", "cnnbench", *args], cwd=cwd, env=cli_env(cwd, **(env or {})),
                              capture_output=True, text=True, timeout=timeout)
    return run_in_process(args, cwd)


def cli_env(cwd: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``cnnbench`` process started by a test: its data cache under ``cwd`` (not the
    user's), and Hydra's errors as the command prints them for users."""
    env = {**os.environ, "CNNBENCH_CACHE": str(cwd / "cache"), **extra}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def start_cli(*args: str, cwd: Path, **extra_env: str) -> subprocess.Popen:
    """``cnnbench ARGS`` started as a new process in ``cwd`` (output captured as text): for tests that act on it
    while it runs."""
    return subprocess.Popen([sys.executable, "-m", "cnnbench", *args], cwd=cwd, env=cli_env(cwd, **extra_env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_forked(args: tuple[str, ...], cwd: Path, prepare=None) -> subprocess.CompletedProcess:
    """``cnnbench ARGS`` in a child process forked from this one, after ``prepare()`` (fault injection) there: a
    process of its own, that may be killed or crash, without the ~8 s a new Python spends importing torch,
    torchvision and torchmetrics on 2 cores. One thread (OMP_NUM_THREADS=1: a forked child must not use the
    parent's OpenMP pool)."""
    log = cwd / f".forked-{os.getpid()}.log"
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            import signal
            import traceback

            from hydra.core.global_hydra import GlobalHydra

            out = open(log, "w")  # noqa: SIM115 (closed by _exit)
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
            sys.stdout = sys.stderr = out
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            GlobalHydra.instance().clear()
            if prepare is not None:
                prepare()
            try:
                code = _main(args, cwd, OMP_NUM_THREADS="1")
            except BaseException:
                traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    text = log.read_text(errors="replace") if log.is_file() else ""
    log.unlink(missing_ok=True)
    return subprocess.CompletedProcess(["cnnbench", *args], os.waitstatus_to_exitcode(status), text, text)


def _main(args: tuple[str, ...], cwd: Path, **extra_env: str) -> int:
    """Run ``cnnbench ARGS`` as ``main()`` here, in ``cwd`` with the environment of ``cli_env``; its exit code.
    (The callers restore the process state, or leave the process.)"""
    from cnnbench.train import main

    os.chdir(cwd)
    env = cli_env(cwd, **extra_env)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["cnnbench", *args]
    try:
        main()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    return 0


def run_in_process(args: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    """``cnnbench ARGS`` as ``main()`` in this process, in ``cwd``; the working directory, environment, argv,
    torch's thread count and determinism and the signal handlers are restored afterwards, so one run cannot
    change the next test's."""
    import signal

    import torch

    saved_cwd, saved_env, saved_argv = os.getcwd(), dict(os.environ), sys.argv
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    out, err = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = _main(args, cwd)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess(["cnnbench", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    """Run the ``cnnbench`` command in this process in ``cwd``; returns what ``run_cli`` does. For tests of what
    the command prints and exits with, where a new process is not the point."""
    return lambda *args, cwd: run_in_process(args, cwd)


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory) -> Path:
    """The first 20 train and 10 test JPEGs of each class of the real CIFAR-10, in ImageFolder layout."""
    if not CIFAR_TAR.is_file():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR_TAR}")
    out = tmp_path_factory.mktemp("cifar_subset")
    quota = {"train": 20, "test": 10}
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(CIFAR_TAR) as tar:
        for member in tar:
            parts = Path(member.name).parts  # cifar10/<split>/<class>/<file>.jpg
            if not member.isfile() or len(parts) != 4:
                continue
            key = (parts[1], parts[2])
            if taken.get(key, 0) < quota.get(parts[1], 0):
                taken[key] = taken.get(key, 0) + 1
                target = out / parts[1] / parts[2] / parts[3]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
            if len(taken) == 20 and all(taken[k] >= quota[k[0]] for k in taken):
                break
    return out


@pytest.fixture(scope="session")
def hymenoptera(tmp_path_factory) -> Path:
    """The hymenoptera photos (398 JPEGs of ants and bees, 193 to 2592 px wide): their folder of train/ and val/."""
    if not HYMENOPTERA_TAR.is_file():
        pytest.skip(f"hymenoptera photos not found at {HYMENOPTERA_TAR}")
    out = tmp_path_factory.mktemp("hymenoptera")
    with tarfile.open(HYMENOPTERA_TAR) as tar:
        tar.extractall(out, filter="data")
    return next(p.parent for p in out.rglob("train") if p.is_dir())


def tensorboard_run(run_dir: Path) -> Path:
    """The one folder of event files under ``<run dir>/tensorboard/`` (named after the run)."""
    folders = [p for p in (run_dir / "tensorboard").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    return folders[0]


# Module fixtures that train a run end to end: every test reading one is in the slow set (CI runs it; the
# everyday loop, `pytest -m "not slow"`, does not wait for the training).
TRAINED_RUN_FIXTURES = {"visual_run", "events", "trained_run", "trained", "reference", "source_run", "ddp_run",
                        "completed"}


def pytest_collection_modifyitems(config, items) -> None:
    """Tests reading a trained run are ``slow``; tests marked ``cuda`` skip, with the reason, where no CUDA GPU
    is visible."""
    import torch

    for item in items:
        if TRAINED_RUN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (scripts/checks/gpu_check.sh runs these on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


FAULTS = """
import resource, sys, torch
{setup}
def step():  # a training step's pattern: large blocks (above glibc's mmap threshold) alive together, then freed
    blocks = [torch.ones(40 * 2**20, dtype=torch.uint8) for _ in range(4)]
    del blocks
for _ in range(10):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(setup: str) -> int:
    """Minor page faults of 10 steps that each allocate four 40 MiB blocks and free them, in a new process after
    ``setup`` (Python source; its ``sys.exit(3)`` skips the test: no mallopt in this C library)."""
    done = subprocess.run([sys.executable, "-c", FAULTS.format(setup=setup)], capture_output=True, text=True,
                          timeout=600)
    if done.returncode == 3:
        pytest.skip("this C library has no mallopt")
    assert done.returncode == 0, done.stderr
    return int(done.stdout)
