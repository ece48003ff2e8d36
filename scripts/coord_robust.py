#!/usr/bin/env python
"""Coordinate checks of K-FAC and Shampoo with the robustness features of issue 13 (docs/parameterization.md).

Cases (MLP 784 → M → M → 10 on Fashion-MNIST, one batch of 32, cross-entropy, 3 steps, curvature and inverses
every step, damping 0.1 as in ``make repro-coord``; the rest of each optimizer's defaults as configured):

- ``kfac-<param>``: K-FAC with its defaults, i.e. the trust region on (``kl_clip`` 0.1), lr 0.1;
- ``kfac-clip-tight-<param>``: ``kl_clip`` 1e-3, so that the trust region scales every step (ν ≪ 1);
- ``kfac-noclip-<param>``: the trust region off (the numbers of docs/results.md before issue 13);
- ``shampoo-<param>``: Shampoo without grafting at lr 0.1;
- ``shampoo-adam-<param>``: Adam grafting at lr 1e-3 (the plan's lr rule follows the grafting: Adam's µP under
  somup, parametrize.GRAFTED);
- ``shampoo-adam-ownrule-somup``: the same optimizer with Shampoo's own somup rule (GRAFTED emptied): the
  control, which the derivation says is wrong (hidden Δh ∝ m, input and Δf ∝ m^½).

Prints a markdown table of slopes (input / hidden / Δf per step, fitted from 4× the base width) and writes
slopes.csv and the trust region's ν per case into --out.

    .venv/bin/python scripts/coord_robust.py --widths 64 128 256 512 1024 2048 --seeds 2
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]

KFAC = ["optimizer=kfac", "optimizer.lr=0.1", "optimizer.damping=0.1", "optimizer.curvature_interval=1",
        "optimizer.inverse_interval=1"]
SHAMPOO = ["optimizer=shampoo", "optimizer.damping=0.1", "optimizer.statistics_interval=1",
           "optimizer.inverse_interval=1", "optimizer.start_preconditioning_step=0"]
CASES = {
    "kfac": KFAC,
    "kfac-clip-tight": [*KFAC, "optimizer.kl_clip=0.001"],
    "kfac-noclip": [*KFAC, "optimizer.kl_clip=null"],
    "shampoo": [*SHAMPOO, "optimizer.lr=0.1", "optimizer.grafting=none"],
    "shampoo-adam": [*SHAMPOO, "optimizer.lr=0.001", "optimizer.grafting=adam"],
}


NU: dict[int, list[float]] = {}  # the case being measured: width (the first layer's outputs) → ν of each step


def _watch_trust_region() -> None:
    """Record ν of every step into NU. Patched once, for good: torch wraps a subclass's ``step`` when its first
    instance is made, and that wrapper keeps calling whatever ``step`` it found then."""
    from muso_cli.optim.base import LayerwiseOptimizer

    step = LayerwiseOptimizer.step
    if getattr(step, "watched", False):
        return

    def watched(self, closure=None):
        out = step(self, closure)
        if self.clip_factor is not None:
            NU.setdefault(self.param_groups[0]["params"][0].shape[0], []).append(float(self.clip_factor))
        return out

    watched.watched = True
    LayerwiseOptimizer.step = watched


def measure(name: str, overrides: list[str], param: str, widths: list[int], seeds: int, own_rule: bool = False):
    from muso_cli import coord, parametrize
    from muso_cli.config import compose

    cfg = compose([*overrides, f"param={param}", f"coord.widths=[{','.join(map(str, widths))}]", "coord.steps=3",
                   f"coord.seeds={seeds}", "device=cpu"])
    _watch_trust_region()
    NU.clear()
    saved = dict(parametrize.GRAFTED)
    try:
        if own_rule:
            parametrize.GRAFTED.clear()
        df = coord.measure(cfg)
    finally:
        parametrize.GRAFTED.update(saved)
    nu = dict(NU)
    slopes = coord.slopes(df, coord.fit_from_width(cfg))
    return slopes[slopes.metric == "dh"].assign(case=name, param=param), nu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--cases", nargs="+", default=[*CASES, "shampoo-adam-ownrule"])
    p.add_argument("--params", nargs="+", default=["sp", "mup", "somup"])
    p.add_argument("--out", default="outputs/coord-robust")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, lines = [], []
    print("| case | param | step 1 (in / hid / Δf) | step 2 | step 3 | ν at step 1, per width |")
    print("|---|---|---|---|---|---|")
    for case in args.cases:
        own = case == "shampoo-adam-ownrule"
        params = ["somup"] if own else args.params
        for param in params:
            t0 = time.time()
            slopes, nu = measure(case, CASES["shampoo-adam" if own else case], param, args.widths, args.seeds, own)
            frames.append(slopes)
            s = slopes.groupby(["role", "step"]).slope.mean()
            cells = [" ".join(f"{s[role, step]:+.2f}" for role in ("input", "hidden", "output")) for step in (1, 2, 3)]
            # ν at step 1 (first seed) per width: flat in width when Σ lr²⟨D, G⟩ is Θ(1)
            nus = ", ".join(f"{w}: {v[0]:.3f}" for w, v in sorted(nu.items())) if nu else "—"
            line = f"| {case} | {param} | {' | '.join(cells)} | {nus} |"
            print(line, flush=True)
            lines.append(line)
            print(f"  ({time.time() - t0:.0f} s)", flush=True)
    pd.concat(frames).to_csv(out / "slopes.csv", index=False)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
