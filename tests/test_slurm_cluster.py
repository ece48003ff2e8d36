"""The Slurm test harness itself: arrays, signals before the time limit, requeue, submitit, and stop/start."""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from slurm_cluster import CLUSTER_SCRIPT, SlurmCluster, free_port_pair, slurm_cluster  # noqa: F401

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_array_tasks_all_land(slurm_cluster: SlurmCluster, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    job = slurm_cluster.sbatch("--array=0-3", f"--output={tmp_path}/%A_%a.log",
                               "--wrap", f"echo $SLURM_ARRAY_TASK_ID > {out}/task_$SLURM_ARRAY_TASK_ID")
    states = slurm_cluster.wait_all([job], timeout=60)
    assert states == {f"{job}_{i}": "COMPLETED" for i in range(4)}
    assert sorted(p.name for p in out.iterdir()) == [f"task_{i}" for i in range(4)]
    assert [(out / f"task_{i}").read_text().strip() for i in range(4)] == ["0", "1", "2", "3"]


# A batch script that checkpoints nothing but shows the protocol: on USR1 it requeues itself; the next run sees
# SLURM_RESTART_COUNT=1. Bash runs a trap only between commands, so the loop sleeps in short steps (or: run the
# program with `exec`, so that it is the batch shell and gets the signal itself).
REQUEUE_SCRIPT = """#!/bin/bash
out={out}/$SLURM_JOB_ID
echo "restart=${{SLURM_RESTART_COUNT:-0}}" >> $out.runs
if [ "${{SLURM_RESTART_COUNT:-0}}" -ge 1 ]; then exit 0; fi
trap 'echo USR1 >> $out.signals; scontrol requeue $SLURM_JOB_ID; exit 0' USR1
touch $out.started
for i in $(seq 1800); do sleep 0.1; done
exit 3
"""


def test_signal_before_time_limit_then_requeue(slurm_cluster: SlurmCluster, tmp_path: Path):
    """Two ways a job gets USR1 while it runs, and a requeue from the signal handler.

    timed: `--time=1 --signal=B:USR1@55`, as before a real time-out. Slurm checks time limits every ~30 s, so the
        signal comes 5-35 s after the start. "B:" signals the batch shell; without it only srun steps get it.
    by hand: `scancel --batch --signal=USR1`, as a test can do at once (preemption looks the same to the job).
    A requeued job may start again only after cred_expire (10 s here; 120 s by Slurm's default).
    """
    script = REQUEUE_SCRIPT.format(out=tmp_path)
    timed = slurm_cluster.sbatch("--time=1", "--signal=B:USR1@55", f"--output={tmp_path}/%j.log", script=script)
    by_hand = slurm_cluster.sbatch(f"--output={tmp_path}/%j.log", script=script)
    deadline = time.monotonic() + 30
    while not (tmp_path / f"{by_hand}.started").exists():
        assert time.monotonic() < deadline, f"job {by_hand} did not start: {slurm_cluster.states([by_hand])}"
        time.sleep(0.1)
    slurm_cluster.run("scancel", "--batch", "--signal=USR1", by_hand)

    states = slurm_cluster.wait_all([timed, by_hand], timeout=150)
    assert states == {timed: "COMPLETED", by_hand: "COMPLETED"}
    for job in (timed, by_hand):
        assert (tmp_path / f"{job}.signals").read_text().split() == ["USR1"], job
        assert (tmp_path / f"{job}.runs").read_text().split() == ["restart=0", "restart=1"], job
        assert slurm_cluster.info(job)["Restarts"] == "1"


def _where_am_i(x: int) -> dict:
    import os as os_

    return {"square": x * x, "job": os_.environ.get("SLURM_JOB_ID"), "task": os_.environ.get("SLURM_ARRAY_TASK_ID")}


def _by_value(fn):
    """This test module cannot be imported in the job's Python (tests/ is not on its sys.path): make cloudpickle
    send the function's code rather than a reference to it. Functions from muso_cli need none of this."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(__import__(fn.__module__))
    return fn


def test_submitit_round_trip(slurm_cluster: SlurmCluster, tmp_path: Path, caplog):
    """submitit submits through sbatch, then polls: for the result pickle in its folder (every second in
    job.result()), and now and then with `sacct -o JobID,State,NodeList --parsable2 -j ID`. Slurm's sacct needs
    slurmdbd; the cluster's DIR/bin/sacct (first on PATH) answers from scontrol and the jobcomp log instead."""
    submitit = pytest.importorskip("submitit")
    caplog.set_level(logging.WARNING, logger="submitit")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    executor.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=5, cpus_per_task=1)

    job = executor.submit(_by_value(_where_am_i), 7)
    assert job.result() == {"square": 49, "job": job.job_id, "task": None}
    assert job.get_info()["State"] == "COMPLETED"  # get_info() asks sacct now; job.state may be a cached PENDING

    jobs = executor.map_array(_where_am_i, [1, 2, 3])
    assert [j.result()["square"] for j in jobs] == [1, 4, 9]
    assert [j.result()["task"] for j in jobs] == ["0", "1", "2"]
    assert {j.get_info()["State"] for j in jobs} == {"COMPLETED"}

    # A job that ends without a result: submitit learns it from sacct (with no answer it would wait forever).
    slow = executor.submit(time.sleep, 600)
    deadline = time.monotonic() + 30
    while slurm_cluster.states([slow.job_id]).get(slow.job_id) != "RUNNING":
        assert time.monotonic() < deadline, slurm_cluster.states([slow.job_id])
        time.sleep(0.2)
    slow.cancel()  # submitit's job ignores SIGTERM (it waits for USR2): Slurm kills it after KillWait (5 s here)
    # job.result() would ask sacct too, but with a back-off (2 s, then half the time since the last submission);
    # done(force_check=True) asks now.
    while not slow.done(force_check=True):
        assert time.monotonic() < deadline, slurm_cluster.states([slow.job_id])
        time.sleep(0.2)
    slow._results_timeout_s = 1  # submitit waits 15 s for a late result pickle (slow NFS) before it gives up
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        slow.result()
    assert slow.get_info()["State"].startswith("CANCELLED")
    assert "sacct" not in caplog.text, caplog.text  # no "Bypassing sacct error"


def test_stop_after_a_daemon_died_and_two_clusters_side_by_side(slurm_cluster: SlurmCluster, tmp_path: Path):
    """A second cluster (other ports) runs beside the session's; its slurmd dies under a running job; stop still
    ends every process of that cluster; start works again in the same folder; the session's cluster is unharmed."""
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"muso-slurm-second-{os.getpid()}"
    ctld, slurmd = free_port_pair(first=6901)
    env = {**os.environ, "MUSO_SLURM_CTLD_PORT": str(ctld), "MUSO_SLURM_SLURMD_PORT": str(slurmd),
           "SLURM_CONF": str(root / "slurm.conf")}

    def script(*args: str) -> str:
        proc = subprocess.run(["bash", str(CLUSTER_SCRIPT), *args, str(root)], capture_output=True, text=True,
                              env=env, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    def cluster_pids() -> list[int]:
        pids = []
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and f"SLURM_CONF={root}/slurm.conf".encode() in (p / "environ").read_bytes() \
                        and (p / "stat").read_text().split(") ")[1][0] not in "ZX" and int(p.name) != os.getpid():
                    pids.append(int(p.name))
            except OSError:
                pass
        return pids

    try:
        t0 = time.monotonic()
        script("start")
        started_in = time.monotonic() - t0
        assert "already running" in script("start")
        job = subprocess.run(["sbatch", "--parsable", "--wrap", "sleep 600", f"--output={tmp_path}/%j.out"],
                             capture_output=True, text=True, env=env, check=True).stdout.strip()
        deadline = time.monotonic() + 30
        while not (tmp_path / f"{job}.out").exists():  # the job runs (its slurmstepd made the file)
            assert time.monotonic() < deadline, f"job {job} did not start"
            time.sleep(0.1)
        os.kill(int((root / "run" / "slurmd.pid").read_text()), 9)
        out = script("stop")
        assert "left-over slurmstepd" in out
        assert cluster_pids() == [], "processes of the stopped cluster are still running"
        assert "not running" in script("stop")
        script("start")
        assert "running" in script("status")
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(root)], env=env, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
    assert cluster_pids() == []
    assert started_in < 10
    # The session's cluster still answers.
    job = slurm_cluster.sbatch("--wrap", "true", f"--output={tmp_path}/%j.out")
    assert slurm_cluster.wait_all([job], timeout=30) == {job: "COMPLETED"}
