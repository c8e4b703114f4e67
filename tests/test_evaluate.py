"""After training: calibration metrics against hand-computed cases, and cnnbench-eval on a real run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import page_faults, run_cli
from PIL import Image

from cnnbench.commands.evaluate import main
from cnnbench.evaluation.calibration import brier_score, expected_calibration_error, reliability
from cnnbench.evaluation.metrics import metrics
from cnnbench.evaluation.scores import Scores


def test_ece_of_a_known_set() -> None:
    confidence = torch.tensor([0.9, 0.9, 0.6, 0.6])
    correct = torch.tensor([True, False, True, True])
    # bin (0.867, 0.933]: accuracy 0.5 at confidence 0.9; bin (0.533, 0.6]: accuracy 1.0 at confidence 0.6
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert expected_calibration_error(torch.tensor([0.75, 0.75, 0.75, 0.75]),
                                      torch.tensor([True, True, True, False])) == pytest.approx(0.0)


def test_reliability_bins_are_right_closed() -> None:
    bins = reliability(torch.tensor([1 / 15, 1 / 15 + 1e-6, 1.0]), torch.tensor([True, False, True]))
    assert len(bins) == 15 and [b.images for b in bins][:2] == [1, 1] and bins[-1].images == 1
    assert bins[0].high == pytest.approx(1 / 15) and bins[1].accuracy == 0.0 and bins[-1].confidence == 1.0


def test_brier_score_by_hand() -> None:
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    labels = torch.tensor([0, 0])
    # (0.3^2 + 0.3^2) + (0.8^2 + 0.8^2), averaged over the two images
    assert brier_score(probs[torch.arange(2), labels], probs.square().sum(1)) == pytest.approx((0.18 + 1.28) / 2)


def test_metrics_include_calibration_when_scores_carry_it() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2, 2])
    probs = logits.softmax(1)
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    scores = Scores(loss, logits.topk(3, 1).indices, labels, probs.amax(1), probs[torch.arange(4), labels],
                    probs.square().sum(1))
    m = metrics(scores, ["a", "b", "c"])
    correct = probs.argmax(1) == labels
    assert m["nll"] == loss and m["ece"] == pytest.approx(100 * expected_calibration_error(probs.amax(1), correct))
    one_hot = torch.nn.functional.one_hot(labels, 3).float()
    assert m["brier"] == pytest.approx(((probs - one_hot) ** 2).sum(1).mean().item(), abs=1e-6)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("eval")
    proc = run_cli("trainer.epochs=4", "logger.print_config=false", "logger.progress=false", "logger.snapshots=0",
                   "hydra.run.dir=run", cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "run"


def test_eval_reproduces_the_runs_test_score(trained_run: Path, capsys) -> None:
    main([f"run={trained_run}"])
    printed = capsys.readouterr().out
    result = json.loads((trained_run / "eval_test.json").read_text())
    recorded = json.loads((trained_run / "results.json").read_text())
    assert result["acc"] == pytest.approx(recorded["test_acc"]) and result["nll"] == pytest.approx(
        recorded["test_loss"], rel=1e-4)
    assert result["ece"] == pytest.approx(recorded["test_ece"]) and 0 <= result["ece"] <= 100
    assert 0 <= result["brier"] <= 2 and result["images"] == 359
    assert sum(map(sum, result["confusion_matrix"])) == 359 and sum(b["images"] for b in result["reliability"]) == 359
    assert set(result["per_class"]) == set(result["class_names"]) and "top5_acc" in result
    assert "ECE (15 bins)" in printed and "wrote" in printed
    for name in ("eval_test_confusion_matrix.png", "eval_test_reliability.png"):
        with Image.open(trained_run / "figures" / name) as img:
            assert min(img.size) > 300


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_commands_keep_host_memory_as_the_run_did(trained_run: Path, tmp_path: Path) -> None:
    """evaluate and predict run the model where ``FinishedRun.settle`` says, under the run's
    ``trainer.keep_host_memory``: large CPU batches then reuse freed memory instead of faulting it in again."""
    from cnnbench.engine.checkpoint import load_checkpoint
    from cnnbench.finished_run import load_finished_run

    ckpt = load_checkpoint(trained_run / "checkpoints" / "best.pt")
    ckpt["config"]["trainer"]["keep_host_memory"] = False
    torch.save(ckpt, tmp_path / "returns.pt")
    trained = load_finished_run(trained_run)
    assert trained.settle("cpu") == (torch.device("cpu"), trained.precision(torch.device("cpu")))

    def faults(checkpoint: Path) -> int:
        return page_faults(f"from cnnbench.finished_run import load_finished_run\n"
                           f"load_finished_run({str(checkpoint)!r}).settle('cpu')")

    kept, returned = faults(trained_run / "checkpoints" / "best.pt"), faults(tmp_path / "returns.pt")
    assert kept * 10 < returned and returned > 10 * 4 * 5000


def test_eval_other_splits_and_a_folder(trained_run: Path, tmp_path: Path) -> None:
    main([f"run={trained_run}", "split=val", f"out={tmp_path / 'val.json'}"])
    assert json.loads((tmp_path / "val.json").read_text())["images"] == 144  # 10% of the 1,438 training digits
    main([f"run={trained_run / 'checkpoints' / 'best.pt'}", "split=train", "tta=1", f"out={tmp_path / 't.json'}"])
    train = json.loads((tmp_path / "t.json").read_text())
    assert train["images"] == 1294 and train["tta"] == 1
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(12):  # two class folders of the ten: a folder may hold fewer classes than the run
        label = int(digits.target[i])
        if label in (0, 1):
            folder = tmp_path / "photos" / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    main([f"run={trained_run}", f"folder={tmp_path / 'photos'}", f"out={tmp_path / 'f.json'}"])
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["images"] == len(list((tmp_path / "photos").rglob("*.png"))) and result["split"].endswith("photos")


@pytest.mark.parametrize("args, message", [
    (["run=/no/such/run"], "no such run directory"),
    (["split=holdout"], "choose test, val or train"),
    (["tta=5"], "tta must be 0, 1 or 2"),
    (["batch_size=0"], "batch_size must be a whole number >= 1"),
])
def test_eval_refuses_in_one_line(trained_run: Path, args: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as code:
        main([f"run={trained_run}", *args] if not args[0].startswith("run=") else args)
    err = capsys.readouterr().err
    assert code.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_eval_refuses_a_failed_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(SystemExit):
        main([f"run={tmp_path}"])
    assert "results.json says failed" in capsys.readouterr().err


def test_eval_refuses_classes_the_run_never_saw(trained_run: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "photos" / "cat" / "a.png")
    with pytest.raises(SystemExit):
        main([f"run={trained_run}", f"folder={tmp_path / 'photos'}"])
    assert "classes the run was not trained on: cat" in capsys.readouterr().err


def test_predict_rows_in_path_order_with_errors_as_rows(trained_run: Path, tmp_path: Path, capsys) -> None:
    from sklearn.datasets import load_digits

    from cnnbench.commands.predict import main as predict
    from cnnbench.commands.visualize import visualize

    digits = load_digits()
    folder = tmp_path / "inbox"
    (folder / "nested").mkdir(parents=True)
    for i in range(5):
        where = folder / "nested" if i % 2 else folder
        Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).resize((32, 32)).save(where / f"d{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.raises(SystemExit) as code:  # a part of the work failed: exit 1, with the count
        predict([f"run={trained_run}", f"images={folder}", "top_k=3", f"out={tmp_path / 'p.csv'}"])
    printed, err = capsys.readouterr()
    assert "6 images in" in printed and "1 unreadable" in printed
    assert code.value.code == 1 and "1 of 6 images could not be read" in err
    import csv

    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [Path(r["path"]).name for r in rows] == sorted(["broken.png", "d0.png", "d2.png", "d4.png"]) + [
        "d1.png", "d3.png"]  # path order: the folder's files, then the nested folder's
    broken = rows[0]
    assert broken["error"] and not broken["class_1"]
    for r in rows[1:]:
        probs = [float(r[f"prob_{i}"]) for i in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6 and not r["error"]
        top = visualize(trained_run, Path(r["path"]), "features.0", tmp_path / "v.png", top_k=1)[1][0]
        assert r["class_1"] == top[0] and float(r["prob_1"]) == pytest.approx(top[1] / 100, abs=2e-2)
    with pytest.raises(SystemExit):
        predict([f"run={trained_run}", f"images={folder}/*.png", f"out={tmp_path / 'p.json'}"])
    rows = json.loads((tmp_path / "p.json").read_text())
    assert len(rows) == 4 and len(rows[1]["predictions"]) == 5


def test_predict_refuses_in_one_line(trained_run: Path, tmp_path: Path, capsys) -> None:
    from cnnbench.commands.predict import main as predict

    for args, message in ((["images=/no/such/*.png"], "no image files there"),
                          ([f"images={tmp_path}", "out=p.txt"], "must end in .csv or .json"),
                          ([f"images={tmp_path}", "top_k=x"], "top_k must be a whole number")):
        with pytest.raises(SystemExit) as code:
            predict([f"run={trained_run}", *args])
        err = capsys.readouterr().err
        assert code.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_eval_under_corruptions_against_a_baseline(trained_run: Path, tmp_path: Path, capsys) -> None:
    from cnnbench.evaluation.corruptions import CORRUPTIONS

    main([f"run={trained_run}", "corruptions=true", "corruption_images=64", f"baseline={trained_run}",
          f"out={tmp_path / 'c.json'}"])
    c = json.loads((tmp_path / "c.json").read_text())["corruptions"]
    assert set(c["accuracy"]) == set(CORRUPTIONS) and all(len(v) == 5 for v in c["accuracy"].values())
    assert c["images"] == 64 and 0 <= c["mean_corruption_acc"] <= 100
    assert c["mce"] == pytest.approx(100.0)  # the run against itself, on the same corrupted images
    mild = sum(v[0] for v in c["accuracy"].values())
    severe = sum(v[4] for v in c["accuracy"].values())
    assert severe < mild  # severity 5 hurts more than severity 1, summed over the types
    assert set(c["not_generated"]) == {"frost"}
    assert (tmp_path / "c_corruptions.png").is_file()  # (figures go beside out=)
    assert "mean corruption accuracy" in capsys.readouterr().out
