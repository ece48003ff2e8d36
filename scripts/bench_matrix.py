#!/usr/bin/env python
"""Step time of Muon and SOAP beside SGD, K-FAC and Shampoo on the MLP 784 → M → M → 10 (a benchmark, not a test).

One step = zero_grad + forward + cross-entropy + backward + optimizer step, statistics and inverse/eigenbasis
updates included (both every k steps; Muon has none: it orthogonalises every step). All optimizers live in one
process on copies of one model (same init, same batches) and take turns of k steps each until each has at least
``max(cycles·k, min_steps)`` timed steps, so that a machine whose load changes during the run slows them alike.
Reported per optimizer: the median step and the mean step (the mean counts the inverse updates once per k), and
their ratios to SGD. scripts/bench_step.py measures memory and more intervals for SGD / K-FAC / Shampoo.

    .venv/bin/python scripts/bench_matrix.py                      # width 1024, k = 10
    .venv/bin/python scripts/bench_matrix.py --widths 256 1024 --interval 1
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from muso_cli.optim import KFAC, SOAP, Muon, Shampoo  # noqa: E402

LR = 0.01


def make(name: str, model: nn.Module, k: int) -> torch.optim.Optimizer:
    """The optimizer ``name`` with the settings of conf/optimizer/<name>.yaml, both intervals k."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=LR)
    if name == "kfac":
        return KFAC(model, lr=LR, damping=0.3, curvature_interval=k, inverse_interval=k)
    if name == "shampoo":
        return Shampoo(model, lr=LR, damping=0.01, statistics_interval=k, inverse_interval=k)
    if name == "muon":
        return Muon(model, lr=LR)
    return SOAP(model, lr=LR, damping=1e-4, damping_rule="relative", statistics_interval=k, inverse_interval=k)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[1024])
    p.add_argument("--interval", type=int, default=10, help="statistics and inverse interval k")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--min-steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--optimizers", nargs="+", default=["sgd", "kfac", "shampoo", "muon", "soap"])
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    k = args.interval
    print(f"# torch {torch.__version__}, CPU threads {torch.get_num_threads()}, batch {args.batch}, k = {k}; "
          f"Muon: Newton–Schulz 5 steps in float32 (ns_dtype auto on CPU); SOAP: eigh every k steps")
    print(f"{'M':>5} {'optimizer':<9} {'steps':>5} {'median ms':>10} {'mean ms':>9} {'median/SGD':>10} {'mean/SGD':>9}")
    for width in args.widths:
        torch.manual_seed(1)
        data = [(torch.randn(args.batch, 784), torch.randint(0, 10, (args.batch,))) for _ in range(8)]
        torch.manual_seed(0)
        init = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
        runs = {}
        for name in dict.fromkeys(["sgd", *args.optimizers]):
            model = nn.Sequential(*(type(m)(m.in_features, m.out_features) if isinstance(m, nn.Linear) else m
                                    for m in init))
            model.load_state_dict(init.state_dict())
            runs[name] = (model, make(name, model, k), [])

        def step(model, opt, x, y) -> float:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            return time.perf_counter() - t0

        for model, opt, _ in runs.values():
            for i in range(args.warmup):
                step(model, opt, *data[i % len(data)])
        for turn in range(max(args.cycles, -(-args.min_steps // k))):
            for model, opt, times in runs.values():
                times += [step(model, opt, *data[(turn * k + i) % len(data)]) for i in range(k)]
        sgd = runs["sgd"][2]
        for name, (model, _, times) in runs.items():
            finite = all(bool(torch.isfinite(q).all()) for q in model.parameters())
            print(f"{width:>5} {name:<9} {len(times):>5} {1e3 * statistics.median(times):>10.2f} "
                  f"{1e3 * statistics.fmean(times):>9.2f} {statistics.median(times) / statistics.median(sgd):>10.2f} "
                  f"{statistics.fmean(times) / statistics.fmean(sgd):>9.2f}{'' if finite else '  NON-FINITE'}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
