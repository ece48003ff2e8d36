"""The coordinate check over depth (docs/parameterization.md "Depth", docs/results.md "Depth"): SGD / Adam / K-FAC /
Shampoo / Muon / SOAP on the residual MLP, each under the derived depth rules (α = 1 and α = ½) and under the two
controls: α = 0 (no branch multiplier, no depth rule: param=sp) and the width-only table (α = 1, the depth rules of
parametrize.DEPTH_LR / DEPTH_DAMPING set to 0 here, in this process only).

model=resmlp at width 128 (its base width: only depth varies), base depth 2, depths 2 → 32 (--depths), Fashion-MNIST,
one batch of 32, cross-entropy, 3 steps, 2 seeds, the blocks trained alone (coord.blocks_only: the embedding and the
readout, whose depth-free updates would otherwise dominate the stream and Δf, at lr 0; --no-blocks-only trains
everything), slopes of log2 RMS Δh against log2 depth fitted from 4× the base depth. Learning rates are small enough
that 3 steps stay in the regime the one-step argument covers (the final LayerNorm bounds the stream's change
otherwise). Writes into --out (default outputs/repro/coord-depth): slopes.csv
(every case, layer and step), summary.md (branch / block-internal / stream / Δf per case and step) and
coord_depth.png (the last step's RMS Δh against depth per optimizer and case).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from muso_cli import coord, parametrize
from muso_cli.config import compose
from muso_cli.plots import pyplot, save

OPTIMIZERS = {
    "sgd": ["optimizer=sgd", "optimizer.lr=0.05"],
    "adam": ["optimizer=adam", "optimizer.lr=0.0001"],
    # the paper's K-FAC: no trust region (a clip over every layer adds a depth dependence of its own)
    "kfac": ["optimizer=kfac", "optimizer.lr=0.05", "optimizer.damping=0.1", "optimizer.curvature_interval=1",
             "optimizer.inverse_interval=1", "optimizer.kl_clip=null"],
    "shampoo": ["optimizer=shampoo", "optimizer.lr=0.01", "optimizer.damping=0.1", "optimizer.statistics_interval=1",
                "optimizer.inverse_interval=1"],
    "muon": ["optimizer=muon", "optimizer.lr=0.002", "optimizer.adamw_lr=0.0001"],
    "soap": ["optimizer=soap", "optimizer.lr=0.0003", "optimizer.statistics_interval=1", "optimizer.inverse_interval=1"],
}
CASES = {  # name: (overrides, width-only table)
    "α=1 rules": (["param=somup", "param.depth_alpha=1"], False),
    "α=½ rules": (["param=somup", "param.depth_alpha=0.5"], False),
    "α=0": (["param=sp"], False),
    "α=1 width-only": (["param=somup", "param.depth_alpha=1"], True),
}
SHOWN = {"branch": "branch", "hidden": "blocks.*", "stream": "stream", "output": "Δf"}


def measure(overrides: list[str], width_only: bool) -> pd.DataFrame:
    saved = {k: dict(v) if isinstance(v, dict) else v for k, v in parametrize.DEPTH_LR.items()}
    saved_damping = {o: {f: dict(e) for f, e in d.items()} for o, d in parametrize.DEPTH_DAMPING.items()}
    if width_only:  # the table before depth: every depth exponent 0, the branch multiplier kept
        for row in parametrize.DEPTH_LR.values():
            if isinstance(row, dict):
                row.update({a: 0.0 for a in row})
        for factors in parametrize.DEPTH_DAMPING.values():
            for row in factors.values():
                row.update({a: 0.0 for a in row})
    try:
        return coord.measure(compose(overrides))
    finally:
        parametrize.DEPTH_LR.update(saved)
        parametrize.DEPTH_DAMPING.update(saved_damping)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/repro/coord-depth")
    ap.add_argument("--depths", default="[2,4,8,16,32]")
    ap.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS))
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--blocks-only", action=argparse.BooleanOptionalAction, default=True,
                    help="train the blocks alone (coord.blocks_only; default), or everything (--no-blocks-only)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["model=resmlp", "model.width=128", "model.base_width=128", "model.base_depth=2",
              f"coord.blocks_only={str(args.blocks_only).lower()}",
              f"coord.depths={args.depths}", f"coord.steps={args.steps}", f"coord.seeds={args.seeds}",
              f"device={args.device}", "train.threads=1"]
    frames, slopes, started = {}, [], time.time()
    for opt in args.optimizers:
        for case in args.cases:
            overrides, width_only = CASES[case]
            t0 = time.time()
            cfg = compose([*common, *OPTIMIZERS[opt], *overrides])
            df = measure([*common, *OPTIMIZERS[opt], *overrides], width_only)
            s = coord.slopes(df, coord.fit_from_width(cfg)).assign(optimizer=opt, case=case)
            frames[opt, case] = df
            slopes.append(s)
            dh = s[(s.metric == "dh") & (s.step == args.steps)]
            print(f"{opt:8s} {case:15s} " + "  ".join(f"{r.layer} {r.slope:+.2f}" for r in dh.itertuples())
                  + f"  ({time.time() - t0:.0f} s)", flush=True)
    table = pd.concat(slopes, ignore_index=True)
    table.to_csv(out / "slopes.csv", index=False)
    dh = table[table.metric == "dh"]
    rows = []
    for (opt, case, step), g in dh.groupby(["optimizer", "case", "step"], sort=False):
        by_role = {}
        for r in g.itertuples():
            key = "hidden" if r.role == "hidden" else r.role
            by_role.setdefault(key, []).append(r.slope)
        rows.append({"optimizer": opt, "case": case, "step": step,
                     **{label: "/".join(f"{v:+.2f}" for v in by_role.get(role, [])) for role, label in SHOWN.items()}})
    summary = pd.DataFrame(rows)
    (out / "summary.md").write_text(
        f"Slopes of log2 RMS Δh against log2 depth (depths {args.depths}, fitted from 4× the base depth; branch: a "
        f"block's contribution to the stream, expected −α; blocks.*: fc1/fc2 inside the blocks; stream: embedding + Σ "
        f"branches; Δf: the output), {args.steps} steps, {args.seeds} seeds, {time.time() - started:.0f} s.\n\n"
        + summary.to_markdown(index=False) + "\n")
    plot(frames, args.optimizers, args.cases, args.steps, out / "coord_depth.png")
    print(summary[summary.step == args.steps].to_string(index=False))
    print(f"→ {out}/summary.md, slopes.csv, coord_depth.png ({time.time() - started:.0f} s)")


def plot(frames: dict, optimizers: list[str], cases: list[str], step: int, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(len(optimizers), len(cases), figsize=(3.2 * len(cases), 2.5 * len(optimizers)),
                             sharex=True, sharey="row", squeeze=False)
    for i, opt in enumerate(optimizers):
        for j, case in enumerate(cases):
            ax, df = axes[i][j], frames[opt, case]
            dh = df[(df.metric == "dh") & (df.step == step)]
            for layer, g in dh.groupby("layer", sort=False):
                ax.plot(g.depth, g.value, marker="o", ms=2.5, label=layer)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.grid(alpha=0.3, which="both")
            if i == 0:
                ax.set_title(case, fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{opt}\nRMS Δh")
            if i == len(optimizers) - 1:
                ax.set_xlabel("depth (blocks)")
    axes[0][-1].legend(fontsize=6)
    save(fig, path)


if __name__ == "__main__":
    main()
