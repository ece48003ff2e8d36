"""Launching on one node: the process pool (GPU slots, CPU thread shares), stops, crashes, concurrent writers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from muso_cli import launch, track
from muso_cli.cli import main
from muso_cli.study.store import Study

FAST = ["data=synthetic", "data.n_train=512", "data.n_test=256", "model.base_width=16", "train.steps=30",
        "train.eval_every=10", "train.progress=false", "study.params=[sp]"]


def pool_cfg(**kw):
    return OmegaConf.create({"name": "pool", "workers": None, "per_gpu": 1, "threads": None, **kw})


def test_pool_slots_pin_workers_to_gpus_and_share_cpu_cores():
    slots, threads = launch.pool_slots(pool_cfg(per_gpu=4), n_gpus=2, n_cpus=16)
    assert slots == [0, 0, 0, 0, 1, 1, 1, 1] and threads == 2
    slots, threads = launch.pool_slots(pool_cfg(workers=3), n_gpus=2, n_cpus=16)
    assert slots == [0, 1, 0] and threads == 5
    slots, threads = launch.pool_slots(pool_cfg(), n_gpus=0, n_cpus=2)
    assert slots == [None, None] and threads == 1
    assert launch.pool_slots(pool_cfg(workers=4, threads=3), n_gpus=0, n_cpus=2) == ([None] * 4, 3)


def test_pool_runs_every_trial_and_pins_each_worker_to_its_gpu(tmp_path, monkeypatch):
    # No GPU here: the parent is told there are 2 and the trials run on the CPU (device=cpu), but each spawned
    # worker really gets its CUDA_VISIBLE_DEVICES, which every result records.
    import torch
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    root = tmp_path / "studies"
    assert main(["sweep", *FAST, "device=cpu", "study.lr=log2:-5:0", "launcher=pool", f"study.root={root}",
                 "study.name=p"]) == 0
    study = Study(root / "p")
    results = [study.result(t) for t in study.trials()]
    assert len(results) == 6 and {r["status"] for r in results} == {"ok"}
    assert {r["cuda_visible_devices"] for r in results} == {"0", "1"}


@pytest.mark.slow
def test_eight_concurrent_writers_lose_nothing(tmp_path):
    root = tmp_path / "studies"
    assert main(["sweep", *FAST, "study.lr=log2:-15:0", "launcher=pool", "launcher.workers=8",
                 f"study.root={root}", "study.name=c"]) == 0
    study = Study(root / "c")
    trials = study.trials()
    assert len(trials) == 16 and all(study.status(t) == "ok" for t in trials)
    assert len(track.read_json_lines(study.path / "trials.jsonl")) == 16
    for t in trials:  # every file whole
        assert len(track.read_json_lines(study.trial_dir(t) / "metrics.jsonl")) == 4
        assert track.read_json(study.trial_dir(t) / "result.json")["steps"] == 30
    assert not list(study.path.glob("trials/*/.*.tmp"))


def _sweep_process(tmp_path, *extra):
    args = [*FAST, "train.steps=300", "train.eval_every=50", "model.width=16", "launcher=pool",
            f"study.root={tmp_path / 'studies'}", "study.name=s", *extra]
    proc = subprocess.Popen([sys.executable, "-m", "muso_cli", "sweep", *args], cwd=tmp_path,
                            env={**os.environ, "WANDB_MODE": "disabled"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, args, Study(tmp_path / "studies" / "s")


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate():
        time.sleep(0.05)
    assert predicate()


def test_sigterm_stops_the_pool_with_checkpoints_and_a_rerun_finishes(tmp_path):
    proc, args, study = _sweep_process(tmp_path, "study.lr=log2:-7:0", "train.steps=3000")

    def both_workers_mid_trial():
        beating = [p.parent for p in study.path.glob("trials/*/running.json")]
        return len(beating) == 2 and all(len(track.read_json_lines(d / "metrics.jsonl") or []) >= 2 for d in beating)

    _wait_for(both_workers_mid_trial)
    in_flight = {p.parent for p in study.path.glob("trials/*/running.json")}
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert {p.parent for p in study.path.glob("trials/*/checkpoint.pt")} == in_flight  # they saved their state
    finished = {p: p.read_bytes() for p in study.path.glob("trials/*/result.json")}
    assert len(finished) < 8
    assert main(["sweep", *args, "study.lr=log2:-7:0", "train.steps=3000"]) == 0
    assert all(study.status(t) == "ok" for t in study.trials())
    assert all(p.read_bytes() == b for p, b in finished.items())  # finished results untouched
    for d in in_flight:  # resumed, not restarted: one row per evaluation, no repeats
        steps = [m["step"] for m in track.read_json_lines(d / "metrics.jsonl")]
        assert steps == sorted(set(steps)) and steps[-1] == 3000


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def test_a_killed_worker_fails_its_trial_only(tmp_path):
    proc, args, study = _sweep_process(tmp_path, "study.lr=log2:-3:0", "train.steps=3000", "train.eval_every=100")
    _wait_for(lambda: list(study.path.glob("trials/*/running.json")))
    victim = track.read_json(next(study.path.glob("trials/*/running.json")))["pid"]
    assert victim in _children(proc.pid) + [c for p in _children(proc.pid) for c in _children(p)]
    os.kill(victim, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err  # one trial failed
    statuses = sorted(study.status(t) for t in study.trials())
    assert statuses == ["failed", "ok", "ok", "ok"], err
    failed = next(t for t in study.trials() if study.status(t) == "failed")
    assert "worker process" in study.result(failed)["error"]
    assert main(["sweep", *args, "study.lr=log2:-3:0", "train.steps=3000", "train.eval_every=100"]) == 0
    assert all(study.status(t) == "ok" for t in study.trials())


def test_a_pool_worker_is_pinned_to_the_gpu_its_launcher_sees_not_to_the_slot_number():
    from muso_cli.launch import physical_gpu

    assert physical_gpu(1, "3,5") == "5" and physical_gpu(0, "3,5") == "3"
    assert physical_gpu(1, None) == "1" and physical_gpu(0, "") == "0"
    assert physical_gpu(0, "GPU-8a1b,GPU-77ff") == "GPU-8a1b"  # UUIDs pass through
