"""What cnnbench reads back is input too: a run directory's manifest and files, checkpoints' configs, outputs of
other commands, runs still training, carved splits, signals outside the loop, FIFOs, long names.

Each test is named after the rule it protects and says which class of the round it covers (#N). Training happens
in this process on the digits with a handful of steps; one module-scoped run serves the commands.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_env, compose_config, run_cli, run_forked

from cnnbench import manifest, rundir
from cnnbench.commands.evaluate import main as eval_main
from cnnbench.commands.export import main as export_main
from cnnbench.commands.predict import main as predict_main
from cnnbench.commands.report import main as report_main
from cnnbench.errors import CnnbenchError

QUIET = ["logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.print_config=false",
         "logger.progress=false"]
TINY = [*QUIET, "trainer.epochs=1", "trainer.max_steps=3"]
SECRET = "s3cr3t-t0ken-value"


def error_of(main, args: list[str], capsys) -> tuple[int, str]:
    """Run a command's ``main(args)`` that must stop; its exit code and its stderr (asserted one line)."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return stop.value.code, err


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A completed 3-step digits run (in this process: a few seconds)."""
    tmp = tmp_path_factory.mktemp("read_back")
    proc = run_cli(*TINY, "hydra.run.dir=run", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


@pytest.fixture
def copy_of(tiny_run: Path, tmp_path: Path):
    """A fresh copy of the tiny run's directory (tests edit it)."""
    def make(name: str = "copy") -> Path:
        target = tmp_path / name
        shutil.copytree(tiny_run, target, symlinks=True)
        return target
    return make


# -- #1, #2: the manifest is input; nothing is written through a link -----------------------------------------------
def test_manifest_lines_that_leave_the_run_directory_are_never_removed(tmp_path: Path) -> None:
    """#1: ``..`` (after a folder, or after ``./``), a symlinked folder inside the run, ``./`` and absolute lines:
    overwrite's clear removes nothing outside, never the run directory, and keeps a user's notes."""
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "precious.txt").write_text("keep")
    (outside / "sub" / "deep.txt").write_text("keep")
    (tmp_path / "victim.txt").write_text("keep")
    run = tmp_path / "runs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"ours")
    (run / "notes.txt").write_text("the user's")
    os.symlink(outside, run / "lnk")
    lines = ["checkpoints/last.pt", "checkpoints/../../../victim.txt", "./../../victim.txt", "lnk/precious.txt",
             "lnk/sub/", "./", ".", "/etc/hostname", f"{tmp_path}/victim.txt", "checkpoints/./../notes.txt"]
    (run / manifest.MANIFEST).write_text("".join(f"{line}\n" for line in lines))
    assert manifest.owned(run) == ["checkpoints/last.pt"]
    kept = manifest.clear(run)
    assert not (run / "checkpoints" / "last.pt").exists() and run.is_dir()
    assert kept == ["notes.txt"] and (run / "notes.txt").read_text() == "the user's"
    assert (outside / "precious.txt").read_text() == "keep" and (outside / "sub" / "deep.txt").is_file()
    assert (tmp_path / "victim.txt").read_text() == "keep" and (run / "lnk").is_symlink()


def test_clear_removes_only_regular_files_and_empty_folders(tmp_path: Path) -> None:
    """#1: a recorded folder loses its regular files; a link or FIFO inside stays, and so does the folder."""
    run = tmp_path / "run"
    (run / "tensorboard" / "a").mkdir(parents=True)
    (run / "tensorboard" / "a" / "events").write_bytes(b"x")
    os.mkfifo(run / "tensorboard" / "a" / "pipe")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", run / "tensorboard" / "a" / "link")
    (run / manifest.MANIFEST).write_text("tensorboard/a/\n")
    manifest.clear(run)
    assert not (run / "tensorboard" / "a" / "events").exists()
    assert (run / "tensorboard" / "a" / "pipe").exists() and (run / "tensorboard" / "a" / "link").is_symlink()
    assert (tmp_path / "elsewhere").is_dir()


def test_no_write_goes_through_a_link_or_takes_a_users_file(tmp_path: Path) -> None:
    """#2 and #4: a manifest that is a link is never appended to; a path through a linked folder, a FIFO, or a
    file that cnnbench did not record is refused before anything is written."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("not cnnbench's")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(target, run / manifest.MANIFEST)
    with pytest.raises(OSError, match="symbolic link or a FIFO"):
        manifest.own(run, "results.json")
    assert target.read_text() == "not cnnbench's" and not manifest.is_run_dir(run)
    other = tmp_path / "other"
    (other / "checkpoints").mkdir(parents=True)
    (other / manifest.MANIFEST).write_text("")
    (other / "checkpoints" / "last.pt").write_bytes(b"the user's")
    os.symlink(tmp_path, other / "linked")
    os.mkfifo(other / "results.json")
    for rel, message in (("checkpoints/last.pt", "cnnbench did not write it"), ("linked/x.png", "symbolic link"),
                         ("results.json", "not a regular file")):
        with pytest.raises(CnnbenchError, match=message):
            manifest.own(other, rel)
    assert (other / manifest.MANIFEST).read_text() == ""


def test_a_run_refuses_a_directory_whose_names_it_would_write_are_not_its_own(cli, tmp_path: Path) -> None:
    """#4 and #11: an empty manifest beside a user's checkpoints/last.pt, a FIFO at results.json or a linked
    manifest: refused in one line before any work, and nothing changes (no hang on the FIFO)."""
    cases = {"users_last": lambda d: (d / "checkpoints").mkdir() or (d / "checkpoints" / "last.pt").write_bytes(b"u"),
             "fifo": lambda d: os.mkfifo(d / "results.json"),
             "linked": lambda d: (d / manifest.MANIFEST).unlink() or os.symlink(tmp_path / "x", d / manifest.MANIFEST)}
    (tmp_path / "x").write_text("")
    for name, plant in cases.items():
        run = tmp_path / name
        run.mkdir()
        (run / manifest.MANIFEST).write_text("")
        plant(run)
        before = sorted(p.name for p in run.rglob("*"))
        proc = cli(*TINY, f"hydra.run.dir={run}", "trainer.overwrite=true", cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (name, proc.stderr)
        assert sorted(p.name for p in run.rglob("*")) == before, name
    assert (tmp_path / "users_last" / "checkpoints" / "last.pt").read_bytes() == b"u"


# -- #3: a checkpoint's config is data ---------------------------------------------------------------------------------
def _edited(run: Path, **changes: object) -> Path:
    """``run``'s best.pt with its recorded config changed (``section__key=value``)."""
    path = run / "checkpoints" / "best.pt"
    ckpt = torch.load(path, weights_only=True)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        ckpt["config"][section][key] = value
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"trainer__precision": "${oc.env:CNNBENCH_TEST_SECRET}"}, "trainer.precision"),
    ({"model__name": "${oc.env:CNNBENCH_TEST_SECRET}"}, "unknown model '${oc.env:CNNBENCH_TEST_SECRET}'"),
    ({"data__batch_size": -1}, "data.batch_size must be a positive integer, got -1"),
    ({"trainer__precision": "fp64"}, "trainer.precision"),
    ({"trainer__tta": 9}, "trainer.tta must be 0, 1 or 2, got 9"),
    ({"optimizer__lr": float("nan")}, "optimizer.lr=nan is not a finite number"),
])
def test_a_checkpoints_config_is_never_interpolated_and_passes_the_command_lines_checks(
        copy_of, capsys, monkeypatch, changes: dict, message: str) -> None:
    """#3: an edited recorded config: no resolver runs (the secret never appears), and values the command line
    refuses are refused in one line, by every command that reads a run."""
    monkeypatch.setenv("CNNBENCH_TEST_SECRET", SECRET)
    run = copy_of()
    _edited(run, **changes)
    image = run.parent / "x.png"
    from PIL import Image

    Image.new("L", (8, 8), 90).save(image)
    for main, extra in ((eval_main, []), (predict_main, [f"images={image}"]),
                        (export_main, ["format=torchscript", f"out={run.parent / 'm.pt'}"])):
        code, err = error_of(main, [f"run={run}", *extra], capsys)
        assert code == 2 and message in err and SECRET not in err, err


def test_recorded_strings_keep_every_character(tmp_path: Path) -> None:
    """#3: ``${...}`` and backslashes in a recorded string come back exactly as written."""
    from omegaconf import OmegaConf

    from cnnbench.config.artefact import literal

    for text in ("${oc.env:HOME}", "a\\${x}", "a\\\\${x}", "\\", "${", "C:\\dir\\${y}z", "$ {x}"):
        assert OmegaConf.to_container(OmegaConf.create({"k": literal(text)}), resolve=True)["k"] == text


def test_the_leaderboard_reads_recorded_configs_as_plain_data(copy_of, monkeypatch, capsys) -> None:
    """#3: .hydra/config.yaml with an interpolation: the report shows the text, never the environment's value."""
    monkeypatch.setenv("CNNBENCH_TEST_SECRET", SECRET)
    from cnnbench.leaderboard import recorded_value

    run = copy_of()
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text() + "extra:\n  key: ${oc.env:CNNBENCH_TEST_SECRET}\n")
    assert recorded_value(run, "extra.key") == "${oc.env:CNNBENCH_TEST_SECRET}"


# -- #4, #6 (issue 40): outputs never replace another command's or a user's files ------------------------------------
def test_report_replaces_only_what_it_wrote(tiny_run: Path, tmp_path: Path, capsys) -> None:
    """#4: a user's leaderboard.md in --out is refused (kept byte for byte); the report's own files are
    replaced on the next call; a file the user edited since is refused again; --overwrite replaces it."""
    out = tmp_path / "report"
    out.mkdir()
    (out / "leaderboard.md").write_text("my notes")
    code, err = error_of(report_main, [str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and "leaderboard.md exists and cnnbench-report did not write it" in err
    assert (out / "leaderboard.md").read_text() == "my notes" and not (out / "leaderboard.csv").exists()
    (out / "leaderboard.md").unlink()
    report_main([str(tiny_run), "--out", str(out)])
    report_main([str(tiny_run), "--out", str(out)])  # its own files: replaced
    (out / "leaderboard.csv").write_text("edited")
    code, err = error_of(report_main, [str(tiny_run), "--out", str(out)], capsys)
    assert code == 2 and "leaderboard.csv" in err
    report_main([str(tiny_run), "--out", str(out), "--overwrite"])
    assert (out / "leaderboard.csv").read_text().startswith("model,")
    capsys.readouterr()


def test_no_command_writes_over_its_input_or_trainings_files(copy_of, tmp_path: Path, capsys) -> None:
    """#4: export's out= the checkpoint it reads (even with overwrite=true), eval's out= the run's results.json:
    refused; the files stay."""
    run = copy_of()
    loose = tmp_path / "only.pt"
    shutil.copy(run / "checkpoints" / "best.pt", loose)
    before = loose.read_bytes()
    code, err = error_of(export_main, [f"run={loose}", "format=torchscript", f"out={loose}", "overwrite=true"],
                         capsys)
    assert code == 2 and "is the checkpoint this command reads" in err and loose.read_bytes() == before
    results = (run / "results.json").read_bytes()
    code, err = error_of(eval_main, [f"run={run}", f"out={run / 'results.json'}", "overwrite=true"], capsys)
    assert code == 2 and "is a file that training wrote" in err and (run / "results.json").read_bytes() == results


# -- #5: runs still training, or unfinished ---------------------------------------------------------------------------
def test_a_live_or_unfinished_run_is_read_only_when_asked(copy_of, capsys) -> None:
    """#5: a locked run (training) and an interrupted one are refused by eval, and by transfer.checkpoint; with
    allow_unfinished=true eval scores it and says which step it read."""
    run = copy_of()
    with rundir.RunDirLock(run):
        assert rundir.in_use(run) is not None  # (this process's lock: another open file sees it held)
        code, err = error_of(eval_main, [f"run={run}"], capsys)
        assert code == 2 and "is still training" in err and "allow_unfinished=true" in err
        eval_main([f"run={run}", "allow_unfinished=true"])
        assert "(step 3)" in capsys.readouterr().out
        with pytest.raises(CnnbenchError, match="transfer.allow_unfinished=true"):
            from cnnbench.resolve import resolve

            resolve(compose_config("transfer=finetune", f"transfer.checkpoint={run}"), [])
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**results, "status": "interrupted"}))
    code, err = error_of(eval_main, [f"run={run}"], capsys)
    assert code == 2 and "did not complete (its results.json says interrupted)" in err


# -- #6: leaks inside carved splits -----------------------------------------------------------------------------------
def test_duplicates_inside_one_training_folder_are_warned_when_splits_are_carved(tmp_path: Path) -> None:
    """#6: the same photo under two names in train/ alone: the carved splits that got a copy are warned about."""
    from PIL import Image

    from cnnbench.data import load_data

    for c in ("a", "b"):
        for i in range(20):
            path = tmp_path / "train" / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), (37 * i + 90 * (c == "b")) % 256).save(path)
    for i in range(20):  # every photo of a twice
        shutil.copy(tmp_path / "train" / "a" / f"{i}.png", tmp_path / "train" / "a" / f"copy{i}.png")
    data = load_data(compose_config("data=imagefolder", f"data.root={tmp_path}", "data.cache_dir=null").data)
    warnings = [n for n in data.notes if "carved from train" in n]
    assert warnings and all("the same pixels" in w for w in warnings), data.notes


# -- #9, #10: signals and processes -----------------------------------------------------------------------------------
def test_a_helper_process_ends_with_its_parent_even_after_sigkill(tmp_path: Path) -> None:
    """#9: die_with_parent: the child of a SIGKILLed process is gone within seconds."""
    script = ("import os, sys, time\nfrom cnnbench.signals import die_with_parent\nparent = os.getpid()\n"
              "pid = os.fork()\nif pid == 0:\n    die_with_parent(parent)\n    time.sleep(60)\n    os._exit(0)\n"
              "print(pid, flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    time.sleep(0.5)
    proc.kill()
    proc.wait(timeout=60)
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat") as f:
            if f.read().split()[2] == "Z":  # (a zombie: ended, its parent's parent not reaping it yet)
                return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its parent")


@pytest.mark.parametrize("handler", ["default", "note_terminated"])
def test_a_decoding_pool_stops_when_its_consumer_stops(tmp_path: Path, handler: str) -> None:
    """#9: a pool whose consumer stops (an error, a signal) ends its workers at once, whatever SIGTERM handler
    the consumer's process has (a sweep's notes the signal and raises nothing)."""
    import multiprocessing

    from PIL import Image

    from cnnbench import signals
    from cnnbench.data.decode import Resize
    from cnnbench.data.parallel import _chunks, _decode_chunk

    previous = signal.getsignal(signal.SIGTERM)
    if handler != "default":
        signals.install(signals.note_terminated)

    paths = []
    for i in range(200):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (64, 64), (i, 0, 0)).save(paths[-1])
    before = set(multiprocessing.active_children())  # (other tests' helpers in this process, if any)
    chunks = _chunks(_decode_chunk, paths, (3, Resize("square", 32)), 2, "decoding")
    next(chunks)
    workers = set(multiprocessing.active_children()) - before
    assert workers
    try:
        chunks.close()  # (what an exception in the consumer does)
        assert not [p for p in workers if p.is_alive()]
        assert all(p.exitcode == -signal.SIGTERM for p in workers)  # ended by the stop, not by the fallback
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sigterm_at(target: str):
    """A fault: SIGTERM to this process when ``target`` (module:function) is first called."""
    def prepare() -> None:
        import importlib

        module, name = target.split(":")
        mod = importlib.import_module(module)
        original = getattr(mod, name)

        def wrapped(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # (the handler runs here)
            return original(*args, **kwargs)
        setattr(mod, name, wrapped)
    return prepare


@pytest.mark.slow
def test_sigterm_outside_the_loop_says_what_stopped_and_how_to_go_on(cli, tmp_path: Path) -> None:
    """#10: SIGTERM while the data is read: exit 143, one line, no run directory left; while the test split is
    scored: results.json says interrupted and the printed command continues the run to completion."""
    early = run_forked((*TINY, "hydra.run.dir=early"), tmp_path, prepare=_sigterm_at("cnnbench.assemble:load_data"))
    assert early.returncode == 143 and "stopped by SIGTERM before training started" in early.stderr, early.stderr
    assert "run the command again" in early.stderr and not (tmp_path / "early").exists()
    late = run_forked((*TINY, "hydra.run.dir=late"), tmp_path, prepare=_sigterm_at("cnnbench.results:score_test"))
    assert late.returncode == 143 and "continue with: cnnbench" in late.stderr, late.stderr
    assert json.loads((tmp_path / "late" / "results.json").read_text())["status"] == "interrupted"
    command = late.stderr.split("continue with: ", 1)[1].split()
    assert command[0] == "cnnbench" and "trainer.resume=auto" in command
    resumed = cli(*command[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "late" / "results.json").read_text())["status"] == "completed"


@pytest.mark.slow
def test_sigterm_to_a_joblib_sweep_stops_its_jobs_and_leaves_no_process(tmp_path: Path) -> None:
    """#9: the sweep's process passes SIGTERM to its two running jobs, which checkpoint and record themselves
    interrupted; the other two do not start; the leaderboard is written; no worker outlives the sweep."""
    sweep = tmp_path / "sweep"
    args = [sys.executable, "-m", "cnnbench", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
            "trainer.seed=0,1,2,3", "trainer.epochs=500", *QUIET, f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    running = sweep / ".cnnbench-sweep" / "running"
    deadline = time.monotonic() + 600
    while not (running.is_dir() and len(list(running.iterdir())) == 2 and
               all((sweep / j / "checkpoints" / "last.pt").is_file() for j in "01")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    workers = [int(e.name.rsplit("-", 1)[1]) for e in running.iterdir()]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 143 and "stopped by SIGTERM: 4 of 4 sweep jobs did not complete" in err, err[-3000:]
    assert "sweep.skip_completed=true" in err
    for job in "01":
        assert json.loads((sweep / job / "results.json").read_text())["status"] == "interrupted"
    outcomes = {p.stem: json.loads(p.read_text()) for p in (sweep / ".cnnbench-sweep" / "jobs").glob("*.json")}
    assert outcomes["2"]["status"] == outcomes["3"]["status"] == "interrupted"
    assert "not started" in outcomes["3"]["error"]
    assert (sweep / "leaderboard.md").is_file()
    time.sleep(2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    assert alive == [], "workers outlived the sweep"


# -- #11: FIFOs are never opened ---------------------------------------------------------------------------------------
def test_fifos_at_paths_cnnbench_reads_are_never_opened(copy_of, tmp_path: Path, capsys) -> None:
    """#11: a FIFO at results.json, eval_test.json or a sweep's record: every reader answers at once."""
    from cnnbench.leaderboard import find_runs

    run = copy_of()
    (run / "results.json").unlink()
    os.mkfifo(run / "results.json")
    os.mkfifo(run / "eval_test.json")
    alarm = signal.signal(signal.SIGALRM, lambda *a: pytest.fail("blocked on a FIFO"))
    signal.alarm(30)
    try:
        assert rundir.earlier_results(run) is None and rundir.prior_status(run, None) == "interrupted"
        skipped: list[str] = []
        assert find_runs([run], skipped) == [] and "not a regular file" in skipped[0]
        with pytest.raises(SystemExit) as stop:
            report_main([str(run)])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and "not a regular file" in err and "no readable results.json" in err
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, alarm)


# -- #12, #13, #14: numbers, names and messages ------------------------------------------------------------------------
def test_a_weights_file_of_nan_is_refused_before_training(tmp_path: Path) -> None:
    """#12: non-finite weights are refused when read, naming the tensor."""
    from cnnbench.transfer.weights_file import read_state_dict

    torch.save({"fc.weight": torch.full((2, 2), float("nan")), "fc.bias": torch.zeros(2)}, tmp_path / "w.pt")
    with pytest.raises(CnnbenchError, match="fc.weight holds NaN or inf"):
        read_state_dict(str(tmp_path / "w.pt"))


@pytest.mark.parametrize("where", ["hydra.run.dir={long}", "data.root={long}"])
def test_names_too_long_for_the_file_system_are_one_line(cli, tmp_path: Path, where: str) -> None:
    """#13: ENAMETOOLONG, in Hydra's own mkdir of the run directory too."""
    long = str(tmp_path / ("x" * 300))
    proc = cli(*TINY, "data=imagefolder" if where.startswith("data") else "trainer.epochs=1",
               where.format(long=long), cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "too long" in proc.stderr or "does not exist" in proc.stderr


def test_every_command_says_a_long_name_in_one_line(tiny_run: Path, tmp_path: Path, capsys) -> None:
    """#13: run=, out= and report's folders too long: one line each."""
    long = str(tmp_path / ("y" * 300))
    for main, args in ((eval_main, [f"run={long}"]), (eval_main, [f"run={tiny_run}", f"out={long}.json"]),
                       (predict_main, [f"run={tiny_run}", f"images={long}"]),
                       (export_main, [f"run={tiny_run}", "format=onnx", f"out={long}.onnx"]),
                       (report_main, [long]), (report_main, [str(tiny_run), "--out", long])):
        code, err = error_of(main, args, capsys)
        assert code == 2 and ("too long" in err or "no image files" in err), err


def test_messages_are_bounded_and_say_what_they_mean(tmp_path: Path) -> None:
    """#14: a class-folder mismatch of 1000 classes gives counts and a few names; a failed write names its file;
    cut texts end at a word."""
    from cnnbench.data.folders import class_mismatch
    from cnnbench.errors import first_line, os_error_message
    from cnnbench.fileio import atomic_write

    train = [f"class_{i:04d}" for i in range(1000)]
    line = class_mismatch(train, train[:-2] + ["zebra"], tmp_path / "train", tmp_path / "test")
    assert len(line) < 400 and "(1000 classes)" in line and "only in train/: class_0998, class_0999" in line
    assert "only in test/: zebra" in line

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "results.json", full)
    assert str(tmp_path / "results.json") in os_error_message(err.value)
    assert first_line("word " * 50, 42).endswith("word ...") and len(first_line("word " * 50, 42)) <= 46


def test_a_sweep_with_a_failed_job_does_not_claim_its_runs_differ_in_software(tmp_path: Path) -> None:
    """#14: a failed job's results have no provenance: that is no difference in software."""
    from cnnbench.leaderboard import build_leaderboard, find_runs, to_markdown

    software = {"torch": "2.14.1", "cnnbench": "0.1.0"}
    for i, status in enumerate(["completed", "completed", "failed"]):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps({
            "status": status, "model": "lenet5", "overrides": [f"trainer.seed={i}"], "best_val_acc": 90.0,
            **({"provenance": {"software": software}} if status == "completed" else {"error": "boom"})}))
    markdown = to_markdown(build_leaderboard(find_runs([tmp_path])))
    assert "differ in software" not in markdown and "1 of 3 runs did not complete" in markdown


# -- #15: caches, option pairs, same-second runs -----------------------------------------------------------------------
def test_overwrite_with_resume_is_refused(tmp_path: Path) -> None:
    """#15: trainer.overwrite=true trainer.resume=auto: one of them."""
    t = compose_config("trainer.overwrite=true", "trainer.resume=auto").trainer
    plan = rundir.plan_reuse(tmp_path, t, [])
    assert plan.action == "refuse" and "give one of them" in plan.reason


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: Path) -> None:
    """#15: the default outputs/<date>/<time>: a held or used one gives way to -2, -3."""
    base = tmp_path / "outputs" / "2026-12-07" / "15-00-00"
    assert rundir.default_run_dir(base, []) and not rundir.default_run_dir(base, ["hydra.run.dir=x"])
    first = rundir.lock_free_run_dir(base)
    second = rundir.lock_free_run_dir(base)
    (base.with_name("15-00-00-3")).mkdir()
    (base.with_name("15-00-00-3") / "x").write_text("used")
    third = rundir.lock_free_run_dir(base)
    try:
        assert (first.path, second.path, third.path) == (base, base.with_name("15-00-00-2"),
                                                         base.with_name("15-00-00-4"))
    finally:
        for lock in (first, second, third):
            lock.__exit__()
