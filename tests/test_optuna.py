"""cnnbench's Optuna sweeper on current Optuna: the search space, shared studies on a database or a journal file,
seeds apart per trial, studies that do not fit refused, pruned trials, and optuna-dashboard reading a study."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli, start_cli

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from cnnbench.errors import CnnbenchError  # noqa: E402
from hydra_plugins.cnnbench_sweeper import study as studies  # noqa: E402
from hydra_plugins.cnnbench_sweeper.search_space import as_override, search_space  # noqa: E402

CEILING_S = 1800  # against a hung process only
SEARCH = ["-m", "hparams_search=digits_optuna", "trainer.epochs=1", "trainer.max_steps=3", "logger.print_config=false",
          "logger.tensorboard=false", "logger.figures=false", "logger.snapshots=0", "logger.progress=false"]


def trials(storage: str, name: str = "digits_lenet5") -> list:
    return optuna.load_study(study_name=name, storage=studies.storage_of(storage)).trials


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def test_hydras_sweep_syntax_becomes_optuna_distributions() -> None:
    space, fixed = search_space({"optimizer.lr": "tag(log, interval(0.001, 0.1))", "a": "choice(16, 32, 64)",
                                 "b": "range(1, 10, 2)", "c": "tag(int, interval(2, 5))", "d": "range(0.1, 0.5, 0.1)"},
                                ["e=x,y", "trainer.epochs=3", "a=choice(8,16)"])
    assert space["optimizer.lr"] == FloatDistribution(0.001, 0.1, log=True)
    assert space["a"] == CategoricalDistribution([8, 16])  # the command line's sweep wins
    assert space["b"] == IntDistribution(1, 9, step=2) and space["c"] == IntDistribution(2, 5)
    assert space["d"].low == 0.1 and space["d"].step == 0.1 and space["d"].high == pytest.approx(0.4)
    assert space["e"] == CategoricalDistribution(["x", "y"]) and fixed == ["trainer.epochs=3"]
    assert as_override("k", "a b") == "k='a b'" and as_override("k", True) == "k=true" and as_override("k", 1e-3) == \
        "k=0.001"


def test_each_trial_draws_from_its_own_seed_whichever_process_asks_it() -> None:
    """#7 of issue 41: seeds differ per trial number (two processes, a rerun), and repeat for the same number."""
    assert studies.trial_seed(0, 3) == studies.trial_seed(0, 3) != studies.trial_seed(0, 4)
    space = {"x": FloatDistribution(0.0, 1.0)}

    def draw(study: optuna.Study) -> float:
        trial = study.ask()
        return trial.suggest_float("x", 0.0, 1.0)

    def sampler() -> optuna.samplers.BaseSampler:
        return studies.SeededPerTrial(lambda s: optuna.samplers.TPESampler(seed=s), seed=0)

    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(study_name="s", storage=storage, sampler=sampler())
    second = optuna.load_study(study_name="s", storage=storage, sampler=sampler())  # another process, same seed
    points = [draw(first), draw(second), draw(first), draw(second)]
    assert len(set(points)) == 4
    again = optuna.create_study(sampler=sampler())
    assert [draw(again) for _ in range(4)] == points  # a search from scratch repeats exactly
    studies.check_study(first, "minimize", space, "memory")


def test_a_study_of_another_direction_or_space_is_refused_before_any_trial() -> None:
    """#7 of issue 41: refused in one line, and no RUNNING trial left behind."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    studies.check_study(study, "maximize", {"x": FloatDistribution(0.0, 1.0)}, "memory")
    study.tell(study.ask({"x": FloatDistribution(0.0, 1.0)}), 1.0)
    with pytest.raises(CnnbenchError, match="maximizes, this sweep's hydra.sweeper.direction is minimize"):
        studies.check_study(study, "minimize", {"x": FloatDistribution(0.0, 1.0)}, "memory")
    with pytest.raises(CnnbenchError, match=r"searches another space \(x, y differ\)"):
        studies.check_study(study, "maximize", {"x": FloatDistribution(0.0, 2.0), "y": IntDistribution(1, 3)},
                            "memory")
    assert not study.get_trials(states=(TrialState.RUNNING,))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_processes_on_one_study_run_n_trials_together_and_a_rerun_runs_what_it_lacks(tmp_path: Path,
                                                                                      kind: str) -> None:
    """Issue 43's acceptance: two sweeper processes at once on one SQLite database or journal file, n_trials=4:
    4 complete trials at 4 distinct points; a rerun with n_trials=6 ends with 6."""
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else f"journal://{tmp_path / 'study.log'}"
    args = [*SEARCH, f"hydra.sweeper.storage={storage}"]
    both = [start_cli(*args, "hydra.sweeper.n_trials=4", f"hydra.sweep.dir={tmp_path / d}", cwd=tmp_path,
                      OMP_NUM_THREADS="1") for d in ("a", "b")]
    for proc in both:
        assert proc.wait(timeout=CEILING_S) == 0, proc.communicate()[1][-2000:]
    done = [t for t in trials(storage) if t.state == TrialState.COMPLETE]
    assert len(done) == 4 and len({t.params["optimizer.lr"] for t in done}) == 4
    assert len(results(tmp_path / "a")) + len(results(tmp_path / "b")) == 4
    rerun = run_cli(*args, "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={tmp_path / 'c'}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "holds 4 of its n_trials=6" in rerun.stderr + rerun.stdout
    assert sum(t.state == TrialState.COMPLETE for t in trials(storage)) == 6 and len(results(tmp_path / "c")) == 2


@pytest.mark.slow
def test_a_killed_sweeper_s_trial_is_marked_failed_and_run_again(tmp_path: Path) -> None:
    """A sweeper killed mid-trial: the rerun marks its trial failed (the process was gone) and runs what the study
    lacks."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = [*SEARCH, f"hydra.sweeper.storage={storage}", "trainer.max_steps=null", "trainer.epochs=200"]
    killed = start_cli(*args, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={tmp_path / 'a'}", cwd=tmp_path)
    deadline = time.monotonic() + CEILING_S
    while not (tmp_path / "a" / "0" / "checkpoints" / "last.pt").is_file():  # its first trial trains: kill it
        assert killed.poll() is None and time.monotonic() < deadline, killed.communicate()[1][-2000:]
        time.sleep(0.2)
    killed.kill()
    killed.wait(timeout=CEILING_S)
    rerun = run_cli(*SEARCH, f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=2",
                    f"hydra.sweep.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    states = trials(storage)
    assert sum(t.state == TrialState.COMPLETE for t in states) == 2
    (gone,) = [t for t in states if "was gone" in t.user_attrs.get(studies.GIVEN_UP, "")]
    assert gone.user_attrs[studies.OWNER].endswith(f":{killed.pid}") and gone.state == TrialState.FAIL


@pytest.mark.slow
def test_a_pruned_trial_is_pruned_in_results_leaderboard_and_study(tmp_path: Path) -> None:
    """With hydra.sweeper.pruner=median a trial behind the others stops at that epoch: status pruned in its
    results.json, in the leaderboard (not failed: the command exits 0) and in the study; the best is written."""
    sweep = tmp_path / "sweep"
    storage = f"journal://{tmp_path / 'study.log'}"
    proc = run_cli(*SEARCH, "trainer.max_steps=null", "trainer.epochs=4", "hydra.sweeper.n_trials=6",
                   "hydra.sweeper.pruner=median", "hydra.sweeper.pruner_startup_trials=2",
                   f"hydra.sweeper.storage={storage}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = {job: r["status"] for job, r in results(sweep).items()}
    pruned = [job for job, status in statuses.items() if status == "pruned"]
    assert pruned and set(statuses.values()) == {"completed", "pruned"}, statuses
    state = {t.number: t.state for t in trials(storage)}
    assert all(state[int(job)] == TrialState.PRUNED for job in pruned)
    assert all(results(sweep)[job]["epochs_completed"] < 4 for job in pruned)
    board = (sweep / "leaderboard.md").read_text()
    assert "pruned" in board and "failed" not in board
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {max(r['best_val_acc'] for r in results(sweep).values() if r['status'] == 'completed')}" \
        in best


def test_pruning_needs_a_storage_when_jobs_run_elsewhere(tmp_path: Path) -> None:
    proc = run_cli(*SEARCH, "hydra/launcher=joblib", "hydra.sweeper.pruner=median", f"hydra.sweep.dir={tmp_path / 's'}",
                   cwd=tmp_path)
    assert proc.returncode == 2 and "needs a storage they reach" in proc.stderr, proc.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_reads_a_studys_trials(tmp_path: Path) -> None:
    """optuna-dashboard (cnnbench[dashboard]) on 127.0.0.1 serves the trials of a journal file's study."""
    pytest.importorskip("optuna_dashboard")
    log = tmp_path / "study.log"
    study = optuna.create_study(study_name="dash", storage=studies.storage_of(f"journal://{log}"))
    for x in (1.0, 2.0):
        study.tell(study.ask({"x": FloatDistribution(0.0, 3.0)}), x)
    port = _free_port()
    command = [str(Path(sys.executable).parent / "optuna-dashboard"), str(log), "--host", "127.0.0.1", "--port",
               str(port), "--quiet"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # (urlopen's opener may keep a proxy
    # another test set: it is built once per process)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with direct.open(f"http://127.0.0.1:{port}/api/studies", timeout=60) as r:
                    listed = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()[1][-2000:]
                time.sleep(0.3)
        (entry,) = [s for s in listed if s["study_name"] == "dash"]
        with direct.open(f"http://127.0.0.1:{port}/api/studies/{entry['study_id']}", timeout=120) as r:
            detail = json.loads(r.read())
        assert sorted(t["values"][0] for t in detail["trials"]) == [1.0, 2.0]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=60)
