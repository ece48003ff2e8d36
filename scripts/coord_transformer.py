"""Coordinate checks of the GPT per layer type: SGD / Adam / K-FAC / Shampoo / Muon × sp / mup / somup.

The GPT of conf/model/gpt.yaml (2 pre-LayerNorm blocks, 4 heads: the head size grows with d_model, learned
positions, untied unembedding) on the byte-level text corpus (data=pystdlib, context 32), one batch of 8
sequences (256 tokens), cross-entropy averaged over the tokens, base width 16, d_model 16 → 256 (--widths; e.g.
up to 2048 on a GPU), 3 steps, 2 seeds, curvature and inverses every step. Slopes of log2 RMS Δh against log2
d_model are fitted from 4× the base width, per layer, and averaged over the two blocks per layer type: q, k, v,
the attention logits, the attention output, MLP in and out, the token and position embeddings, the unembedding
(its Δh is Δf). Writes into --out (default outputs/repro/coord-transformer): slopes.csv (every case, layer and
step), summary.md (the table per layer type at steps 1 and 3) and coord_transformer.png. With --readout
OPT:PARAM it measures instead where the output's change comes from (readout_terms).

K-FAC runs as in the paper, without its trust region (docs/results.md §8 has what the clip does under mup).
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import pandas as pd

from muso_cli import coord
from muso_cli.config import compose
from muso_cli.plots import pyplot, save

MODEL = ["model=gpt", "data=pystdlib", "data.context=32", "model.base_width=16", "coord.batch_size=8",
         "coord.steps=3"]
OPTIMIZERS = {
    "sgd": ["optimizer=sgd", "optimizer.lr=0.1"],
    "adam": ["optimizer=adam", "optimizer.lr=0.001"],
    "kfac": ["optimizer=kfac", "optimizer.lr=0.1", "optimizer.damping=0.1", "optimizer.curvature_interval=1",
             "optimizer.inverse_interval=1", "optimizer.kl_clip=null"],
    "shampoo": ["optimizer=shampoo", "optimizer.lr=0.1", "optimizer.damping=0.1", "optimizer.statistics_interval=1",
                "optimizer.inverse_interval=1", "optimizer.eigh_dtype=float32"],
    "muon": ["optimizer=muon", "optimizer.lr=0.02"],  # AdamW (its adamw_lr) for embeddings, gains and biases
}
PARAMS = ("sp", "mup", "somup")
LAYER_TYPES = ["tok_emb", "tied_scale", "pos_emb", "attn.q", "attn.k", "attn.v", "attn.logit_scale", "attn.out", "mlp.fc_in",
               "mlp.fc_out", "head"]
LABELS = {"attn.logit_scale": "logits", "tok_emb": "token emb", "tied_scale": "tied emb", "pos_emb": "pos emb", "head": "unembed (Δf)"}


def layer_type(layer: str) -> str:
    """blocks.1.attn.q → attn.q: the layer's place in a block (one type for every block)."""
    return re.sub(r"^blocks\.\d+\.", "", layer)


def by_type(slopes: pd.DataFrame) -> pd.DataFrame:
    """Mean Δh slope per (layer type, step) over the blocks."""
    dh = slopes[slopes.metric == "dh"].assign(type=lambda d: d.layer.map(layer_type))
    return dh.groupby(["type", "step"], as_index=False)["slope"].mean()


def readout_terms(opt: str, param: str, widths: list[int], seeds: int, device: str) -> pd.DataFrame:
    """Where the output's change after one step comes from, per width: Δf = ΔW·h₀ + W₀·Δh + ΔW·Δh, with h the
    unembedding's input (the final LayerNorm's output) and W its weight. RMS over the batch of each term, mean
    over seeds."""
    import torch

    from muso_cli import data as data_mod
    from muso_cli import optim
    from muso_cli.losses import LOSSES
    from muso_cli.setup import build_model_and_plan

    rms = lambda t: t.double().pow(2).mean().sqrt().item()  # noqa: E731
    cfg = compose([*MODEL, *OPTIMIZERS[opt], f"param={param}", f"device={device}"])
    data = data_mod.load(cfg.data, device)
    x, y = data.x_train[:cfg.coord.batch_size], data.y_train[:cfg.coord.batch_size]
    rows = []
    for width in widths:
        for seed in range(seeds):
            torch.manual_seed(seed)
            model, plan = build_model_and_plan(compose([*MODEL, *OPTIMIZERS[opt], f"param={param}", f"seed={seed}",
                                                        f"device={device}"]), data.input_shape, 256, width, device)
            seen = {}
            model.ln_f.register_forward_hook(lambda m, i, o: seen.__setitem__("h", o.detach()))
            f0, h0, w0 = model(x).detach(), seen["h"], model.head.weight.detach().clone()
            optimizer = optim.build(cfg.optimizer, model, plan, "xent")
            loss = LOSSES["xent"].value(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            f1, h1, dw = model(x).detach(), seen["h"], model.head.weight.detach() - w0
            rows.append({"width": width, "seed": seed, "df": rms(f1 - f0), "dW_h0": rms(h0 @ dw.T),
                         "W0_dh": rms((h1 - h0) @ w0.T), "dh": rms(h1 - h0), "f0": rms(f0)})
    return pd.DataFrame(rows).groupby("width", as_index=False).mean().drop(columns="seed")


def plot(results: dict, path: Path, step: int, fit_from: float) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(len(OPTIMIZERS), len(PARAMS), figsize=(3.6 * len(PARAMS), 2.7 * len(OPTIMIZERS)),
                             sharex=True, squeeze=False)
    for i, opt in enumerate(OPTIMIZERS):
        for j, param in enumerate(PARAMS):
            ax = axes[i][j]
            df, slopes = results[opt, param]
            dh = df[(df.metric == "dh") & (df.step == step) & df.layer.str.startswith(("blocks.0", "tok", "pos",
                                                                                       "head"))]
            s = by_type(slopes).set_index(["type", "step"]).slope
            for layer, g in dh.groupby("layer", sort=False):
                kind = layer_type(layer)
                ax.plot(g.width, g.value, marker="o", ms=2.5, label=f"{LABELS.get(kind, kind)} ({s[kind, step]:+.2f})")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.axvline(fit_from, color="grey", lw=0.7, ls=":")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=5, loc="best", ncol=2)
            if i == 0:
                ax.set_title(param)
            if j == 0:
                ax.set_ylabel(f"{opt}\nRMS Δh")
            if i == len(OPTIMIZERS) - 1:
                ax.set_xlabel("d_model")
    fig.suptitle(f"Coordinate check, GPT on Python-stdlib bytes, step {step} (block 0; slope = mean over blocks)",
                 fontsize=10)
    save(fig, path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="outputs/repro/coord-transformer")
    ap.add_argument("--widths", default="[16,32,64,128,256]")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="comma-separated subset of " + ",".join(OPTIMIZERS))
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every case, e.g. model.tie=true")
    ap.add_argument("--readout", metavar="OPT:PARAM", help="instead: the terms of Δf after one step per width "
                    "(readout.csv), e.g. --readout sgd:mup")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    if args.readout:
        opt, param = args.readout.split(":")
        terms = readout_terms(opt, param, [int(w) for w in args.widths.strip("[]").split(",")], args.seeds,
                              args.device)
        terms.to_csv(out / f"readout-{opt}-{param}.csv", index=False)
        print(terms.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        return
    results, rows = {}, []
    for opt in args.optimizers.split(","):
        for param in PARAMS:
            t0 = time.time()
            cfg = compose([*MODEL, *OPTIMIZERS[opt], f"param={param}", f"coord.widths={args.widths}",
                           f"coord.seeds={args.seeds}", f"device={args.device}", *args.extra])
            df = coord.measure(cfg)
            slopes = coord.slopes(df, coord.fit_from_width(cfg))
            results[opt, param] = (df, slopes)
            rows.append(slopes.assign(optimizer=opt, param=param))
            typed = by_type(slopes)
            print(f"{opt:>8} {param:>6} ({time.time() - t0:.0f} s): " + "  ".join(
                f"{LABELS.get(r.type, r.type)} {r.slope:+.2f}" for r in typed[typed.step == 3].itertuples()), flush=True)
    fit_from = coord.fit_from_width(cfg)
    all_slopes = pd.concat(rows)
    all_slopes.to_csv(out / "slopes.csv", index=False)
    plotted = set(OPTIMIZERS) <= {o for o, _ in results}  # the figure's grid needs every optimizer's row
    if plotted:
        plot(results, out / "coord_transformer.png", step=3, fit_from=fit_from)
    tables = []
    for step in (1, 3):
        typed = pd.concat(by_type(s).assign(optimizer=o, param=p) for (o, p), (_, s) in results.items())
        table = typed[typed.step == step].pivot_table(index=["optimizer", "param"], columns="type", values="slope")
        table = table.reindex(columns=[t for t in LAYER_TYPES if t in table.columns]).rename(columns=LABELS)
        tables.append(f"## step {step}\n\n" + table.reset_index().to_markdown(index=False, floatfmt="+.2f"))
        print(f"step {step}\n" + table.to_string(float_format=lambda v: f"{v:+.2f}"))
    (out / "summary.md").write_text(
        f"# Coordinate check of the GPT (slopes of log2 RMS Δh vs log2 d_model, fitted from {fit_from:g}, widths "
        f"{args.widths}, {args.seeds} seeds, mean over blocks)\n\n" + "\n\n".join(tables)
        + f"\n\nwall time {time.time() - started:.0f} s\n")
    print(f"→ {out}/{'coord_transformer.png, ' if plotted else ''}slopes.csv, summary.md "
          f"({time.time() - started:.0f} s)")


if __name__ == "__main__":
    main()
