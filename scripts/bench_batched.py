"""Throughput of batched trials (launcher.batch=N) against the local launcher, on the base-width sweep.

    nice -n 10 .venv/bin/python scripts/bench_batched.py                     # the full run (below)
    nice -n 10 .venv/bin/python scripts/bench_batched.py --widths 64 --sizes 8 --steps 100   # a reduced one

The sweep: an MLP on Fashion-MNIST, ``--steps`` steps (300), at each width of ``--widths`` (64 256), two
learning rates × N/2 seeds for each N of ``--sizes`` (8 16 32), for each optimizer of ``--optimizers`` (sgd adam kfac
shampoo; K-FAC and Shampoo at a fixed damping, their conf/optimizer defaults otherwise). Each measurement runs
in a fresh process: a study is planned (``muso sweep --no-launch``), the data loaded, then only the launch is
timed (``muso_cli.launch.launch``, claims and result files included). The local launcher's trials per second
does not depend on N (one trial after another), so it is measured once per optimizer and width on the first
N's trials; the batched launcher once per N. Peak memory: the child process's peak resident set size during
the launch (VmHWM, reset before it) minus its size before it (data loaded, torch imported). Ratios are of trials per second, measured in this one
run; the load (uptime) is printed before and after: the machine is shared.

The ceiling: a batch does every member's FLOPs (it removes per-step overhead, not arithmetic), so its speed-up
cannot exceed (seconds per local trial) / (one trial's FLOPs at the machine's matrix-product rate). Both are
measured here: the rate from 1024² float32 products, a trial's FLOPs by FlopCounterMode over one untimed local
trial (matrix products only: for K-FAC and Shampoo, whose Cholesky / eigh it does not count, the ceiling is an
upper bound that may be far above what is reachable).
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
    """N trials: the learning rates 2^-6 and 2^-5.5 × N/2 seeds (1 lr when N = 1). Every N runs the same two
    (stable) learning rates, so that the local launcher's rate, measured on the first N's trials, is the rate of
    the trials of every N: a larger grid of lrs would add trials that diverge early and cost less."""
    lrs = [2.0 ** -6, 2.0 ** -5.5][:max(1, min(n, 2))]
    return "[" + ",".join(f"{x:.6g}" for x in lrs) + "]", list(range(max(1, n // len(lrs))))


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
    out = {"seconds": seconds, "trials": len(trials), "peak_mb": _peak_mb() - before, "counts": dict(counts)}
    if batch == 1:  # the local launcher's run: also count the FLOPs of one trial (untimed)
        out["gflop"] = trial_gflop(trials[0].config, Path(root) / "flops")
    return out


def trial_gflop(config: dict, out_dir: Path) -> float:
    """GFLOP of one whole trial (training and evaluations), as torch's FlopCounterMode counts them: the matrix
    products (forward, backward, K-FAC's factors and preconditioning, Shampoo's statistics and roots' products);
    not Cholesky or eigh, so for K-FAC and Shampoo it is a lower bound."""
    from omegaconf import OmegaConf
    from torch.utils.flop_counter import FlopCounterMode

    from muso_cli import train

    with FlopCounterMode(display=False) as counter:
        result = train.run(OmegaConf.create(config), out_dir, quiet=True)
    assert result["status"] in ("ok", "diverged"), result
    return counter.get_total_flops() / 1e9


def peak_gflops() -> float:
    """This machine's float32 matrix-product rate (GFLOP/s): the best of a few 1024² products, torch's threads."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024 ** 3 / best / 1e9


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
    peak = peak_gflops()
    print(f"matrix products: {peak:.1f} GFLOP/s (1024², float32). ceiling: the ratio a batch would reach if it ran "
          f"its FLOPs at that rate (a trial's GFLOP / that rate against the local launcher's seconds per trial)",
          flush=True)
    print(f"{'optimizer':>9} {'width':>5} {'N':>3} {'local trials/s':>14} {'batched trials/s':>16} {'ratio':>6} "
          f"{'ceiling':>7} {'GFLOP/trial':>11} {'peak MB (batch)':>15} {'peak MB (local)':>15}", flush=True)
    for opt in args.optimizers:
        for width in args.widths:
            local = child(opt, width, args.sizes[0], args.steps, 1)
            local_rate = local["trials"] / local["seconds"]
            ceiling = peak / local["gflop"] / local_rate
            for n in args.sizes:
                b = child(opt, width, n, args.steps, n)
                rate = b["trials"] / b["seconds"]
                print(f"{opt:>9} {width:>5} {n:>3} {local_rate:>14.3f} {rate:>16.3f} {rate / local_rate:>5.1f}× "
                      f"{ceiling:>6.1f}× {local['gflop']:>11.1f} {b['peak_mb']:>15.0f} {local['peak_mb']:>15.0f}"
                      f"  {b['counts']}", flush=True)
    print(f"load after: {uptime()}")


if __name__ == "__main__":
    main()
