"""Nothing lost, nothing mixed, nothing written where it should not be: the hostile round's 21 defects.

Each test is named after the rule it protects and says which defect(s) of the round it covers (#N). Training
happens in this process on the digits with a handful of steps; one module-scoped run serves the commands.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, run_cli
from PIL import Image

from cnnbench.commands.evaluate import main as eval_main
from cnnbench.commands.export import main as export_main
from cnnbench.commands.predict import main as predict_main
from cnnbench.commands.report import main as report_main
from cnnbench.commands.visualize import main as visualize_main
from cnnbench.errors import CnnbenchError

QUIET = ["logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.print_config=false",
         "logger.progress=false"]
TINY = [*QUIET, "trainer.epochs=1", "trainer.max_steps=3"]


def error_of(main, args: list[str], capsys) -> tuple[int, str]:
    """Run a command's ``main(args)`` that must stop; its exit code and its stderr (asserted one line)."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return stop.value.code, err


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_png(path: Path, value: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (size, size), value).save(path)


def photo_tree(root: Path, counts: dict[str, dict[str, int]]) -> None:
    for split, classes in counts.items():
        for c, n in classes.items():
            for i in range(n):
                write_png(root / split / c / f"{c}{i}.png", (7 * i + 50 * ord(c) + 90 * len(split)) % 256)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    proc = run_cli(*QUIET, "trainer.epochs=2", "trainer.max_steps=40", "hydra.run.dir=run", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


@pytest.fixture
def loose_checkpoint(trained: Path, tmp_path: Path) -> Path:
    """The run's best.pt copied into a folder that is not a run directory."""
    target = tmp_path / "elsewhere" / "model.pt"
    target.parent.mkdir()
    shutil.copy(trained / "checkpoints" / "best.pt", target)
    return target


# -- data lost or mixed --------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_folder_of_other_files_is_refused_and_overwrite_deletes_only_what_cnnbench_wrote(cli, tmp_path) -> None:
    """#1: no run writes into, deletes from, or resumes a folder of other files; overwrite keeps users' files."""
    foreign = tmp_path / "mine"
    for rel in ("figures/my_plot.png", "checkpoints/my_model.pt", "checkpoints/epoch_10.pt", "checkpoints/last.pt"):
        (foreign / rel).parent.mkdir(parents=True, exist_ok=True)
        (foreign / rel).write_bytes(b"user data " + rel.encode())
    before = files_under(foreign)
    for extra in ([], ["trainer.overwrite=true"], ["trainer.resume=auto"]):
        proc = cli(*TINY, f"hydra.run.dir={foreign}", *extra, cwd=tmp_path)
        assert proc.returncode == 2 and "holds files that cnnbench did not write" in proc.stderr, proc.stderr
        assert files_under(foreign) == before
    run = tmp_path / "run"
    assert cli(*TINY, f"hydra.run.dir={run}", cwd=tmp_path).returncode == 0
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / "my_plot.png").write_bytes(b"mine")
    (run / "notes.txt").write_text("mine")
    proc = cli(*TINY, f"hydra.run.dir={run}", "trainer.overwrite=true", "trainer.seed=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (run / "figures" / "my_plot.png").read_bytes() == b"mine" and (run / "notes.txt").read_text() == "mine"
    assert "kept 2 that cnnbench did not write" in proc.stdout
    assert json.loads((run / "results.json").read_text())["seed"] == 1


@pytest.mark.slow  # (three sweeps in subprocesses)
def test_a_sweep_into_a_folder_holding_another_sweep_is_refused_and_failures_exit_non_zero(tmp_path) -> None:
    """#2: another sweep's folder is refused before any job (multirun.yaml and runs untouched); a refused job makes
    the command exit 1 with the count."""
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, f"hydra.sweep.dir={sweep}"]
    assert run_cli(*args, "trainer.seed=0,1", cwd=tmp_path).returncode == 0
    before = files_under(sweep)
    proc = run_cli(*args, "trainer.seed=0,2", cwd=tmp_path)
    assert proc.returncode == 2 and "already holds a sweep" in proc.stderr, proc.stderr
    assert files_under(sweep) == before
    (sweep / "1" / ".cnnbench-files").unlink()  # job 1's folder is no longer a cnnbench run: it will be refused
    proc = run_cli(*args, "trainer.seed=0,1", "sweep.skip_completed=true", cwd=tmp_path)
    assert proc.returncode == 1 and "1 of 2 sweep jobs failed or were refused" in proc.stderr, proc.stderr
    assert "skipping" in proc.stdout and "holds files that cnnbench did not write" in proc.stderr
    proc = run_cli(*TINY, "hydra.run.dir=after", cwd=tmp_path)  # the next command in this process: its own count
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_exports_keep_their_own_cards_and_never_replace_a_file_unasked(trained, tmp_path, capsys) -> None:
    """#3 and #20: the card is named after its file; an existing file or card is refused; a dynamic batch exports
    from a single image."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.json").write_text("the user's own")
    export_main([f"run={trained}", "format=torchscript", f"out={out / 'a.pt'}", "images=2"])
    export_main([f"run={trained}", "format=exported_program", f"out={out / 'b.pt2'}", "images=1"])
    capsys.readouterr()
    cards = {name: json.loads((out / f"{name}.json").read_text()) for name in ("a.pt", "b.pt2")}
    assert cards["a.pt"]["format"] == "torchscript" and cards["b.pt2"]["format"] == "exported_program"
    assert cards["b.pt2"]["files"] == ["b.pt2"] and cards["b.pt2"]["input"]["batch"] == "dynamic"
    assert (out / "model.json").read_text() == "the user's own"
    code, err = error_of(export_main, [f"run={trained}", "format=torchscript", f"out={out / 'a.pt'}"], capsys)
    assert code == 2 and "exists" in err and "overwrite=true" in err


def test_eval_keeps_one_result_per_setting_and_records_its_overrides(trained, capsys) -> None:
    """#4 and #9: eval on two splits leaves both; a misspelt data key is refused; overrides are recorded."""
    eval_main([f"run={trained}"])
    eval_main([f"run={trained}", "split=val"])
    eval_main([f"run={trained}", "data.num_test=50"])
    capsys.readouterr()
    test, val = (json.loads((trained / f"eval_{s}.json").read_text()) for s in ("test", "val"))
    assert test["split"] == "test" and val["split"] == "val" and test["images"] == 359 and val["images"] == 144
    (subset,) = [json.loads(p.read_text()) for p in trained.glob("eval_test_*.json")]
    assert subset["images"] == 50 and subset["data_overrides"] == {"data.num_test": 50}
    assert test["data_overrides"] == {}
    code, err = error_of(eval_main, [f"run={trained}", "data.rooot=/tmp"], capsys)
    assert code == 2 and "data.rooot" in err and "data.root" in err
    code, err = error_of(eval_main, [f"run={trained}", "data.num_test=[1"], capsys)
    assert code == 2 and "data.num_test=[1: not a value" in err


@pytest.mark.parametrize("command, args, message", [
    (predict_main, ["images={images}", "out={tmp}"], "is a folder"),
    (predict_main, ["images={images}", "out={tmp}/afile/p.csv"], "is a file, not a folder"),
    (predict_main, ["images={images}", "out={tmp}/p.txt"], "must end in .csv or .json"),
    (predict_main, ["images={images}", "out={tmp}/afile"], "must end in .csv or .json"),
    (eval_main, ["out={tmp}/afile/e.json"], "is a file, not a folder"),
    (eval_main, ["out={tmp}/e.yaml"], "must end in .json"),
    (eval_main, ["out={tmp}"], "is a folder"),
    (visualize_main, ["image={images}/0.png", "layer=features.0", "out={tmp}/v.gif"], "must end in .png"),
    (visualize_main, ["image={images}/0.png", "layer=features.0", "out={tmp}/afile/v.png"], "is a file"),
    (export_main, ["format=onnx", "out={tmp}/m.pt2"], "must end in .onnx"),
    (export_main, ["format=onnx", "out={tmp}/afile/m.onnx"], "is a file, not a folder"),
])
def test_unusable_output_paths_are_one_line_before_any_work(trained, tmp_path, capsys, command, args,
                                                             message) -> None:
    """#5 and #15: an output path that cannot be written is refused first, in one line, naming it."""
    (tmp_path / "afile").write_text("x")
    write_png(tmp_path / "images" / "0.png", 100, 32)
    args = [a.format(tmp=tmp_path, images=tmp_path / "images") for a in args]
    code, err = error_of(command, [f"run={trained}", *args], capsys)
    assert code == 2 and message in err
    assert not any(p.suffix in (".csv", ".json") for p in tmp_path.rglob("*")), "nothing is written"


def test_report_refuses_output_where_a_file_stands(trained, tmp_path, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    code, err = error_of(report_main, [str(trained), "--out", str(tmp_path / "afile")], capsys)
    assert code == 2 and "is a file" in err


# -- wrong results, silently -----------------------------------------------------------------------------------------
def test_the_cache_key_covers_listed_images_outside_the_root(tmp_path) -> None:
    """#6: a file list naming images outside data.root: changing such an image makes a new cache key."""
    from conftest import compose_config

    from cnnbench.data.cache import cache_key

    lists = tmp_path / "lists"
    lists.mkdir()
    for i in range(4):
        write_png(tmp_path / "outside" / f"{i}.png", 10 * i)
    (lists / "train.csv").write_text("".join(f"../outside/{i}.png,{'ab'[i % 2]}\n" for i in range(4)))
    cfg = compose_config("data=filelist", f"data.root={lists}").data
    key = cache_key(cfg)
    write_png(tmp_path / "outside" / "2.png", 200, size=9)  # replaced outside the root
    assert cache_key(cfg) != key
    (tmp_path / "outside" / "3.png").unlink()
    with pytest.raises(CnnbenchError, match="no file"):
        cache_key(cfg)


@pytest.mark.slow
def test_resuming_with_a_longer_plan_follows_the_new_schedule(cli, tmp_path) -> None:
    """#7: 1 epoch, then resumed to 3: the learning rate is the 3-epoch plan's (cosine does not climb back to
    the peak after the old period); one-cycle resumes too."""
    args = [*QUIET, "trainer.max_steps=null", "data.num_train=320", "trainer.seed=3"]
    for schedule in ("cosine", "onecycle"):
        run, whole = tmp_path / f"r{schedule}", tmp_path / f"w{schedule}"
        assert cli(*args, f"scheduler={schedule}", "trainer.epochs=1", f"hydra.run.dir={run}", cwd=tmp_path
                   ).returncode == 0
        proc = cli(*args, f"scheduler={schedule}", "trainer.epochs=3", "trainer.resume=auto", f"hydra.run.dir={run}",
                   cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "the plan changed from" in proc.stdout
        assert cli(*args, f"scheduler={schedule}", "trainer.epochs=3", f"hydra.run.dir={whole}", cwd=tmp_path
                   ).returncode == 0
        resumed, planned = (json.loads((d / "results.json").read_text())["history"] for d in (run, whole))
        assert [h["lr"] for h in resumed[1:]] == pytest.approx([h["lr"] for h in planned[1:]])  # after the resume
        assert resumed[1]["lr"] < 0.5 * max(h["lr"] for h in planned)  # (the old period's end: back at the peak)


@pytest.mark.slow
def test_paths_are_recorded_absolute(cli, tmp_path) -> None:
    """#8: a relative data.root is stored absolute, so eval from another directory scores the same folder."""
    photo_tree(tmp_path / "photos", {"train": {"a": 12, "b": 12}, "test": {"a": 3, "b": 3}})
    proc = cli(*TINY, "data=imagefolder", "data.root=photos", "data.batch_size=8", "model=small_resnet",
               "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "best.pt", weights_only=True)
    assert ckpt["config"]["data"]["root"] == str(tmp_path / "photos")


def test_test_images_that_are_training_images_are_warned(tmp_path) -> None:
    """#10: the same file (a symlinked folder) or the same bytes: a warning with the counts."""
    from conftest import compose_config

    from cnnbench.data import load_data

    photo_tree(tmp_path, {"train": {"a": 6, "b": 6}, "val": {"a": 2, "b": 2}})
    os.symlink(tmp_path / "train", tmp_path / "test")
    shutil.copy(tmp_path / "train" / "a" / "a0.png", tmp_path / "val" / "a" / "copy.png")
    data = load_data(compose_config("data=imagefolder", f"data.root={tmp_path}", "data.cache_dir=null").data)
    warnings = [n for n in data.notes if n.startswith("warning")]
    assert any("12 of 12 images in test/ are also training images (12 the same file, 0 the same bytes)" in w
               for w in warnings), warnings
    assert any("1 of 5 images in val/" in w and "1 the same bytes" in w for w in warnings), warnings


def test_degenerate_class_sets_are_refused_and_macro_averages_follow_one_convention(tmp_path) -> None:
    """#11: one class, or a class without training images, is refused; macro-F1 and balanced accuracy leave out
    a class absent from labels and predictions, as scikit-learn does."""
    from conftest import compose_config
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from cnnbench.data import load_data
    from cnnbench.data.checks import check_against_data
    from cnnbench.evaluation.metrics import metrics
    from cnnbench.evaluation.scores import Scores

    photo_tree(tmp_path / "one", {"train": {"a": 6}})
    photo_tree(tmp_path / "empty", {"train": {"a": 6, "b": 6}})
    (tmp_path / "empty" / "train" / "c").mkdir()
    for root, message in (("one", "has 1 class (a); a classifier needs at least 2"),
                          ("empty", "class c has no training images")):
        cfg = compose_config("data=imagefolder", f"data.root={tmp_path / root}", "data.cache_dir=null")
        with pytest.raises(CnnbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
            check_against_data(cfg, load_data(cfg.data), batch_size=2)
    labels, preds = torch.tensor([0, 0, 1, 1, 3]), torch.tensor([0, 1, 1, 1, 0])  # class 2: in neither
    m = metrics(Scores(0.0, preds[:, None], labels), ["a", "b", "c", "d"])
    assert m["macro_f1"] == pytest.approx(100 * f1_score(labels, preds, average="macro", zero_division=0))
    assert m["balanced_acc"] == pytest.approx(100 * balanced_accuracy_score(labels, preds))


@pytest.mark.slow
def test_resuming_an_early_stopped_run_applies_the_settings_to_its_history(cli, tmp_path) -> None:
    """#12: with the same settings the stop is carried; with more patience the run goes on, and the message and
    results match the history."""
    args = [*QUIET, "trainer.epochs=6", "trainer.early_stopping.min_delta=50", "hydra.run.dir=run"]
    assert cli(*args, "trainer.early_stopping.patience=1", cwd=tmp_path).returncode == 0
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    assert first["early_stopping"]["stopped_epoch"] == 2 and first["epochs_completed"] == 2
    same = cli(*args, "trainer.early_stopping.patience=1", "trainer.resume=auto", cwd=tmp_path)
    assert same.returncode == 0 and "did not improve" in same.stdout and "for 1 epochs" in same.stdout
    assert json.loads((tmp_path / "run" / "results.json").read_text())["epochs_completed"] == 2
    more = cli(*args, "trainer.early_stopping.patience=3", "trainer.resume=auto", cwd=tmp_path)
    assert more.returncode == 0 and "patience 1 -> 3" in more.stdout and "training goes on" in more.stdout
    done = json.loads((tmp_path / "run" / "results.json").read_text())
    assert done["early_stopping"]["patience"] == 3 and done["early_stopping"]["stopped_epoch"] == 4
    assert done["epochs_completed"] == 4 and "for 3 epochs" in more.stdout


# -- written where it should not be ----------------------------------------------------------------------------------
def test_commands_on_a_loose_checkpoint_write_only_to_out_and_the_local_cache(loose_checkpoint, tmp_path, capsys,
                                                                               monkeypatch) -> None:
    """#13: beside a checkpoint outside a run directory nothing is written (out= is required); the cache folder
    recorded inside a checkpoint is never created."""
    ckpt = torch.load(loose_checkpoint, weights_only=True)
    ckpt["config"]["data"]["cache_dir"] = str(tmp_path / "planted")
    torch.save(ckpt, loose_checkpoint)
    monkeypatch.setenv("CNNBENCH_CACHE", str(tmp_path / "local_cache"))
    write_png(tmp_path / "img.png", 90, 32)
    for command, args in ((eval_main, []), (export_main, ["format=torchscript"]),
                          (visualize_main, [f"image={tmp_path / 'img.png'}", "layer=features.0"])):
        code, err = error_of(command, [f"run={loose_checkpoint}", *args], capsys)
        assert code == 2 and "not inside a cnnbench run directory" in err and "out=" in err
    out = tmp_path / "results"
    eval_main([f"run={loose_checkpoint}", f"out={out / 'e.json'}"])
    export_main([f"run={loose_checkpoint}", "format=torchscript", f"out={out / 'm.pt'}"])
    visualize_main([f"run={loose_checkpoint}", f"image={tmp_path / 'img.png'}", "layer=features.0",
                    f"out={out / 'v.png'}"])
    assert sorted(os.listdir(loose_checkpoint.parent)) == ["model.pt"]
    assert not (tmp_path / "planted").exists()
    assert {"e.json", "e_confusion_matrix.png", "e_reliability.png", "m.pt", "m.pt.json", "v.png"} <= set(
        os.listdir(out))


# -- a traceback or a hang instead of one line -----------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["classes", "no_model_config", "channels", "meta_type"])
def test_a_checkpoint_whose_config_does_not_fit_is_one_line_for_every_command(loose_checkpoint, tmp_path, capsys,
                                                                             damage) -> None:
    """#14: eval, predict, export and visualize on a foreign or edited checkpoint: one line."""
    ckpt = torch.load(loose_checkpoint, weights_only=True)
    if damage == "classes":
        ckpt["meta"]["class_names"] = ["a", "b", "c"]  # a 3-class head for 10-class weights
    elif damage == "no_model_config":
        del ckpt["config"]["model"]
    elif damage == "channels":
        ckpt["meta"]["channels"] = "grey"
    else:
        ckpt["meta"]["class_names"] = 7
    torch.save(ckpt, loose_checkpoint)
    write_png(tmp_path / "img.png", 90, 32)
    out = tmp_path / "o"
    for command, args in ((eval_main, [f"out={out}.json"]), (predict_main, [f"images={tmp_path / 'img.png'}"]),
                          (export_main, ["format=torchscript", f"out={out}.pt"]),
                          (visualize_main, [f"image={tmp_path / 'img.png'}", "layer=features.0", f"out={out}.png"])):
        code, err = error_of(command, [f"run={loose_checkpoint}", *args], capsys)
        assert code == 2 and "malformed" in err and "Traceback" not in err, err


def test_report_skips_what_is_not_a_runs_results_and_says_so(trained, tmp_path, capsys) -> None:
    """#16: a results.json that is not an object, not UTF-8, truncated or has numbers as strings is named and
    left out, and the report exits 1; over no run it writes nothing and exits 2."""
    good = tmp_path / "runs" / "good"
    shutil.copytree(trained, good, ignore=shutil.ignore_patterns("*.pt", "figures", "eval_*"))
    text = (good / "results.json").read_text()
    bad = {"list": "[1, 2]", "latin1": None, "truncated": text[: len(text) // 2],
           "strings": json.dumps({**json.loads(text), "test_acc": "97.5"})}
    for name, content in bad.items():
        (tmp_path / "runs" / name).mkdir()
        path = tmp_path / "runs" / name / "results.json"
        path.write_bytes("{\"model\": \"caf\xe9\"}".encode("latin-1")) if content is None else path.write_text(content)
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path / "runs")])
    captured = capsys.readouterr()
    assert stop.value.code == 1 and "4 results.json file(s) could not be read" in captured.err
    for reason in ("not an object", "not UTF-8", "not complete JSON", "test_acc is '97.5', not a number"):
        assert reason in captured.err
    assert (tmp_path / "runs" / "leaderboard.csv").is_file()
    shutil.rmtree(good)
    (tmp_path / "runs" / "leaderboard.csv").unlink()
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path / "runs" / "list")])
    assert stop.value.code == 2 and not list((tmp_path / "runs" / "list").glob("leaderboard*"))
    capsys.readouterr()


def test_bad_devices_folders_and_run_directories_are_one_line(cli, trained, tmp_path, capsys) -> None:
    """#17: device=cuda without a GPU, a folder= that is missing or a file, a hydra.run.dir that is a file or lies
    under one."""
    if not torch.cuda.is_available():
        for command, args in ((eval_main, ["device=cuda"]), (predict_main, [f"images={tmp_path}", "device=cuda"])):
            write_png(tmp_path / "x.png", 1, 32)
            code, err = error_of(command, [f"run={trained}", *args], capsys)
            assert code == 2 and "device=cuda: this machine has no such device" in err
    (tmp_path / "afile").write_text("x")
    for folder, message in (("nowhere", "does not exist"), ("afile", "is not a folder")):
        code, err = error_of(eval_main, [f"run={trained}", f"folder={tmp_path / folder}"], capsys)
        assert code == 2 and message in err
    for run_dir in ("afile", "afile/run"):
        proc = cli(*TINY, f"hydra.run.dir={tmp_path / run_dir}", cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "a file stands" in proc.stderr


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_are_skipped_with_a_count_and_never_read(trained, tmp_path, capsys) -> None:
    """#18: a FIFO named like an image in a class folder is left out (and counted); given to visualize, one line.
    Each call runs in a thread with a ceiling, since the failure being guarded against is a hang (a FIFO's open
    waits for a writer forever)."""
    from concurrent.futures import ThreadPoolExecutor

    from cnnbench.data.folders import read_imagefolder

    photo_tree(tmp_path / "data", {"train": {"a": 4, "b": 4}})
    os.mkfifo(tmp_path / "data" / "train" / "a" / "pipe.png")
    pool = ThreadPoolExecutor(1)  # (not a `with`: its exit would wait for a hung thread)
    data_cfg = compose_config("data=imagefolder", f"data.root={tmp_path / 'data'}").data
    raw = pool.submit(read_imagefolder, data_cfg).result(timeout=600)
    assert len(raw.train) == 8 and raw.notes[0].startswith("skipped 1 name(s)") and "pipe.png" in raw.notes[0]
    args = [f"run={trained}", f"image={tmp_path / 'data' / 'train' / 'a' / 'pipe.png'}", "layer=features.0",
            f"out={tmp_path / 'v.png'}"]
    with pytest.raises(SystemExit) as exit_info:
        pool.submit(visualize_main, args).result(timeout=600)
    assert exit_info.value.code == 2 and "not a regular file" in capsys.readouterr().err
    pool.shutdown(wait=False)


def test_lists_with_a_byte_order_mark_read_and_other_encodings_are_one_line(tmp_path) -> None:
    """#19: what spreadsheets write (UTF-8 with a BOM) reads; latin-1 is a one-line error naming the list."""
    from cnnbench.data.folders import read_list

    write_png(tmp_path / "café.png", 3)
    (tmp_path / "train.csv").write_bytes("\ufeffpath,label\ncafé.png,a\n".encode())
    assert read_list(tmp_path / "train.csv") == [(str(tmp_path / "café.png"), "a")]
    (tmp_path / "train.csv").write_bytes("path,label\ncafé.png,a\n".encode("latin-1"))
    with pytest.raises(CnnbenchError, match="is not UTF-8 text"):
        read_list(tmp_path / "train.csv")


def test_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path) -> None:
    """#21: a cache write killed midway leaves .<name>.<pid>.<random>.tmp; the next cache write removes it
    (and never a live writer's)."""
    from cnnbench.data import cache
    from cnnbench.data.images import ImageSet
    from cnnbench.data.sources import RawSplits

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / f".digits-0123.pt.{dead}.abc123.tmp"
    live = tmp_path / f".digits-0123.pt.{os.getppid()}.def456.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    images = ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))
    cache.save(tmp_path / "digits-0123.pt", RawSplits(images, images, ["a", "b"]))
    assert not stale.exists() and live.exists() and cache.load(tmp_path / "digits-0123.pt") is not None


def test_the_manifest_holds_paths_relative_to_the_run_directory(tmp_path, monkeypatch) -> None:
    """#1: names inside the run and paths of files (also from a relative run directory) are recorded alike."""
    from cnnbench.manifest import own, owned

    monkeypatch.chdir(tmp_path)
    run = Path("runs/a")
    own(run, "checkpoints/last.pt", Path("runs/a/figures/x.png"), tmp_path / "runs/a/eval_test.json", "tb/n/")
    own(run, "checkpoints/last.pt")  # once only
    assert owned(run) == ["checkpoints/last.pt", "figures/x.png", "eval_test.json", "tb/n/"]
