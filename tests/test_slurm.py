"""Studies on a real Slurm cluster (started by the fixture): submitit array jobs, the plain sbatch script, and
trials that are signalled before a time-out, checkpoint, requeue themselves and finish from the checkpoint."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from muso_cli import track
from muso_cli.cli import main
from muso_cli.study.store import Study
from slurm_cluster import SlurmCluster, slurm_cluster  # noqa: F401  (the session fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
FAST = ["data=synthetic", "data.n_train=512", "data.n_test=256", "model.base_width=16", "model.width=16",
        "train.steps=30", "train.eval_every=10", "train.progress=false", "study.params=[sp]"]
SLURM = ["launcher=slurm", "launcher.cpus_per_task=1", "launcher.time_min=10", "launcher.poll_s=0.5"]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def steps_of(study: Study, trial) -> list[int]:
    return [m["step"] for m in track.read_json_lines(study.trial_dir(trial) / "metrics.jsonl") or []]


def test_a_sweep_through_launcher_slurm_lands_every_result(slurm_cluster: SlurmCluster, tmp_path):
    root = tmp_path / "studies"
    assert main(["sweep", *FAST, *SLURM, "study.lr=log2:-7:0", f"launcher.partition={slurm_cluster.partition}",
                 "launcher.trials_per_task=2", f"study.root={root}", "study.name=s"]) == 0
    study = Study(root / "s")
    trials = study.trials()
    assert len(trials) == 8 and all(study.status(t) == "ok" for t in trials)
    results = [study.result(t) for t in trials]
    assert len({r["slurm"]["job_id"] for r in results}) == 4  # 4 array tasks of 2 trials
    assert all(r["slurm"]["array_task"] is not None for r in results)
    # running it again submits nothing: every trial is finished
    before = {p: p.stat().st_mtime_ns for p in study.path.glob("trials/*/result.json")}
    assert main(["sweep", *FAST, *SLURM, "study.lr=log2:-7:0", f"study.root={root}", "study.name=s"]) == 0
    assert {p: p.stat().st_mtime_ns for p in study.path.glob("trials/*/result.json")} == before


def test_a_signalled_trial_checkpoints_requeues_and_finishes(slurm_cluster: SlurmCluster, tmp_path):
    """What Slurm does before a time-out (USR2 to the task, here sent at once with scancel): the trial saves a
    checkpoint at the next step, the task requeues itself and the trial continues from the checkpoint."""
    root = tmp_path / "studies"
    long = ["train.steps=4000", "train.eval_every=100", "study.lr=[0.1]"]
    assert main(["sweep", *FAST, *SLURM, *long, "launcher.wait=false", f"study.root={root}", "study.name=s"]) == 0
    study = Study(root / "s")
    trial = study.trials()[0]
    job = track.read_json(study.path / "slurm_jobs.json")["jobs"][0]
    wait_until(lambda: len(steps_of(study, trial)) >= 3, 120, "the trial to make progress")
    assert study.status(trial) == "running"
    slurm_cluster.run("scancel", "--signal=USR2", job)
    wait_until(lambda: study.status(trial) == "ok", 240, "the requeued trial to finish")
    result = study.result(trial)
    assert result["slurm"]["restarts"] == 1 and result["steps"] == 4000
    steps = steps_of(study, trial)
    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == 4000  # no step lost or repeated
    assert not (study.trial_dir(trial) / "checkpoint.pt").exists()


def test_the_plain_sbatch_script_runs_trial_i_in_task_i_and_requeues_on_usr1(slurm_cluster: SlurmCluster,
                                                                             tmp_path, capsys):
    root = tmp_path / "studies"
    long = ["train.steps=3000", "train.eval_every=100", "study.lr=log2:-3:0"]
    assert main(["sweep", *FAST, *long, f"study.root={root}", "study.name=s", "--no-launch"]) == 0
    study = Study(root / "s")
    assert all(study.status(t) == "pending" for t in study.trials())
    capsys.readouterr()
    assert main(["status", str(study.path), "--pending"]) == 0
    spec = capsys.readouterr().out.strip()
    assert spec == "0-3"

    slurm_cluster.env["MUSO"] = str(Path(sys.executable).parent / "muso")
    try:
        job = slurm_cluster.sbatch(f"--array={spec}", "--cpus-per-task=1", f"--chdir={tmp_path}",
                                   str(REPO / "scripts" / "slurm_array.sh"), str(study.path))
    finally:
        del slurm_cluster.env["MUSO"]
    first = study.trials()[0]
    wait_until(lambda: len(steps_of(study, first)) >= 3, 120, "trial 0 to make progress")
    # What --signal=B:USR1@90 does before the time limit: one USR1 to the batch process, which the script's
    # `exec` made the muso process (the trial's heartbeat has its pid). `scancel --batch --signal` is no
    # substitute: while the task is being requeued it answers "try again later" and keeps retrying, so the
    # signal also reaches the restarted run.
    os.kill(track.read_json(study.trial_dir(first) / "running.json")["pid"], signal.SIGUSR1)
    wait_until(lambda: all(study.status(t) == "ok" for t in study.trials()), 240, "every trial")
    results = {t.index: study.result(t) for t in study.trials()}
    assert {int(r["slurm"]["array_task"]) for r in results.values()} == {0, 1, 2, 3}  # task i ran trial i
    assert [int(results[i]["slurm"]["array_task"]) for i in range(4)] == [0, 1, 2, 3]
    assert results[0]["slurm"]["restarts"] == 1 and results[0]["steps"] == 3000
    steps = steps_of(study, first)
    assert steps == sorted(set(steps)) and steps[-1] == 3000
    assert "requeueing Slurm job" in (tmp_path / f"slurm-{job}_0.out").read_text()


def test_gpus_on_a_cluster_without_gpus_is_refused_before_anything_is_written(slurm_cluster: SlurmCluster,
                                                                              tmp_path, capsys):
    root = tmp_path / "studies"
    assert main(["sweep", *FAST, *SLURM, "launcher.gpus_per_task=1", f"study.root={root}"]) == 2
    err = capsys.readouterr().err
    assert "error: launcher.gpus_per_task" in err and "have none" in err and "Traceback" not in err
    assert not root.exists()
