"""Study reports: one table of trials, transfer metrics, and plots.

``collect`` reads every trial's files into one pandas table (one row per trial entry: grid values, status,
final/best metrics, the flattened config). Transfer metrics, per parameterization and width:

- lr* and damping*: the best grid point at that width (mean over seeds of the selection loss; diverged = +inf);
- drift: log2(lr*_width / lr*_base) in octaves, and the slope of log2 lr* against log2 width (the same for
  damping* where damping was swept);
- regret: loss at the transferred setting minus the best loss at that width (where a grid exists there);
- wider is better: whether the transferred setting's loss falls (or stays) as the width grows.

Files written: results.parquet, results.csv, report.md (every table), loss_vs_lr.png, loss_vs_damping.png and
heatmap_<param>.png (when damping was swept), curves.png. Unreadable or half-written trial folders are counted
and skipped, never fatal.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import claims, track
from .plots import pyplot, save
from .study import METRICS, Study, objective

LOWER_IS_BETTER_LABEL = {"train_loss": "final train loss", "test_loss": "final test loss",
                         "test_acc": "final test accuracy"}


def collect(study: Study, metric: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """(one row per trial entry, counts of skipped entries by reason: pending / running / unreadable)."""
    rows, skipped = [], {track.PENDING: 0, track.RUNNING: 0, "unreadable": 0}
    for t in study.trials():
        folder = study.trial_dir(t)
        result = track.read_json(folder / track.RESULT)
        if result is None:
            if (folder / track.RESULT).exists():
                skipped["unreadable"] += 1
            else:
                skipped[track.RUNNING if claims.is_running(folder) else track.PENDING] += 1
            continue
        final, best = result.get("final") or {}, result.get("best") or {}
        loss = objective(result, metric)
        row = {"index": t.index, "trial_id": t.id, "phase": t.phase, "param": t.param, "width": t.width,
               "lr": t.lr, "damping": t.damping, "seed": t.seed, "status": result.get("status"),
               "objective": math.nan if loss is None else loss,
               **{f"final_{k}": final.get(k) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
               **{f"best_{k}": best.get(k) for k in ("train_loss", "test_loss", "test_acc")},
               "steps": result.get("steps"), "wall_seconds": result.get("wall_seconds"), "device": result.get("device"),
               **{f"config.{k}": str(v) if isinstance(v, list) else v  # lists: one parquet type per column
                  for k, v in track.flatten(t.config, ".").items()}}
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df["damping"] = df["damping"].astype(float)
        df["log2_lr"] = np.log2(df["lr"])
    return df, skipped


def _setting_means(df: pd.DataFrame) -> pd.DataFrame:
    """Mean objective over seeds per (param, width, lr, damping); a setting with any diverged seed is +inf."""
    keys = ["param", "width", "lr", "damping"]
    usable = df[df.status.isin(track.FINAL_STATUSES)]
    g = usable.groupby(keys, dropna=False)
    return g.agg(objective=("objective", "mean"), seeds=("seed", "nunique"),
                 diverged=("status", lambda s: int((s == track.DIVERGED).sum()))).reset_index()


def optima(df: pd.DataFrame) -> pd.DataFrame:
    """Best grid point per (param, width) where a grid (at least two settings of lr and/or damping) was tried."""
    means = _setting_means(df[df.phase == "sweep"])
    rows = []
    for (param, width), g in means.groupby(["param", "width"]):
        if len(g) < 2:
            continue
        best = g.loc[g.objective.idxmin()]
        rows.append({"param": param, "width": width, "lr*": best.lr, "damping*": best.damping,
                     "loss*": best.objective, "grid": len(g)})
    return pd.DataFrame(rows, columns=["param", "width", "lr*", "damping*", "loss*", "grid"])


def _log2_slope(widths, values) -> float:
    """Slope of log2(values) against log2(widths), rounded (a flat optimum fits ~1e-17, which should read 0)."""
    if len(widths) < 2 or not np.all(np.asarray(values, float) > 0):
        return math.nan
    return round(float(np.polyfit(np.log2(widths), np.log2(np.asarray(values, float)), 1)[0]), 4) + 0.0


def drift(opt: pd.DataFrame, base_width: int) -> pd.DataFrame:
    """Drift of the optimum from the base width, per width: lr* in octaves (log2 lr*/lr*_base) and the slope of
    log2 lr* against log2 width; the same for damping* (NaN for first-order optimizers, which have none)."""
    rows = []
    for param, g in opt.groupby("param"):
        g = g.sort_values("width")
        base = g[g.width == base_width]
        if base.empty:
            continue
        lr0, d0 = float(base["lr*"].iloc[0]), base["damping*"].iloc[0]
        has_damping = pd.notna(d0) and g["damping*"].notna().all()
        lr_slope = _log2_slope(g.width, g["lr*"])
        damping_slope = _log2_slope(g.width, g["damping*"]) if has_damping else math.nan
        for _, r in g.iterrows():
            rows.append({"param": param, "width": r.width, "lr*": r["lr*"], "drift_octaves": math.log2(r["lr*"] / lr0),
                         "lr_slope": lr_slope, "damping*": r["damping*"],
                         "damping_drift_octaves": math.log2(r["damping*"] / d0) if has_damping else math.nan,
                         "damping_slope": damping_slope})
    return pd.DataFrame(rows, columns=["param", "width", "lr*", "drift_octaves", "lr_slope", "damping*",
                                       "damping_drift_octaves", "damping_slope"])


def regret(df: pd.DataFrame, transfers: dict, opt: pd.DataFrame, base_width: int) -> pd.DataFrame:
    """Loss at the transferred setting minus the best loss at that width, where a grid exists there (above the
    base width, where the transferred setting is the best by construction)."""
    means = _setting_means(df)
    rows = []
    for _, o in opt.iterrows():
        choice = transfers.get(o.param)
        if not choice or o.width == base_width:
            continue
        same = means[(means.param == o.param) & (means.width == o.width) & np.isclose(means.lr, choice["lr"])]
        if choice.get("damping") is not None:
            same = same[np.isclose(same.damping, choice["damping"])]
        if same.empty:
            continue
        loss = float(same.objective.iloc[0])
        rows.append({"param": o.param, "width": o.width, "transferred_loss": loss, "best_loss": o["loss*"],
                     "regret": loss - o["loss*"]})
    return pd.DataFrame(rows, columns=["param", "width", "transferred_loss", "best_loss", "regret"])


def transferred(df: pd.DataFrame, transfers: dict) -> pd.DataFrame:
    """The transferred setting's results per (param, width): mean loss and test accuracy over seeds."""
    rows = []
    for param, choice in transfers.items():
        ids = set(choice.get("transfer_trials", []))
        g = df[(df.param == param) & df.trial_id.isin(ids)]
        for width, w in g.groupby("width"):
            ok = w[w.status.isin(track.FINAL_STATUSES)]
            rows.append({"param": param, "width": width, "lr": choice["lr"], "damping": choice.get("damping"),
                         "loss": ok.objective.mean(), "test_acc": ok.final_test_acc.astype(float).mean(),
                         "seeds": len(ok), "diverged": int((ok.status == track.DIVERGED).sum())})
    return pd.DataFrame(rows, columns=["param", "width", "lr", "damping", "loss", "test_acc", "seeds", "diverged"])


def wider_is_better(tr: pd.DataFrame) -> pd.DataFrame:
    """Per param: does the transferred setting's loss fall (within 1%) each time the width grows?"""
    rows = []
    for param, g in tr.groupby("param"):
        g = g.sort_values("width")
        losses, widths = g.loss.to_numpy(float), g.width.to_numpy()
        worse = [f"{widths[i + 1]} vs {widths[i]}" for i in range(len(g) - 1)
                 if not losses[i + 1] <= losses[i] * 1.01]
        rows.append({"param": param, "widths": " → ".join(map(str, widths)),
                     "wider_is_better": "yes" if not worse else "no (" + "; ".join(worse) + ")"})
    return pd.DataFrame(rows, columns=["param", "widths", "wider_is_better"])


def headline(tr: pd.DataFrame, drift_df: pd.DataFrame, regret_df: pd.DataFrame, wider: pd.DataFrame,
             transfers: dict, metric_sign: float) -> pd.DataFrame:
    """One row per parameterization: the chosen setting, its loss per width, drift and regret at the widest
    width with a grid, and the wider-is-better verdict."""
    rows = []
    for param, choice in transfers.items():
        row = {"param": param, "lr": choice["lr"], "damping": choice.get("damping")}
        for _, r in tr[tr.param == param].sort_values("width").iterrows():
            row[f"w{r.width}"] = metric_sign * r.loss
        d = drift_df[drift_df.param == param]
        if len(d) > 1:
            last = d.sort_values("width").iloc[-1]
            row["drift_octaves"] = last.drift_octaves
            row["drift_at"] = int(last.width)
            row["lr_slope"] = last.lr_slope
            if pd.notna(last.damping_drift_octaves):
                row["damping_drift_octaves"] = last.damping_drift_octaves
        r = regret_df[regret_df.param == param]
        if len(r):
            last = r.sort_values("width").iloc[-1]
            row["regret"] = last.regret
            row["regret_at"] = int(last.width)
        w = wider[wider.param == param]
        row["wider_is_better"] = w.wider_is_better.iloc[0] if len(w) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------
# Plots

def plot_loss_vs_lr(df: pd.DataFrame, path: Path, metric: str, axis: str = "lr") -> None:
    """One panel per parameterization: loss against log2(lr) (best damping per lr), a curve per width,
    the optimum marked (★), diverged settings marked (×) at the top of the panel. ``axis="damping"``: the same
    against log10(damping), best lr per damping (the damping-transfer picture)."""
    plt = pyplot()
    means = _setting_means(df[df.phase == "sweep"])
    params = sorted(means.param.unique())
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.6), squeeze=False, sharey=True)
    sign = -1 if METRICS[metric] == "max" else 1
    finite = means.objective[np.isfinite(means.objective)]
    top = (sign * finite).max() if len(finite) else 1.0
    bottom = (sign * finite).min() if len(finite) else 0.0
    cap = top + 0.08 * (top - bottom + 1e-9)
    widths = sorted(means.width.unique())
    colors = {w: plt.cm.viridis(i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}
    for ax, param in zip(axes[0], params):
        for width, g in means[means.param == param].groupby("width"):
            per_x = g.loc[g.groupby(axis).objective.idxmin()].sort_values(axis)
            log = np.log2 if axis == "lr" else np.log10
            x, y = log(per_x[axis].to_numpy(float)), sign * per_x.objective.to_numpy()
            ok = np.isfinite(y)
            ax.plot(x[ok], y[ok], marker="o", ms=3, color=colors[width], label=f"width {width}")
            ax.scatter(x[~ok], np.full((~ok).sum(), cap), marker="x", color=colors[width])
            if ok.any():
                i = int(np.argmin(sign * y[ok])) if sign > 0 else int(np.argmax(y[ok]))
                ax.scatter(x[ok][i], y[ok][i], marker="*", s=140, color=colors[width], edgecolor="k", zorder=5)
        ax.set_title(param)
        ax.set_xlabel("log2 learning rate (base)" if axis == "lr" else "log10 damping (base)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(LOWER_IS_BETTER_LABEL[metric] + " (× = diverged)")
    axes[0][-1].legend(fontsize=7)
    save(fig, path)


def plot_heatmaps(df: pd.DataFrame, path_for, metric: str) -> list[Path]:
    """Per parameterization, lr × damping heatmaps of the loss, one panel per width (diverged: blank, ×)."""
    plt = pyplot()
    means = _setting_means(df[df.phase == "sweep"])
    if means.damping.nunique() < 2:
        return []
    sign = -1 if METRICS[metric] == "max" else 1
    paths = []
    for param, g in means.groupby("param"):
        widths = sorted(g.width.unique())
        fig, axes = plt.subplots(1, len(widths), figsize=(3.8 * len(widths), 3.4), squeeze=False)
        values = sign * g.objective[np.isfinite(g.objective)]
        vmin, vmax = (values.min(), values.max()) if len(values) else (0, 1)
        for ax, width in zip(axes[0], widths):
            table = g[g.width == width].pivot_table(index="damping", columns="lr", values="objective", aggfunc="mean")
            z = sign * table.to_numpy(float)
            im = ax.imshow(np.where(np.isfinite(z), z, np.nan), origin="lower", aspect="auto", cmap="viridis_r"
                           if sign > 0 else "viridis", vmin=vmin, vmax=vmax)
            for (i, j) in zip(*np.where(~np.isfinite(z))):
                ax.text(j, i, "×", ha="center", va="center", color="red")
            if np.isfinite(z).any():
                i, j = np.unravel_index(np.nanargmin(np.where(np.isfinite(z), sign * z, np.nan)), z.shape)
                ax.scatter(j, i, marker="*", s=120, color="white", edgecolor="k")
            ax.set_xticks(range(len(table.columns)), [f"{math.log2(v):g}" for v in table.columns], fontsize=7)
            ax.set_yticks(range(len(table.index)), [f"{v:.3g}" for v in table.index], fontsize=7)
            ax.set_xlabel("log2 lr")
            ax.set_ylabel("damping")
            ax.set_title(f"{param}, width {width}", fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=LOWER_IS_BETTER_LABEL[metric])
        path = path_for(param)
        save(fig, path, tight=False)
        paths.append(path)
    return paths


def plot_curves(study: Study, df: pd.DataFrame, transfers: dict, path: Path) -> bool:
    """Training curves (train loss vs step) per width at the transferred setting, one panel per param."""
    plt = pyplot()
    params = [p for p in transfers if not df[df.trial_id.isin(transfers[p].get("transfer_trials", []))].empty]
    if not params:
        return False
    fig, axes = plt.subplots(1, len(params), figsize=(4.2 * len(params), 3.4), squeeze=False, sharey=True)
    for ax, param in zip(axes[0], params):
        rows = df[df.trial_id.isin(transfers[param]["transfer_trials"]) & (df.param == param)]
        widths = sorted(rows.width.unique())
        for i, (width, g) in enumerate(rows.groupby("width")):
            color = plt.cm.viridis(i / max(1, len(widths) - 1))
            for k, trial_id in enumerate(g.trial_id):
                metrics = [m for m in track.read_json_lines(study.path / "trials" / trial_id / track.METRICS) or []
                           if m.get("train_loss") is not None]
                ax.plot([m["step"] for m in metrics], [m["train_loss"] for m in metrics], color=color, lw=1,
                        label=f"width {width}" if k == 0 else None)
        ax.set_yscale("log")
        ax.set_title(f"{param}: lr={transfers[param]['lr']:.3g}")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("train loss (eval subset)")
    axes[0][-1].legend(fontsize=7)
    save(fig, path)
    return True


# ------------------------------------------------------------------------------------------------------

def build(study: Study, out_dir: Path, metric: str, base_width: int) -> dict:
    """Write every file of the report into ``out_dir`` and return the tables."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df, skipped = collect(study, metric)
    transfers = study.transfers()
    tables: dict[str, pd.DataFrame] = {}
    if not df.empty:
        df.to_parquet(out_dir / "results.parquet", index=False)
        df.to_csv(out_dir / "results.csv", index=False)
        sign = -1.0 if METRICS[metric] == "max" else 1.0
        opt = optima(df)
        tables["optima"] = opt.assign(**{"loss*": sign * opt["loss*"]})
        tables["drift"] = drift(opt, base_width)
        reg = regret(df, transfers, opt, base_width)
        tables["regret"] = reg.assign(transferred_loss=sign * reg.transferred_loss, best_loss=sign * reg.best_loss)
        tr = transferred(df, transfers)
        tables["transferred"] = tr.assign(loss=sign * tr.loss)
        tables["wider"] = wider_is_better(tr)
        tables["headline"] = headline(tr, tables["drift"], reg, tables["wider"], transfers, sign)
        plot_loss_vs_lr(df, out_dir / "loss_vs_lr.png", metric)
        if df[df.phase == "sweep"].damping.nunique() >= 2:
            plot_loss_vs_lr(df, out_dir / "loss_vs_damping.png", metric, axis="damping")
        plot_heatmaps(df, lambda p: out_dir / f"heatmap_{p}.png", metric)
        plot_curves(study, df, transfers, out_dir / "curves.png")
    _write_markdown(out_dir / "report.md", study, tables, skipped, len(df), metric, out_dir)
    return {"results": df, "skipped": skipped, "tables": tables}


def _write_markdown(path: Path, study: Study, tables: dict, skipped: dict, n: int, metric: str, out_dir: Path) -> None:
    lines = [f"# Study {study.name}", "", f"{n} trial results read" + (
        "; skipped: " + ", ".join(f"{v} {k}" for k, v in skipped.items() if v) if any(skipped.values()) else "")
        + f". Selection metric: {LOWER_IS_BETTER_LABEL[metric]}.", ""]
    titles = {"headline": "Headline: transferred setting per parameterization",
              "optima": "Best (lr, damping) per width (grids only)",
              "drift": "Drift of the optimum (octaves from the base width; damping: log2 of its ratio too)",
              "regret": "Regret of the transferred setting", "transferred": "Transferred setting per width",
              "wider": "Wider is better?"}
    for key, title in titles.items():
        table = tables.get(key)
        if table is None or table.empty:
            continue
        lines += [f"## {title}", "", table.to_markdown(index=False, floatfmt=".4g"), ""]
    for png in sorted(out_dir.glob("*.png")):
        lines += [f"![{png.stem}]({png.name})", ""]
    track.write_atomic(path, "\n".join(lines))

