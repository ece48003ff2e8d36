#!/usr/bin/env python
"""Step time and peak memory of SGD, K-FAC, Shampoo, Muon and SOAP on the MLP 784 → M → M → 10 (a benchmark, not a test).

One step = zero_grad + forward + cross-entropy + backward + optimizer step, statistics and inverse updates
included; the curvature/statistics interval and the inverse interval are both k. For every width M and k:

- time: one worker process builds every optimizer on its own copy of the model (same init, same batches),
  warms each up, then runs them in turns of k steps each (every turn holds exactly one inverse update) until
  each has at least ``max(cycles·k, min_steps)`` timed steps. Taking turns makes the ratios to SGD robust to a
  machine whose load changes during the run. Reported: median and mean step time, their ratios to SGD, and a
  load-robust mean: the mean over the k positions in a turn of each position's median over turns (it still
  counts the inverse-update step once per k, but drops a step that another process happened to slow down).
- memory: one fresh worker per optimizer: the peak growth from just before the model and the optimizer are
  built (the data already exists) over a few steps that include an inverse update: model, gradients,
  activations, optimizer state and transient workspace (CPU: peak RSS, ``ru_maxrss``, minus the RSS before;
  CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation before).

    .venv/bin/python scripts/bench_step.py                          # widths 256 1024 2048, k = 1 10 100
    .venv/bin/python scripts/bench_step.py --widths 1024 --intervals 10 100 --asdl-python /tmp/asdl-venv/bin/python

``--asdl-python`` adds ASDL's K-FAC and Shampoo (PyPI ``asdfghjkl``, installed in a separate environment with
the same torch, e.g. ``python -m venv /tmp/asdl-venv && /tmp/asdl-venv/bin/pip install torch==2.13.0
asdfghjkl``); the workers then run under that interpreter (muso's optimizers import from this checkout and
need torch only), so ASDL takes its turns in the same process as the others.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# kfac: the trust region on (kl_clip 0.1, as conf/optimizer/kfac.yaml), kfac-noclip without it; shampoo: float32
# roots (the default, float64 when float32 fails), shampoo-f64: float64 roots (the default before issue 13).
OURS = ("sgd", "kfac", "kfac-noclip", "shampoo", "shampoo-f64", "muon", "soap")
ASDL = ("asdl-kfac", "asdl-shampoo")
KFAC_DAMPING, KL_CLIP, WARM_START, SHAMPOO_EPS, LR = 0.3, 0.1, 20, 0.01, 0.01


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[256, 1024, 2048], help="hidden widths M")
    p.add_argument("--intervals", type=int, nargs="+", default=[1, 10, 100],
                   help="curvature/statistics and inverse update interval k")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--cycles", type=int, default=3, help="inverse updates in the timed steps (at least)")
    p.add_argument("--min-steps", type=int, default=20, help="timed steps per optimizer (at least)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer first")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--optimizers", nargs="+", default=list(OURS), choices=OURS, help="sgd is always included")
    p.add_argument("--asdl-python", default=None,
                   help="interpreter with asdfghjkl and the same torch: adds ASDL's K-FAC and Shampoo")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------
# Worker side: runs in a fresh process, prints one JSON line.

def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _trainer(name: str, width: int, k: int, n: int, device):
    """(model, step function) for optimizer ``name``; every model starts from the same init."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 10)).to(device)
    maker = None
    if name == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=LR)
    elif name.startswith("kfac"):
        from muso_cli.optim.kfac import KFAC
        opt = KFAC(model, lr=LR, damping=KFAC_DAMPING, curvature_interval=k, inverse_interval=k,
                   warmup_steps=WARM_START, kl_clip=None if name == "kfac-noclip" else KL_CLIP)
    elif name.startswith("shampoo"):
        from muso_cli.optim.shampoo import Shampoo
        opt = Shampoo(model, lr=LR, damping=SHAMPOO_EPS, statistics_interval=k, inverse_interval=k,
                      eigh_dtype="float64" if name == "shampoo-f64" else "float32")
    elif name == "muon":  # no statistics: it orthogonalises every step (Newton–Schulz in float32 on CPU)
        from muso_cli.optim.muon import Muon
        opt = Muon(model, lr=LR)
    elif name == "soap":  # eigenbases every k steps; ε relative to G's largest singular value
        from muso_cli.optim.soap import SOAP
        opt = SOAP(model, lr=LR, damping=1e-4, damping_rule="relative", statistics_interval=k, inverse_interval=k)
    else:
        if not torch.cuda.is_available():  # ASDL marks NVTX ranges unconditionally; a CPU build has no NVTX
            torch.cuda.nvtx.range_push = lambda *args, **kwargs: None
            torch.cuda.nvtx.range_pop = lambda *args, **kwargs: None
        from asdl import KfacGradientMaker, PreconditioningConfig, ShampooGradientMaker
        config = PreconditioningConfig(data_size=n, damping=KFAC_DAMPING if name == "asdl-kfac" else SHAMPOO_EPS,
                                       ema_decay=0.05, curvature_upd_interval=k, preconditioner_upd_interval=k)
        maker = (KfacGradientMaker(model, config, fisher_type="fisher_emp") if name == "asdl-kfac"
                 else ShampooGradientMaker(model, config))
        opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step(x, y) -> None:
        opt.zero_grad(set_to_none=True)
        if maker is None:
            F.cross_entropy(model(x), y).backward()
        else:
            out = maker.setup_model_call(model, x)
            maker.setup_loss_call(F.cross_entropy, out, y)
            maker.forward_and_backward()
        opt.step()

    return model, opt, step


def worker(case: dict) -> dict:
    import torch

    sys.path.insert(0, str(REPO))
    if case["threads"]:
        torch.set_num_threads(case["threads"])
    device = torch.device(case["device"])
    cuda = device.type == "cuda"
    width, k, n = case["width"], case["interval"], case["batch"]
    torch.manual_seed(1)
    data = [(torch.randn(n, 784, device=device), torch.randint(0, 10, (n,), device=device)) for _ in range(8)]

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if case["mode"] == "memory":
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if cuda else _rss_kib()
        model, _, step = _trainer(case["optimizers"][0], width, k, n, device)
        for i in range(case["warmup"] + 2):  # step 0 updates statistics and inverses
            step(*data[i % len(data)])
        sync()
        peak = (torch.cuda.max_memory_allocated() - before if cuda
                else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
        return {"peak_mib": peak / 2 ** 20}

    trainers = {name: _trainer(name, width, k, n, device) for name in case["optimizers"]}
    times: dict[str, list[list[float]]] = {name: [] for name in trainers}  # [turn][position in the turn]
    for name, (_, _, step) in trainers.items():
        # past K-FAC's warm start (every step for its first WARM_START steps): the timed turns see the steady state
        warm = max(case["warmup"], WARM_START) if name.startswith("kfac") else case["warmup"]
        for i in range(warm):
            step(*data[i % len(data)])
    turns = max(case["cycles"], -(-case["min_steps"] // k))
    for turn in range(turns):
        for name, (_, _, step) in trainers.items():
            times[name].append([])
            for i in range(k):  # any k consecutive steps hold exactly one statistics and one inverse update
                x, y = data[(turn * k + i) % len(data)]
                sync()
                t0 = time.perf_counter()
                step(x, y)
                sync()
                times[name][-1].append(time.perf_counter() - t0)
    out = {}
    for name, (model, opt, _) in trainers.items():
        flat = [t for turn in times[name] for t in turn]
        robust = statistics.fmean(statistics.median(turn[j] for turn in times[name]) for j in range(k))
        out[name] = {"steps": len(flat), "median_ms": 1e3 * statistics.median(flat),
                     "mean_ms": 1e3 * statistics.fmean(flat), "robust_ms": 1e3 * robust,
                     "finite": all(bool(torch.isfinite(p).all()) for p in model.parameters()),
                     "paths": sorted({layer.path for layer in getattr(opt, "layers", {}).values()})}
    return out


# ----------------------------------------------------------------------------------------------------------
# Driver.

def run_worker(python: str, case: dict) -> dict:
    out = subprocess.run([python, __file__, "--worker", json.dumps(case)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError((out.stderr.strip().splitlines() or ["worker failed"])[-1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    import torch

    python = args.asdl_python or sys.executable
    names = ["sgd"] + [o for o in args.optimizers if o != "sgd"] + (list(ASDL) if args.asdl_python else [])
    print(f"# torch {torch.__version__}, device {args.device}, threads {args.threads or torch.get_num_threads()}, "
          f"batch {args.batch}, MLP 784→M→M→10, cross-entropy, lr {LR}. K-FAC: damping {KFAC_DAMPING} constant, "
          f"empirical Fisher, Cholesky, warm start {WARM_START} steps (untimed), trust region κ {KL_CLIP} (kfac-noclip: "
          f"off). Shampoo: ε {SHAMPOO_EPS}·λ_max, exponent 1/4, EMA statistics, eigh in float32 (shampoo-f64: "
          f"float64). Muon: Newton–Schulz 5 steps (float32 on CPU). SOAP: ε 1e-4·√λ_max(L), "
          f"eigh. ASDL: same damping, empirical Fisher / its Shampoo. Both intervals = k.")
    header = (f"{'M':>5} {'k':>4} {'optimizer':<13} {'steps':>5} {'median ms':>10} {'mean ms':>9} {'robust ms':>9} "
              f"{'median/SGD':>10} {'mean/SGD':>9} {'robust/SGD':>10} {'peak MiB':>9}  path")
    print(header)
    print("-" * len(header), flush=True)
    for width in args.widths:
        for k in args.intervals:
            case = {"width": width, "interval": k, "batch": args.batch, "device": args.device,
                    "threads": args.threads, "cycles": args.cycles, "min_steps": args.min_steps,
                    "warmup": args.warmup, "optimizers": names, "mode": "time"}
            try:
                timed = run_worker(python, case)
            except RuntimeError as e:
                print(f"{width:>5} {k:>4} failed: {e}", flush=True)
                continue
            sgd = timed["sgd"]
            for name in names:
                r = timed[name]
                try:
                    peak = f"{run_worker(python, {**case, 'mode': 'memory', 'optimizers': [name]})['peak_mib']:>9.1f}"
                except RuntimeError:
                    peak = f"{'failed':>9}"
                note = ",".join(r["paths"]) + ("" if r["finite"] else " NON-FINITE")
                print(f"{width:>5} {k:>4} {name:<13} {r['steps']:>5} {r['median_ms']:>10.2f} {r['mean_ms']:>9.2f} "
                      f"{r['robust_ms']:>9.2f} {r['median_ms'] / sgd['median_ms']:>10.2f} "
                      f"{r['mean_ms'] / sgd['mean_ms']:>9.2f} {r['robust_ms'] / sgd['robust_ms']:>10.2f} {peak}  "
                      f"{note}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
