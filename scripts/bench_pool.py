"""Throughput of launcher=pool against sequential (launcher=local) on the same 16 small trials.

    .venv/bin/python scripts/bench_pool.py                      # CPU: 2 workers against sequential
    .venv/bin/python scripts/bench_pool.py --data fashion_mnist  # larger trials (784 inputs)
    .venv/bin/python scripts/bench_pool.py --per-gpu 1 4        # CUDA: the pool with 1 and 4 runs per GPU

The study (16 trials: 16 learning rates of an MLP; digits by default, Fashion-MNIST with --data) is planned once with `muso sweep
--no-launch`; each launcher then runs all 16 from scratch in a fresh process, and only the launch is timed (from
the first trial started to the last result written; planning is left out). "cold" is the first launch in a fresh
process (it includes the one-time start-up: loading the data, importing what the first optimizer imports);
"warm" a second launch in the same process, the steady-state throughput. Ratios are to sequential, measured in
this one run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def time_launch(study_path: str, launcher: dict) -> list[float]:
    """In this fresh process: run every trial of the study with ``launcher``, twice (results cleared between).

    Returns [cold, warm] seconds: the first launch pays this process's one-time start-up (loading the data,
    importing what the first optimizer imports, ~1 s), the second shows the steady-state throughput.
    """
    from omegaconf import OmegaConf

    from muso_cli.launch import launch
    from muso_cli.study.store import Study

    study = Study(study_path)
    seconds = []
    for _ in range(2):
        shutil.rmtree(study.path / "trials", ignore_errors=True)
        trials = study.trials()
        start = time.perf_counter()
        counts = launch(study, trials, OmegaConf.create(launcher))
        seconds.append(time.perf_counter() - start)
        assert counts["ok"] + counts["diverged"] == len(trials), counts
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="pool workers on CPU")
    ap.add_argument("--per-gpu", type=int, nargs="*", default=[], help="CUDA: runs packed per GPU (e.g. 1 4)")
    ap.add_argument("--data", default="digits", help="digits (8×8, small trials) or fashion_mnist")
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2, help="launches per launcher (the fastest counts)")
    ap.add_argument("--time-launch", nargs=2, metavar=("STUDY", "LAUNCHER_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.time_launch:
        print(json.dumps(time_launch(args.time_launch[0], json.loads(args.time_launch[1]))))
        return

    device = "cuda" if args.per_gpu else "cpu"
    root = Path(tempfile.mkdtemp(prefix="muso-bench-pool-"))
    env = {**os.environ, "WANDB_MODE": "disabled"}
    try:
        subset = ["data.n_train=20000", "data.n_test=2000"] if args.data == "fashion_mnist" else []
        subprocess.run([sys.executable, "-m", "muso_cli", "sweep", f"data={args.data}", *subset, f"model.width={args.width}", f"model.base_width={args.width}",
                        f"train.steps={args.steps}", "train.eval_every=100", "train.eval_train_samples=2000",
                        "study.params=[sp]", "study.lr=log2:-12:3", f"device={device}", f"study.root={root}",
                        "study.name=bench", "--no-launch"], check=True, stdout=subprocess.DEVNULL, env=env)
        study = str(root / "bench")
        pool = {"name": "pool", "workers": None, "per_gpu": 1, "threads": None}
        runs = [("sequential (launcher=local)", {"name": "local"})]
        if args.per_gpu:
            runs += [(f"pool, {k} per GPU", {**pool, "per_gpu": k}) for k in args.per_gpu]
        else:
            runs += [(f"pool, {args.workers} workers", {**pool, "workers": args.workers})]
        print(f"16 trials: MLP of width {args.width}, {args.steps} steps of batch 128 on {args.data}, device {device}, "
              f"{os.cpu_count()} CPU cores; seconds to run all 16, best of {args.repeats} fresh processes")
        print(f"  {'launcher':<30} {'cold':>7} {'warm':>7}   {'cold ratio':>10} {'warm ratio':>10}   warm trials/min")
        baseline = None
        for label, launcher in runs:
            times = [json.loads(subprocess.run([sys.executable, __file__, "--time-launch", study, json.dumps(launcher)],
                                               check=True, env=env, capture_output=True, text=True).stdout)
                     for _ in range(args.repeats)]
            cold, warm = min(t[0] for t in times), min(t[1] for t in times)
            baseline = baseline or (cold, warm)
            print(f"  {label:<30} {cold:6.2f}s {warm:6.2f}s   ×{baseline[0] / cold:9.2f} ×{baseline[1] / warm:9.2f}   "
                  f"{16 / warm * 60:10.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
