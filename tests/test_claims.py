"""Nothing lost, nothing run twice: trial claims, results that are never overwritten, an index planners share."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from muso_cli import track
from muso_cli.study import claims
from muso_cli.cli import main
from muso_cli.study.store import Study
from muso_cli.study.trials import make_trial

FAST = ["data=synthetic", "data.n_train=512", "data.n_test=256", "model.base_width=16", "train.steps=30",
        "train.eval_every=10", "train.progress=false"]


# ------------------------------------------------------------------------------------------------------
# Claims

def test_a_live_claim_is_respected_and_released(tmp_path):
    with claims.take(tmp_path) as claim:
        assert claims.is_running(tmp_path) and claims.holder(tmp_path)["pid"] == os.getpid()
        assert claims.take(tmp_path) is None  # a second taker is refused while the first is live
        assert claim.held()
    assert not claims.is_running(tmp_path)
    assert not (tmp_path / claims.CLAIM).exists() and not (tmp_path / track.HEARTBEAT).exists()


def _plant_claim(folder: Path, *, pid: int, age: float, host: str | None = None, token: str = "old") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    then = time.time() - age
    (folder / claims.CLAIM).write_text(json.dumps({"token": token, "host": host or socket.gethostname(),
                                                   "pid": pid, "slurm_task": None, "started": then}))
    (folder / track.HEARTBEAT).write_text(json.dumps({"token": token, "time": then}))


def test_a_claim_whose_pid_died_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _plant_claim(tmp_path, pid=dead.pid, age=1.0)
    assert not claims.is_running(tmp_path)
    claim = claims.take(tmp_path)
    assert claim is not None and claim.held()
    claim.release()


def test_a_reused_pid_does_not_keep_a_stale_claim_alive(tmp_path):
    """The holder is gone and its pid now belongs to another live process (here: ours): time decides."""
    _plant_claim(tmp_path, pid=os.getpid(), age=claims.STALE_SECONDS + 5)
    assert not claims.is_running(tmp_path)
    assert claims.take(tmp_path) is not None


def test_another_hosts_claim_is_judged_by_its_heartbeat(tmp_path):
    _plant_claim(tmp_path / "fresh", pid=1, age=5.0, host="elsewhere")
    _plant_claim(tmp_path / "stale", pid=1, age=claims.STALE_SECONDS + 5, host="elsewhere")
    assert claims.is_running(tmp_path / "fresh") and claims.take(tmp_path / "fresh") is None
    assert not claims.is_running(tmp_path / "stale") and claims.take(tmp_path / "stale") is not None


def test_a_requeued_slurm_task_takes_over_its_own_previous_claim(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    _plant_claim(tmp_path, pid=1, age=2.0, host="node-a")
    claim = json.loads((tmp_path / claims.CLAIM).read_text())
    (tmp_path / claims.CLAIM).write_text(json.dumps({**claim, "slurm_task": "77_3"}))
    assert claims.take(tmp_path) is not None


def test_of_several_takers_of_a_stale_claim_exactly_one_wins(tmp_path):
    _plant_claim(tmp_path, pid=1, age=claims.STALE_SECONDS + 5, host="elsewhere")
    won, barrier = [], threading.Barrier(8)

    def taker():
        barrier.wait()
        claim = claims.take(tmp_path)
        if claim is not None:
            won.append(claim)

    threads = [threading.Thread(target=taker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and won[0].held()
    won[0].release()


def test_a_finished_result_is_never_overwritten(tmp_path):
    assert track.write_result(tmp_path, {"status": "failed", "error": "x"})["status"] == "failed"
    assert track.write_result(tmp_path, {"status": "ok", "n": 1}) == {"status": "ok", "n": 1}  # a failed one is
    before = (tmp_path / track.RESULT).read_bytes()
    assert track.write_result(tmp_path, {"status": "diverged", "n": 2}) == {"status": "ok", "n": 1}
    assert (tmp_path / track.RESULT).read_bytes() == before


# ------------------------------------------------------------------------------------------------------
# Through the commands

def _planned(tmp_path, *extra, name: str = "s") -> Study:
    assert main(["sweep", *FAST, f"study.root={tmp_path / 'studies'}", f"study.name={name}", "study.params=[sp]",
                 *extra, "--no-launch"]) == 0
    return Study(tmp_path / "studies" / name)


def test_run_trial_skips_a_trial_another_process_runs(tmp_path, capsys):
    study = _planned(tmp_path, "study.lr=[0.1]")
    trial = study.trials()[0]
    folder = study.trial_dir(trial)
    _plant_claim(folder, pid=os.getppid(), age=1.0)  # a live process (our parent) holds it
    assert main(["run-trial", str(study.path), "0"]) == 0
    assert "running" in capsys.readouterr().out
    assert not (folder / track.RESULT).exists()  # not trained here
    assert study.status(trial) == "running"


def test_a_trial_folder_that_is_a_file_fails_that_trial_and_the_sweep_goes_on(tmp_path, capsys):
    """An unwritable trial folder (here a plain file where the folder should be: root writes everywhere else)
    becomes that trial's failed result; the other trials still run."""
    study = _planned(tmp_path, "study.lr=[0.1,0.2]")
    first, second = study.trials()
    study.trial_dir(first).parent.mkdir(parents=True, exist_ok=True)
    study.trial_dir(first).write_text("in the way")
    assert main(["sweep", *FAST, f"study.root={tmp_path / 'studies'}", "study.name=s", "study.params=[sp]",
                 "study.lr=[0.1,0.2]"]) == 1
    assert "cannot write the trial folder" in capsys.readouterr().err
    assert study.status(second) == "ok"


def test_concurrent_planners_keep_every_entry(tmp_path):
    """Six planners adding their own trials to one index at the same time: nothing is lost."""
    study = _planned(tmp_path, "study.lr=[0.1]")
    base = study.trials()[0]
    barrier = threading.Barrier(6)

    def planner(k: int):
        config = json.loads(json.dumps(base.config))
        config["optimizer"]["lr"] = 0.01 * (k + 2)
        barrier.wait()
        study.add([make_trial(config, "sweep")])

    threads = [threading.Thread(target=planner, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    trials = study.trials()
    assert len(trials) == 7 and [t.index for t in trials] == list(range(7))
    assert sorted(t.lr for t in trials) == pytest.approx([0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.1])


def test_a_corrupt_index_is_refused_by_every_command_and_never_rewritten(tmp_path, capsys):
    study = _planned(tmp_path, "study.lr=[0.1,0.2]")
    index = study.path / "trials.jsonl"
    damaged = index.read_text().splitlines()
    damaged[1] = damaged[1][:40]
    index.write_text("\n".join(damaged) + "\n")
    before = index.read_bytes()
    sweep = ["sweep", *FAST, f"study.root={tmp_path / 'studies'}", "study.name=s", "study.params=[sp]",
             "study.lr=[0.1,0.2]"]
    for argv in (sweep, ["status", str(study.path)], ["report", str(study.path)],
                 ["transfer", str(study.path), "transfer.widths=[32]"], ["run-trial", str(study.path), "0"]):
        assert main(argv) == 2, argv
        assert "trials.jsonl cannot be read" in capsys.readouterr().err
    assert index.read_bytes() == before and not list(study.path.glob("trials/*/result.json"))


def test_trial_ids_that_leave_the_study_are_refused(tmp_path, capsys):
    study = _planned(tmp_path, "study.lr=[0.1]")
    index = study.path / "trials.jsonl"
    entry = json.loads(index.read_text())
    index.write_text(json.dumps({**entry, "id": "../../escaped"}) + "\n")
    assert main(["run-trial", str(study.path), "0"]) == 2
    assert "not a valid trial entry" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (study.path.parent / "escaped").exists()


# ------------------------------------------------------------------------------------------------------
# Stress (slow): many processes at once

def _muso(*args, cwd) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "muso_cli", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_six_concurrent_planners_six_times_keep_every_entry(tmp_path):
    for rep in range(6):
        root = tmp_path / f"rep{rep}"
        procs = [_muso("sweep", *FAST, f"study.root={root}", "study.name=s", "study.params=[sp]",
                       f"study.lr=[{0.01 * (k + 1)}]", "--no-launch", cwd=tmp_path) for k in range(6)]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        trials = Study(root / "s").trials()
        assert len(trials) == 6 and [t.index for t in trials] == list(range(6)), rep
        assert sorted(t.lr for t in trials) == pytest.approx([0.01 * (k + 1) for k in range(6)])


@pytest.mark.slow
def test_eight_run_trial_processes_train_every_trial_exactly_once(tmp_path):
    """Eight processes on distinct indices, then eight on equal ones, half of them through a second path to the
    same shared folder (another study root): every trial runs once; rerunning changes no byte of a result."""
    study = _planned(tmp_path, "study.lr=[0.05,0.1,0.2,0.4]", "study.seeds=[0,1]", "train.steps=50")
    other_root = tmp_path / "mount"
    other_root.symlink_to(tmp_path / "studies")
    paths = [str(study.path), str(other_root / "s")]
    procs = [_muso("run-trial", paths[i % 2], str(i), cwd=tmp_path) for i in range(8)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert all(study.status(t) == "ok" for t in study.trials())
    snapshot = {p: p.read_bytes() for p in study.path.glob("trials/*/result.json")}
    assert len(snapshot) == 8

    long = _planned(tmp_path, "study.lr=[0.1]", "train.steps=1500", name="long")
    long_paths = [str(long.path), str(other_root / "long")]
    procs = [_muso("run-trial", long_paths[i % 2], "0", cwd=tmp_path) for i in range(8)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    trained = [o for o, _ in outs if ": ok" in o or ": diverged" in o]
    skipped = [o for o, _ in outs if "running elsewhere" in o or "finished already" in o]
    assert len(trained) == 1 and len(skipped) == 7, outs
    procs = [_muso("run-trial", paths[i % 2], str(i), cwd=tmp_path) for i in range(8)]
    for p in procs:
        p.communicate(timeout=600)
    assert {p: p.read_bytes() for p in study.path.glob("trials/*/result.json") if p in snapshot} == snapshot


def test_a_non_numeric_metric_or_a_torn_metrics_file_is_counted_unreadable(tmp_path, capsys):
    """Report and transfer skip what cannot be trusted and name it; they never crash on it."""
    assert main(["sweep", *FAST, f"study.root={tmp_path / 'studies'}", "study.name=s", "study.params=[sp]",
                 "study.lr=[0.05,0.1,0.2]"]) == 0
    study = Study(tmp_path / "studies" / "s")
    a, b, _ = study.trials()
    result = json.loads((study.trial_dir(a) / track.RESULT).read_text())
    result["final"]["train_loss"] = "abc"
    (study.trial_dir(a) / track.RESULT).write_text(json.dumps(result))
    metrics = study.trial_dir(b) / track.METRICS
    metrics.write_text(metrics.read_text()[:-20])  # torn last line
    capsys.readouterr()
    assert main(["report", str(study.path)]) == 0
    captured = capsys.readouterr()
    assert "2 unreadable" in captured.out and a.id in captured.err and b.id in captured.err
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--allow-edge", "--dry-run"]) == 0
