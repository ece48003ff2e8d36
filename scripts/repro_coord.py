"""`make repro-coord`: coordinate checks of SGD / Adam / K-FAC / Shampoo / Muon / SOAP × sp / mup / somup in one
figure.

MLP 784 → M → M → 10 on Fashion-MNIST, one batch of 32, cross-entropy, base width 64, widths 64 → 2048
(--widths to change; e.g. 64 → 8192 on a GPU), 3 steps, 2 seeds; or (--model cnn) the 3-layer CNN over channel
multipliers k (e.g. --widths [1,2,4,8] --fit-from 2). Writes into --out (default outputs/repro/coord):
coord_grid.png (rows: optimizers, columns: parameterizations; RMS Δh of each layer against width at the last
step; one y-span per row, so that a flat line looks flat next to a growing one), slopes.csv (every case, layer
and step; fitted from --fit-from, default 4× the base width) and summary.md (the verdict table).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from muso_cli import coord
from muso_cli.config import compose
from muso_cli.plots import pyplot, save

OPTIMIZERS = {
    "sgd": ["optimizer=sgd", "optimizer.lr=0.1"],
    "adam": ["optimizer=adam", "optimizer.lr=0.001"],
    # the paper's K-FAC: no trust region (the clip adds a width dependence of its own under mup; docs/results.md §8)
    "kfac": ["optimizer=kfac", "optimizer.lr=0.1", "optimizer.damping=0.1", "optimizer.curvature_interval=1",
             "optimizer.inverse_interval=1", "optimizer.kl_clip=null"],
    "shampoo": ["optimizer=shampoo", "optimizer.lr=0.1", "optimizer.damping=0.1", "optimizer.statistics_interval=1",
                "optimizer.inverse_interval=1"],
    "muon": ["optimizer=muon", "optimizer.lr=0.02"],  # AdamW (lr 1e-3) for the biases
    "soap": ["optimizer=soap", "optimizer.lr=0.003", "optimizer.statistics_interval=1",  # ε 1e-4 relative (auto)
             "optimizer.inverse_interval=1"],
}
PARAMS = ("sp", "mup", "somup")


def plot_grid(results: dict, optimizers: list[str], path: Path, step: int, fit_from: float, model: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(len(optimizers), len(PARAMS), figsize=(3.3 * len(PARAMS), 2.6 * len(optimizers)),
                             sharex=True, sharey="row", squeeze=False)  # one y-span per row: flat looks flat
    for i, opt in enumerate(optimizers):
        for j, param in enumerate(PARAMS):
            ax = axes[i][j]
            df, slopes = results[opt, param]
            dh = df[(df.metric == "dh") & (df.step == step)]
            for layer, g in dh.groupby("layer", sort=False):
                role = g.role.iloc[0]
                s = slopes[(slopes.layer == layer) & (slopes.metric == "dh") & (slopes.step == step)].slope.iloc[0]
                ax.plot(g.width, g.value, marker="o", ms=2.5, label=f"{role} ({s:+.2f})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.axvline(fit_from, color="grey", lw=0.7, ls=":")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=6, loc="best", title="layer (slope)", title_fontsize=6)
            if i == 0:
                ax.set_title(param)
            if j == 0:
                ax.set_ylabel(f"{opt}\nRMS Δh (readout: Δf)")
            if i == len(optimizers) - 1:
                ax.set_xlabel("width")
    fig.suptitle(f"Coordinate check, {model.upper()} on Fashion-MNIST, step {step}: flat lines = Θ(1) feature updates",
                 fontsize=10)
    save(fig, path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/repro/coord")
    ap.add_argument("--widths", default="[64,128,256,512,1024,2048]")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    ap.add_argument("--fit-from", type=float, default=None, help="smallest width in the slope fit (default 4× base)")
    ap.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results, rows = {}, []
    for opt in args.optimizers:
        for param in PARAMS:
            cfg = compose([*OPTIMIZERS[opt], f"param={param}", f"model={args.model}", f"coord.widths={args.widths}",
                           "coord.steps=3", f"coord.seeds={args.seeds}", f"coord.fit_from={args.fit_from or 'null'}",
                           f"device={args.device}"])
            df = coord.measure(cfg)
            slopes = coord.slopes(df, coord.fit_from_width(cfg))
            results[opt, param] = (df, slopes)
            rows.append(slopes.assign(optimizer=opt, param=param))
            print(f"{opt:>8} {param:>6}: " + "  ".join(
                f"{r.role} {r.slope:+.2f}" for r in slopes[(slopes.metric == "dh") & (slopes.step == 3)].itertuples()),
                flush=True)
    fit_from = coord.fit_from_width(cfg)
    all_slopes = pd.concat(rows)
    all_slopes.to_csv(out / "slopes.csv", index=False)
    plot_grid(results, args.optimizers, out / "coord_grid.png", step=3, fit_from=fit_from, model=args.model)
    last = all_slopes[(all_slopes.metric == "dh") & (all_slopes.step == 3)]
    table = last.pivot_table(index=["optimizer", "param"], columns="role", values="slope").reindex(
        columns=["input", "hidden", "output"])
    (out / "summary.md").write_text(
        f"# Coordinate check (step 3, slopes fitted from width {fit_from:g}, {args.seeds} seeds)\n\n"
        + table.reset_index().to_markdown(index=False, floatfmt="+.2f") + f"\n\nwall time {time.time() - started:.0f} s\n")
    print(table.to_string(float_format=lambda v: f"{v:+.2f}"))
    print(f"→ {out}/coord_grid.png, slopes.csv, summary.md ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
