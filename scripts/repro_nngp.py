"""`make repro-nngp`: the NNGP bias of a zero-initialised readout under K-FAC (paper, Sec. 4.3).

With W_L = 0 the first K-FAC step solves kernel (NNGP) ridge regression on the batch and the hidden features stop
learning; the larger the batch, the more that first step decides. This runs one Hydra multirun (`muso run -m`):
K-FAC under second-order µP, MLP of width --width on Fashion-MNIST, batch sizes × {µP readout, zero readout} ×
seeds, and writes into --out: runs/ (one folder per run), nngp.csv (one row per run), summary.md (mean test
accuracy per batch size and readout) and nngp.png (test accuracy against batch size).
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import pandas as pd
import yaml

from muso_cli.cli import main as muso
from muso_cli.plots import pyplot, save
from muso_cli.track import read_json


def collect(runs: Path) -> pd.DataFrame:
    rows = []
    for result_path in sorted(runs.glob("*/result.json")):
        result = read_json(result_path)
        if result is None:
            continue
        config = yaml.safe_load((result_path.parent / "config.yaml").read_text())
        final = result.get("final") or {}
        rows.append({"batch_size": config["train"]["batch_size"], "seed": config["seed"],
                     "readout": "zero" if config["param"]["readout_zero_init"] else "µP",
                     "status": result["status"], "test_acc": final.get("test_acc"),
                     "train_loss": final.get("train_loss"), "seconds": result.get("wall_seconds")})
    return pd.DataFrame(rows)


def plot(summary: pd.DataFrame, path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for readout, g in summary.groupby("readout"):
        ax.errorbar(g.batch_size, g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=f"{readout} readout")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, path)


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/repro/nngp")
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch-sizes", default="32,128,512,2048")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--damping", type=float, default=1.0,
                    help="K-FAC ρ; 0.1 diverges at batch 32 and 128 (rank-32 factors from the first batch)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    out = Path(args.out)
    started = time.time()
    overrides = ["optimizer=kfac", "param=somup", f"model.width={args.width}", f"optimizer.lr={args.lr}",
                 f"optimizer.damping={args.damping}", f"train.steps={args.steps}", "train.eval_every=100",
                 "train.eval_train_samples=5000", "train.progress=false", f"device={args.device}",
                 f"train.batch_size={args.batch_sizes}", "param.readout_zero_init=false,true", f"seed={args.seeds}",
                 f"hydra.sweep.dir={out / 'runs'}"]
    shutil.rmtree(out / "runs", ignore_errors=True)  # a rerun must not read an earlier run's numbered folders
    code = muso(["run", "-m", *overrides])
    if code:
        raise SystemExit(code)
    df = collect(out / "runs")
    df.to_csv(out / "nngp.csv", index=False)
    summary = df.groupby(["readout", "batch_size"]).agg(
        mean=("test_acc", "mean"), std=("test_acc", "std"), ok=("status", lambda s: int((s == "ok").sum())),
        diverged=("status", lambda s: int((s == "diverged").sum()))).reset_index()
    title = (f"K-FAC (lr {args.lr:g}, ρ {args.damping:g}), somup, MLP width {args.width}, {args.steps} steps, "
             "Fashion-MNIST")
    plot(summary, out / "nngp.png", title)
    table = summary.pivot(index="batch_size", columns="readout", values="mean")
    table["zero − µP"] = table["zero"] - table["µP"]
    table["diverged (zero, µP)"] = [", ".join(str(int(summary[(summary.batch_size == b) & (summary.readout == r)]
                                                         .diverged.sum())) for r in ("zero", "µP")) for b in table.index]
    (out / "summary.md").write_text(f"# NNGP bias of a zero readout under K-FAC\n\n{title}; test accuracy, mean over "
                                    f"seeds {args.seeds}.\n\n{table.to_markdown(floatfmt='.4f')}\n\n"
                                    f"wall time {time.time() - started:.0f} s\n")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"→ {out}/nngp.png, nngp.csv, summary.md ({time.time() - started:.0f} s)")


if __name__ == "__main__":
    run()
