"""Coordinate checks of the convolutional models over channel multipliers (issue: conv models; part of repro-coord).

Cases (all on Fashion-MNIST, one batch of 32, cross-entropy, base multiplier k = 1, 3 steps, lr 0.1, damping 0.1,
curvature and inverse updated every step):
  - the 3-layer CNN and Myrtle-5 with K-FAC and Shampoo under somup, k = 1 → 8 (--widths);
  - the batch-norm question: VGG-19 with batch norm and without (He init, param.sigma=1.414) and ResNet-18
    (batch norm) with K-FAC under somup, k = 1 → 4 (--bn-widths; their widest layers have 8·16·k channels,
    whose 3×3 patches make K-FAC factors of 1152·k rows, slow on a CPU beyond k = 4).
Slopes of log2 RMS Δh against log2 k are fitted from --fit-from (default 2: k = 1 is the base, where the
finite-size terms are largest). Writes into --out: slopes.csv (every case, layer, metric, step), summary.md
(per case the min / median / max slope of the hidden Δh and the output Δf at each step) and coord_conv.png
(RMS Δh of every layer against k at the last step, one panel per case).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from muso_cli import coord
from muso_cli.config import compose
from muso_cli.plots import pyplot, save

KFAC = ["optimizer=kfac", "optimizer.curvature_interval=1", "optimizer.inverse_interval=1"]
SHAMPOO = ["optimizer=shampoo", "optimizer.statistics_interval=1", "optimizer.inverse_interval=1"]


def cases(widths: str, bn_widths: str) -> dict[str, list[str]]:
    """Case label → overrides."""
    out = {}
    for model in ("cnn", "myrtle"):
        for opt, ov in (("kfac", KFAC), ("shampoo", SHAMPOO)):
            out[f"{model} {opt} somup"] = [f"model={model}", *ov, "param=somup", f"coord.widths={widths}"]
        out[f"{model} kfac sp"] = [f"model={model}", *KFAC, "param=sp", f"coord.widths={widths}"]
    out["vgg19 (no BN) kfac somup"] = ["model=vgg19", "model.batch_norm=false", "param.sigma=1.414", *KFAC,
                                       "param=somup", f"coord.widths={bn_widths}"]
    out["vgg19 (BN) kfac somup"] = ["model=vgg19", "model.batch_norm=true", *KFAC, "param=somup",
                                    f"coord.widths={bn_widths}"]
    out["resnet18 (BN) kfac somup"] = ["model=resnet18", *KFAC, "param=somup", f"coord.widths={bn_widths}"]
    return out


BN_MODELS = ("vgg19", "resnet18")


def summarize(slopes: pd.DataFrame) -> pd.DataFrame:
    """Per case and step: min / median / max slope of the hidden layers' Δh, and the output's Δf."""
    rows = []
    for (case, step), g in slopes[slopes.metric == "dh"].groupby(["case", "step"], sort=False):
        hidden = g[g.role == "hidden"].slope
        out = g[g.role == "output"].slope  # the readout's Δh is Δf
        rows.append({"case": case, "step": step, "hidden Δh min": hidden.min(), "hidden Δh median": hidden.median(),
                     "hidden Δh max": hidden.max(), "output Δf": out.iloc[0] if len(out) else float("nan")})
    return pd.DataFrame(rows)


def plot(results: dict, path: Path, step: int, fit_from: float) -> None:
    plt = pyplot()
    n = len(results)
    cols = 4
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (case, df) in zip(axes.flat, results.items()):
        dh = df[(df.metric == "dh") & (df.step == step)]
        for layer, g in dh.groupby("layer", sort=False):
            color = {"input": "C0", "hidden": "C1", "output": "C2"}.get(g.role.iloc[0], "C7")
            ax.plot(g.width, g.value, color=color, marker="o", ms=2, lw=0.9, alpha=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.axvline(fit_from, color="grey", lw=0.7, ls=":")
        ax.set_title(case, fontsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("channel multiplier k", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, marker="o", ms=2, label=r) for r, c in
               (("input", "C0"), ("hidden", "C1"), ("output (Δf)", "C2"))]
    fig.legend(handles=handles, loc="lower right", fontsize=8)
    fig.suptitle(f"Coordinate check of the conv models, RMS Δh per layer at step {step}", fontsize=10)
    save(fig, path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/repro/coord_conv")
    ap.add_argument("--widths", default="[1,2,4,8,16]")
    ap.add_argument("--bn-widths", default="[1,2,4]")
    ap.add_argument("--fit-from", type=float, default=2)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--bn-seeds", type=int, default=2, help="seeds of the VGG/ResNet cases")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only the matching cases")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    results, all_slopes = {}, []
    for case, overrides in cases(args.widths, args.bn_widths).items():
        if args.only and not any(s in case for s in args.only.split(",")):
            continue
        t = time.time()
        seeds = args.bn_seeds if case.startswith(BN_MODELS) else args.seeds
        cfg = compose([*overrides, "model.base_width=1", "coord.steps=3", f"coord.seeds={seeds}",
                       "optimizer.lr=0.1", "optimizer.damping=0.1", f"device={args.device}"])
        df = coord.measure(cfg)
        slopes = coord.slopes(df, args.fit_from).assign(case=case)
        results[case] = df
        all_slopes.append(slopes)
        row = summarize(slopes)
        print(f"{case:<26}", "  ".join(
            f"step {r['step']}: hidden {r['hidden Δh median']:+.2f} [{r['hidden Δh min']:+.2f}, "
            f"{r['hidden Δh max']:+.2f}] Δf {r['output Δf']:+.2f}" for r in row.to_dict("records")),
            f"({time.time() - t:.0f} s)", flush=True)
    slopes = pd.concat(all_slopes)
    slopes.to_csv(out / "slopes.csv", index=False)
    table = summarize(slopes)
    (out / "summary.md").write_text(
        f"# Coordinate check of the conv models (slopes of log2 RMS against log2 k, fitted from k = "
        f"{args.fit_from:g}; {args.seeds} seeds, {args.bn_seeds} for VGG/ResNet)\n\n{table.to_markdown(index=False, floatfmt='+.2f')}\n\n"
        f"wall time {time.time() - started:.0f} s\n")
    plot(results, out / "coord_conv.png", step=3, fit_from=args.fit_from)
    print(f"→ {out}/coord_conv.png, slopes.csv, summary.md ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
