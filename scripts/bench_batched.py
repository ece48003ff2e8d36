"""Throughput of batched trials (launcher.batch=N) against the local launcher, on the base-width sweep.

    nice -n 10 .venv/bin/python scripts/bench_batched.py                     # the full run (below)
    nice -n 10 .venv/bin/python scripts/bench_batched.py --widths 64 --sizes 8 --steps 100   # a reduced one

The sweep: an MLP on Fashion-MNIST, ``--steps`` steps (300), at each width of ``--widths`` (64 256), lr grid ×
seeds giving N trials for each N of ``--sizes`` (8 16 32), for each optimizer of ``--optimizers`` (sgd adam kfac
shampoo; K-FAC and Shampoo at a fixed damping, their conf/optimizer defaults otherwise). Each measurement runs
in a fresh process: a study is planned (``muso sweep --no-launch``), the data loaded, then only the launch is
timed (``muso_cli.launch.launch``, claims and result files included). The local launcher's trials per second
does not depend on N (one trial after another), so it is measured once per optimizer and width on the first
N's trials; the batched launcher once per N. Peak memory: the child process's peak resident set size during
the launch (VmHWM, reset before it) minus its size before it (data loaded, torch imported). Ratios are of trials per second, measured in this one
run; the load (uptime) is printed before and after: the machine is shared.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DAMPING = {"kfac": 0.3, "shampoo": 0.01}


def lr_grid(n: int) -> tuple[str, list[int]]:
    """N trials: 4 seeds × N/4 learning rates (log2 steps of 1/2 from 2^-6), or N lrs when N < 4."""
    seeds = 4 if n >= 4 else 1
    lrs = [2.0 ** (-6 + 0.5 * i) for i in range(n // seeds)]
    return "[" + ",".join(f"{x:.6g}" for x in lrs) + "]", list(range(seeds))


def measure(opt: str, width: int, n: int, steps: int, batch: int, root: str) -> dict:
    """In this (fresh) process: plan the sweep, load its data, time its launch; seconds and memory."""
    from omegaconf import OmegaConf

    from muso_cli import data
    from muso_cli.cli import main
    from muso_cli.launch import launch
    from muso_cli.study import Study

    lrs, seeds = lr_grid(n)
    damping = [f"study.damping=[{DAMPING[opt]}]"] if opt in DAMPING else []
    args = ["sweep", "data=fashion_mnist", f"optimizer={opt}", f"model.width={width}", f"model.base_width={width}",
            f"train.steps={steps}", "study.params=[sp]", f"study.lr={lrs}", f"study.seeds=[{','.join(map(str, seeds))}]",
            "logger.mode=disabled", "device=cpu", f"study.root={root}", "study.name=s", "--no-launch", *damping]
    assert main(args) == 0
    study = Study(Path(root) / "s")
    trials = study.trials()
    data.load(OmegaConf.create(trials[0].config["data"]))
    before = _rss_mb()
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current size
    start = time.perf_counter()
    counts = launch(study, trials, OmegaConf.create({"name": "local", "batch": batch}))
    seconds = time.perf_counter() - start
    assert counts["ok"] + counts["diverged"] == len(trials), counts
    return {"seconds": seconds, "trials": len(trials), "peak_mb": _peak_mb() - before, "counts": dict(counts)}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024


def child(opt: str, width: int, n: int, steps: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as root:
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps([opt, width, n, steps, batch, root])],
                             capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"})
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--optimizers", nargs="+", default=["sgd", "adam", "kfac", "shampoo"])
    ap.add_argument("--widths", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(*json.loads(args.child))))
        return
    print(f"load before: {uptime()}", flush=True)
    print(f"{'optimizer':>9} {'width':>5} {'N':>3} {'local trials/s':>14} {'batched trials/s':>16} {'ratio':>6} "
          f"{'peak MB (batch)':>15} {'peak MB (local)':>15}", flush=True)
    for opt in args.optimizers:
        for width in args.widths:
            local = child(opt, width, args.sizes[0], args.steps, 1)
            local_rate = local["trials"] / local["seconds"]
            for n in args.sizes:
                b = child(opt, width, n, args.steps, n)
                rate = b["trials"] / b["seconds"]
                print(f"{opt:>9} {width:>5} {n:>3} {local_rate:>14.3f} {rate:>16.3f} {rate / local_rate:>5.1f}× "
                      f"{b['peak_mb']:>15.0f} {local['peak_mb']:>15.0f}", flush=True)
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
