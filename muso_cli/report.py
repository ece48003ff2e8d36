"""Study reports: the verdict first, then the tables and plots behind it.

``collect`` reads every trial's files into one pandas table (one row per trial entry with a result: grid values,
status, final/best metrics, the flattened config). The verdict (:func:`muso_cli.verdict.judge`: optima, grid
edges, stability cliffs, intervals over seeds, transfers / drifts / undecided per parameterization) is written
as report.json and printed first in report.md; the tables here are views of it:

- optima: per (param, width) the best setting, its interval, the sub-grid estimate and its flags, or why there
  is none;
- drift: per parameterization, axis and width, the optimum's drift from the base width in octaves with its
  interval and the width's verdict;
- regret: the transferred setting's score minus the best at each width with a grid, with its interval;
- transferred / wider is better / headline: the transferred setting's loss and test accuracy per width.

Files written: report.json, report.md, results.parquet, results.csv, loss_vs_lr.png, drift.png, and where
damping was swept loss_vs_damping.png and heatmap_<param>.png; curves.png after a transfer. Unreadable or
half-written trial folders are counted and skipped, never fatal.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import track, verdict
from .parametrize import PARAMS
from .plots import pyplot, save
from .study.results import UNREADABLE, points
from .study.spec import METRICS
from .study.store import Study

METRIC_LABEL = {"train_loss": "final train loss", "test_loss": "final test loss", "test_acc": "final test accuracy"}
AXIS_LABEL = {"lr": "log2 base learning rate (octaves)", "damping": "log2 base damping (octaves)"}
TITLES = {"optima": "Best setting per width", "drift": "Drift of the optimum (octaves from the base width)",
          "regret": "Regret of the transferred setting", "headline": "Transferred setting per parameterization",
          "transferred": "Transferred setting per width", "wider": "Wider is better?"}


def collect(entries: list[dict]) -> tuple[pd.DataFrame, dict[str, int]]:
    """(one row per trial entry with a result, counts of skipped entries: pending / running / unreadable).

    ``entries``: :func:`muso_cli.study.points`."""
    rows, skipped = [], {track.PENDING: 0, track.RUNNING: 0, UNREADABLE: 0}
    for e in entries:
        result = e["result"]
        if result is None:
            skipped[e["status"]] += 1
            continue
        final, best = result.get("final") or {}, result.get("best") or {}
        rows.append({"index": e["index"], "trial_id": e["trial_id"], "phase": e["phase"], "param": e["param"],
                     "width": e["width"], "lr": e["lr"], "damping": e["damping"], "seed": e["seed"],
                     "status": e["status"], "objective": e["objective"],
                     **{f"final_{k}": final.get(k) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
                     **{f"best_{k}": best.get(k) for k in ("train_loss", "test_loss", "test_acc")},
                     "steps": result.get("steps"), "wall_seconds": result.get("wall_seconds"),
                     "device": result.get("device"),
                     **{f"config.{k}": str(v) if isinstance(v, list) else v  # lists: one parquet type per column
                        for k, v in track.flatten(e["config"], ".").items()}})
    df = pd.DataFrame(rows)
    if not df.empty:
        df["damping"] = df["damping"].astype(float)
        df["log2_lr"] = np.log2(df["lr"])
    return df, skipped


# ------------------------------------------------------------------------------------------------------
# Tables: views of the verdict

def _log2(x: float | None) -> str:
    return "" if x is None else f"{x:+.2f}"


def _notes(axes: dict) -> str:
    """The flags of an optimum, in words."""
    notes = []
    for a, info in axes.items():
        if info["edge"]:
            notes.append(f"{a} at the grid edge ({'lowest' if info['edge'] == 'low' else 'highest'} {a}): "
                         "the optimum may lie beyond")
        if info["stability_bound"]:
            notes.append(f"stability-bound: the next {'larger' if a == 'lr' else 'smaller'} {a} diverged")
    return "; ".join(notes)


def optima_table(v: dict, sign: float) -> pd.DataFrame:
    """One row per (param, width) with a grid (or no optimum): the best setting, its interval (log2), the sub-grid
    estimate (log2), the score in the metric's units, seeds at the optimum, settings tried, flags."""
    rows = []
    for c in v["cells"]:
        opt = c["optimum"]
        row = {"param": c["param"], "width": c["width"], "settings": c["counts"]["settings"]}
        if opt is None:
            rows.append({**row, "notes": f"no optimum: {c['problem']}: {c['fix']}"})
            continue
        if not opt["axes"] and c["width"] != v["base_width"]:
            continue  # one setting, not a grid (a transfer width)
        row.update({"lr*": opt["lr"], "damping*": opt["damping"], "loss*": sign * opt["objective"],
                    "seeds": opt["seeds"], "notes": _notes(opt["axes"])})
        for a, info in opt["axes"].items():
            row[f"log2 {a}*"] = info["log2"]
            row[f"{a}* interval"] = (verdict.fmt_interval(*info["interval_log2"]) if "interval_log2" in info
                                     else "1 seed: no interval")
            row[f"{a}* sub-grid"] = _log2(info["subgrid_log2"])
        rows.append(row)
    order = ["param", "width", "lr*", "log2 lr*", "lr* interval", "lr* sub-grid", "damping*", "log2 damping*",
             "damping* interval", "damping* sub-grid", "loss*", "seeds", "settings", "notes"]
    df = pd.DataFrame(rows)
    return df[[c for c in order if c in df.columns]] if len(df) else pd.DataFrame(columns=order)


def drift_table(v: dict) -> pd.DataFrame:
    """Per param, swept axis and width: the optimum, its drift from the base width (octaves), the drift's
    interval, the width's verdict and what would decide an undecided one."""
    rows = []
    for p in ordered(v["params"]):
        for a, ax in v["params"][p]["axes"].items():
            rows.append({"param": p, "axis": a, "width": v["base_width"], "optimum": ax["base"]["value"],
                         "drift_octaves": 0.0, "interval": "", "verdict": "base", "note": _notes({a: ax["base"]})})
            for r in ax["widths"]:
                interval = ("1 seed: no interval" if r.get("interval") is None and "drift" in r
                            else verdict.fmt_interval(*r["interval"]) if r.get("interval") else "")
                note = "; ".join(x for x in (r.get("why"), ", ".join(r.get("decide", [])) and
                                             "decide: " + ", ".join(r.get("decide", []))) if x)
                rows.append({"param": p, "axis": a, "width": r["width"], "optimum": r.get("value"),
                             "drift_octaves": r.get("drift"), "interval": interval, "verdict": r["verdict"],
                             "note": note})
    return pd.DataFrame(rows, columns=["param", "axis", "width", "optimum", "drift_octaves", "interval", "verdict",
                                       "note"])


def regret_table(v: dict) -> pd.DataFrame:
    """Per param and width with a grid: the transferred setting's regret (metric units, ≥ 0) and its interval."""
    rows = []
    for p, pv in v["params"].items():
        for r in pv["regret"]:
            rows.append({"param": p, "width": r["width"], "lr": pv["transferred"]["lr"],
                         "damping": pv["transferred"]["damping"],
                         "regret": math.inf if r["diverged"] else r["regret"],
                         "interval": "diverged" if r["diverged"] else "1 seed: no interval" if r["interval"] is None
                         else verdict.fmt_interval(*r["interval"], octaves=False)})
    return pd.DataFrame(rows, columns=["param", "width", "lr", "damping", "regret", "interval"])


def transferred(df: pd.DataFrame, transfers: dict) -> pd.DataFrame:
    """The transferred setting's results per (param, width), the sweep's widths included (the same lr and damping
    there): mean loss and test accuracy over seeds."""
    rows = []
    for param, choice in transfers.items():
        for width, w in _setting_rows(df, param, choice).groupby("width"):
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


def headline(tr: pd.DataFrame, wider: pd.DataFrame, transfers: dict, sign: float) -> pd.DataFrame:
    """One row per transferred parameterization: the setting, its score per width (w<width> columns, metric
    units), and whether wider was better."""
    rows = []
    for param in ordered(transfers):
        choice = transfers[param]
        row = {"param": param, "lr": choice["lr"], "damping": choice.get("damping")}
        for _, r in tr[tr.param == param].sort_values("width").iterrows():
            row[f"w{r.width}"] = sign * r.loss
        w = wider[wider.param == param]
        row["wider_is_better"] = w.wider_is_better.iloc[0] if len(w) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------
# Plots

def ordered(params) -> list[str]:
    """Parameterizations in the table's order (sp first), unknown names after."""
    return sorted(params, key=lambda p: (PARAMS.index(p) if p in PARAMS else len(PARAMS), p))


def _other_axis_note(grid: dict, axis: str) -> str:
    """What the curves hold fixed or pick on the axis not plotted: a single damping value is named, a swept one
    is picked per point."""
    other = "damping" if axis == "lr" else "lr"
    values = np.unique(np.concatenate([c.values(other) for c in grid.values()] + [np.zeros(0)]))
    values = values[np.isfinite(values)]
    if other == "damping" and not len(values):
        return ""
    if len(values) == 1:
        return f"{other} {values[0]:.3g}"
    return f"best {other} per point"


def _colors(plt, widths) -> dict:
    widths = sorted(widths)
    return {w: plt.cm.viridis(0.9 * i / max(1, len(widths) - 1)) for i, w in enumerate(widths)}


def _curve(cell: verdict.Cell, axis: str) -> pd.DataFrame:
    """Per value of ``axis`` in a cell, its best setting over the other axis: x (log2), mean, per-seed min and
    max (finite seeds), and whether the value is the cell's optimum."""
    rows = []
    values = cell.values(axis)
    for value in np.unique(values):
        at = np.flatnonzero(np.isclose(values, value, rtol=1e-9))
        g = at[np.argmin(np.where(np.isfinite(cell.mean[at]), cell.mean[at], np.inf))]
        seeds = cell.scores[g][np.isfinite(cell.scores[g])]
        rows.append({"x": math.log2(value), "mean": cell.mean[g], "lo": seeds.min() if len(seeds) else np.nan,
                     "hi": seeds.max() if len(seeds) else np.nan, "best": g == cell.best})
    return pd.DataFrame(rows)


def _transferred_points(ax, cells: list, axis: str, sign: float, colors: dict) -> tuple[list[float], list[str]]:
    """A transfer width's one setting as ◆ at its value of ``axis``; returns the x drawn and notes for diverged
    ones."""
    xs, notes = [], []
    for c in cells:
        if not len(c.mean) or not np.isfinite(c.values(axis)[0]):
            continue  # not finished yet, or the axis has no value (an undamped optimizer)
        x, y = math.log2(float(c.values(axis)[0])), sign * c.mean[0]
        xs.append(x)
        if np.isfinite(y):
            ax.scatter(x, y, marker="D", s=30, color=colors[c.width], edgecolor="k", zorder=6,
                       label=f"{c.param}, width {c.width} (transferred)")
        else:
            notes.append(f"width {c.width}: the transferred setting diverged")
    return xs, notes


def _grid_curve(ax, c: verdict.Cell, k: int, axis: str, sign: float, color, band: float, notes: list) -> list[float]:
    """One swept width's curve: mean and seed band, diverged × in the k-th row of the top ``band``, the optimum ★
    with its flags; a cell with no optimum adds a note. Returns the x drawn."""
    label = f"{c.param}, width {c.width}"
    if c.best is None:
        notes.append(f"width {c.width}: no optimum ({c.problem().problem.split(' at width')[0]})")
    if axis not in c.swept:
        return []
    curve = _curve(c, axis)
    ok = np.isfinite(curve["mean"].to_numpy())
    if ok.any():
        ax.plot(curve.x[ok], sign * curve["mean"][ok], marker="o", ms=3, color=color, label=label)
    if (curve.hi > curve.lo).any():
        ax.fill_between(curve.x[ok], sign * curve.lo[ok], sign * curve.hi[ok], color=color, alpha=0.15, lw=0)
    # diverged: x in data, y in axes fraction, one row per width, so that widths stay apart
    ax.scatter(curve.x[~ok], np.full((~ok).sum(), 0.98 - band + 0.045 * (k + 0.5)), marker="x", s=24,
               color=color, transform=ax.get_xaxis_transform(), label=None if ok.any() else label)
    if c.best is not None:
        best = curve[curve.best].iloc[0]
        ax.scatter(best.x, sign * best["mean"], marker="*", s=160, color=color, edgecolor="k", zorder=5)
        info = c.axis(axis)
        flag = ", ".join(f for f, on in (("edge", info["edge"]), ("cliff", info["stability_bound"])) if on)
        if flag:
            ax.annotate(flag, (best.x, sign * best["mean"]), textcoords="offset points", xytext=(6, -10),
                        fontsize=7, color=color)
    return list(curve.x)


def plot_loss_vs(grid: dict, path: Path, metric: str, axis: str = "lr", title: str = "") -> None:
    """One panel per parameterization (sp first): the score against log2 ``axis`` (best over the other axis), one
    curve per swept width with a band over seeds (min–max), the optimum ★ (flagged "edge" at the grid edge,
    "cliff" when stability-bound), a transfer width's single setting ◆ at its value, diverged settings × in one
    row per width above the curves, and a cell with no optimum named in the panel. ``title``: the study and its
    optimizer, completed with what the other axis holds."""
    plt = pyplot()
    sign = -1 if METRICS[metric] == "max" else 1
    params = ordered({p for p, _ in grid})
    colors = _colors(plt, {w for _, w in grid})
    rows = max(len([c for (p, _), c in grid.items() if p == param]) for param in params)
    band = 0.04 + 0.045 * rows  # the top band of each panel (axes fraction) holds the rows of × markers
    finite = np.concatenate([sign * c.scores[np.isfinite(c.scores)] for c in grid.values()] + [np.zeros(0)])
    low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    pad = 0.05 * (high - low) if high > low else 0.5
    fig, axes = plt.subplots(1, len(params), figsize=(4.6 * len(params), 4.0), squeeze=False, sharey=True)
    for ax, param in zip(axes[0], params):
        mine = sorted((c for (p, _), c in grid.items() if p == param), key=lambda c: c.width)
        xs, notes = _transferred_points(ax, [c for c in mine if c.n_settings == 1], axis, sign, colors)
        for k, c in enumerate(c for c in mine if c.n_settings >= 2):
            xs += _grid_curve(ax, c, k, axis, sign, colors[c.width], band, notes)
        for i, note in enumerate(notes):
            ax.text(0.02, 0.03 + 0.055 * i, note, transform=ax.transAxes, fontsize=7, color="crimson")
        if xs:  # autoscaling ignores the × rows (drawn in axes fraction): set the x range from every point
            margin = 0.05 * (max(xs) - min(xs)) or 0.5
            ax.set_xlim(min(xs) - margin, max(xs) + margin)
        ax.set_title(param)
        ax.set_xlabel(AXIS_LABEL[axis])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="center right")
    # data below the top band: bottom - pad … high + pad fills (1 - band) of the panel
    axes[0][0].set_ylim(low - pad, low - pad + (high - low + 2 * pad) / (1 - band))
    if not len(finite):  # nothing finished finite: the score axis has nothing to show
        axes[0][0].set_yticks([])
    axes[0][0].set_ylabel(f"{METRIC_LABEL[metric]} (mean over seeds)")
    fig.suptitle(" · ".join(t for t in (title, _other_axis_note(grid, axis)) if t), fontsize=10)
    fig.text(0.5, 0.005, "★ optimum (edge: at the grid edge, the optimum may lie beyond; cliff: stability-bound)\n"
             "◆ transferred setting at a wider width · × diverged, one row per width · band: min–max over seeds",
             ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save(fig, path, tight=False)


def plot_drift(v: dict, path: Path) -> bool:
    """The picture of the paper: per swept axis, the optimum (log2) against log2 width per parameterization, with
    its interval, the base ± tolerance band shaded; open markers at a grid edge, a cross where a width has no
    optimum. False (nothing drawn) when no parameterization has an axis to show."""
    axes_used = [a for a in verdict.AXES if any(a in pv["axes"] for pv in v["params"].values())]
    if not axes_used:
        return False
    plt = pyplot()
    params = ordered(v["params"])
    cells = {(c["param"], c["width"]): c for c in v["cells"]}
    widths = sorted({w for _, w in cells})
    fig, axes = plt.subplots(1, len(axes_used), figsize=(5.6 * len(axes_used), 4.2), squeeze=False)
    tol = v["settings"]["tolerance_octaves"]
    for ax, axis in zip(axes[0], axes_used):
        for i, param in enumerate(params):
            pv, color = v["params"][param], plt.cm.tab10(i)
            if axis not in pv["axes"]:
                continue
            base = pv["axes"][axis]["base"]["log2"]
            ax.axhspan(base - tol, base + tol, color=color, alpha=0.12, lw=0,
                       label=f"{param}: base ±{tol:g} octave")
            offset = 0.06 * (i - (len(params) - 1) / 2)
            for w in [v["base_width"]] + [r["width"] for r in pv["axes"][axis]["widths"]]:
                c = cells[param, w]
                x = math.log2(w) + offset
                if c["optimum"] is None:
                    ax.scatter(x, base, marker="X", s=60, color="crimson", zorder=5)
                    ax.annotate("no optimum", (x, base), textcoords="offset points", xytext=(4, 6), fontsize=7,
                                color="crimson")
                    continue
                info = c["optimum"]["axes"][axis]
                lo, hi = info.get("interval_log2", (info["log2"], info["log2"]))
                y = info["log2"]
                shown = [max(lo, y - 3), min(hi, y + 3)]  # unbounded ends drawn as 3 octaves with an arrow
                ax.errorbar(x, y, yerr=[[y - shown[0]], [shown[1] - y]], color=color, capsize=3, lw=1)
                for end, inf, mark in ((shown[0], lo == -math.inf, "v"), (shown[1], hi == math.inf, "^")):
                    if inf:
                        ax.scatter(x, end, marker=mark, s=25, color=color)
                ax.scatter(x, y, marker="o", s=36, zorder=5, color="white" if info["edge"] else color,
                           edgecolor=color)
                if info["subgrid_log2"] is not None:
                    ax.scatter(x, info["subgrid_log2"], marker="+", s=40, color=color, zorder=6)
            ax.plot([], [], marker="o", color=color, ls="", label=f"{param}: {axis}* (verdict: {pv['verdict']})")
        ax.set_xticks([math.log2(w) for w in widths], [str(w) for w in widths])
        ax.set_xlabel("width (log2 scale)")
        ax.set_ylabel(f"{axis}*: {AXIS_LABEL[axis]}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.set_title(f"{axis}* against width" + ("" if v["seeds"] >= 2 else " (1 seed: no interval)"), fontsize=9)
    fig.text(0.5, 0.005, f"bars: {v['settings']['level']:.0%} interval over seeds, each optimum within half a grid "
             "step\nopen marker: at the grid edge · ▲▼: unbounded · +: sub-grid (parabola) estimate", ha="center",
             fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save(fig, path, tight=False)
    return True


def plot_heatmaps(grid: dict, path_for, metric: str) -> list[Path]:
    """Per parameterization with an lr × damping grid: heatmaps of the score, one panel per width (× diverged,
    blank: not tried, ★ optimum)."""
    plt = pyplot()
    sign = -1 if METRICS[metric] == "max" else 1
    paths = []
    for param in sorted({p for p, _ in grid}):
        cells = sorted((c for (p, _), c in grid.items() if p == param and {"lr", "damping"} <= set(c.swept)),
                       key=lambda c: c.width)
        if not cells:
            continue
        fig, axes = plt.subplots(1, len(cells), figsize=(3.9 * len(cells), 3.5), squeeze=False)
        values = np.concatenate([sign * c.mean[np.isfinite(c.mean)] for c in cells])
        vmin, vmax = (values.min(), values.max()) if len(values) else (0, 1)
        for ax, c in zip(axes[0], cells):
            lrs, dampings = np.unique(c.lr), np.unique(c.damping)
            z = np.full((len(dampings), len(lrs)), np.nan)
            for lr, d, m in zip(c.lr, c.damping, c.mean):
                z[np.searchsorted(dampings, d), np.searchsorted(lrs, lr)] = m
            im = ax.imshow(np.where(np.isfinite(z), sign * z, np.nan), origin="lower", aspect="auto",
                           cmap="viridis_r" if sign > 0 else "viridis", vmin=vmin, vmax=vmax)
            for i, j in zip(*np.where(np.isinf(z))):
                ax.text(j, i, "×", ha="center", va="center", color="red")
            if c.best is not None:
                ax.scatter(np.searchsorted(lrs, c.lr[c.best]), np.searchsorted(dampings, c.damping[c.best]),
                           marker="*", s=120, color="white", edgecolor="k")
            ax.set_xticks(range(len(lrs)), [f"{math.log2(v):g}" for v in lrs], fontsize=7)
            ax.set_yticks(range(len(dampings)), [f"{v:.3g}" for v in dampings], fontsize=7)
            ax.set_xlabel("log2 base learning rate (octaves)")
            ax.set_ylabel("base damping")
            ax.set_title(f"{param}, width {c.width}", fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=f"{METRIC_LABEL[metric]} (mean over seeds)")
        fig.text(0.01, 0.01, "× diverged · blank: not tried · ★ optimum", fontsize=7)
        path = path_for(param)
        save(fig, path, tight=False)
        paths.append(path)
    return paths


def _setting_rows(df: pd.DataFrame, param: str, choice: dict) -> pd.DataFrame:
    """The trials of the transferred setting of ``param`` at every width: its transfer trials and the sweep's
    trials (every seed) at the same lr and damping."""
    same_damping = (df.damping.isna() if choice.get("damping") is None
                    else np.isclose(df.damping.astype(float), float(choice["damping"]), rtol=1e-9))
    same = np.isclose(df.lr.astype(float), float(choice["lr"]), rtol=1e-9) & same_damping
    rows = df[(df.param == param) & (df.trial_id.isin(choice.get("transfer_trials", [])) | same)]
    return rows.drop_duplicates("trial_id")


def plot_curves(study: Study, df: pd.DataFrame, transfers: dict, path: Path, base_width: int, title: str = "") -> bool:
    """Training curves (train loss on the eval subset vs step) at the transferred setting, one panel per param
    (sp first), one colour per width from the base width up; the points are the evaluations (train.eval_every)."""
    plt = pyplot()
    params = ordered(p for p in transfers if not df[df.trial_id.isin(transfers[p].get("transfer_trials", []))].empty)
    if not params:
        return False
    fig, axes = plt.subplots(1, len(params), figsize=(4.4 * len(params), 3.8), squeeze=False, sharey=True)
    for ax, param in zip(axes[0], params):
        rows = _setting_rows(df, param, transfers[param])
        colors = _colors(plt, rows.width.unique())
        for width, g in rows.groupby("width"):
            for k, trial_id in enumerate(g.trial_id):
                metrics = [m for m in track.read_json_lines(study.path / "trials" / trial_id / track.METRICS) or []
                           if m.get("train_loss") is not None]
                ax.plot([m["step"] for m in metrics], [m["train_loss"] for m in metrics], color=colors[width], lw=1,
                        marker="o", ms=2, label=f"{param}, width {width}" + (" (base)" if width == base_width else "")
                        if k == 0 else None)
        ax.set_yscale("log")
        damping = transfers[param].get("damping")
        ax.set_title(f"{param}: lr={transfers[param]['lr']:.3g}"
                     + ("" if damping is None else f", damping={damping:.3g}"), fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("train loss on the eval subset (log scale)")
    if title:
        fig.suptitle(title, fontsize=10)
    save(fig, path)
    return True


# ------------------------------------------------------------------------------------------------------

def build(study: Study, out_dir: Path, metric: str, base_width: int,
          settings: verdict.Settings = verdict.Settings(), title: str = "") -> dict:
    """Write every file of the report into ``out_dir``; return {results, skipped, tables, verdict, unreadable (the
    trial folders whose result or metrics cannot be trusted)}. ``title``: what the plots are of (study, optimizer,
    model, data), shown above them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = points(study, metric)
    df, skipped = collect(entries)
    transfers = study.transfers()
    v = verdict.judge(entries, base_width, settings, transfers)
    # strict JSON for machines: an unbounded interval end (±inf) and NaN are written as null
    track.write_json(out_dir / "report.json", json.loads(json.dumps({"study": study.name, "metric": metric, **v}),
                                                         parse_constant=lambda _: None))
    sign = -1.0 if METRICS[metric] == "max" else 1.0
    tables = {"optima": optima_table(v, sign), "drift": drift_table(v), "regret": regret_table(v)}
    if not df.empty:
        df.to_parquet(out_dir / "results.parquet", index=False)
        df.to_csv(out_dir / "results.csv", index=False)
        tr = transferred(df, transfers)
        tables["transferred"] = tr.assign(loss=sign * tr.loss)
        tables["wider"] = wider_is_better(tr)
        tables["headline"] = headline(tr, tables["wider"], transfers, sign)
        grid = verdict.cells(entries)
        for axis in verdict.AXES:
            if any(axis in c.swept for c in grid.values()):
                plot_loss_vs(grid, out_dir / f"loss_vs_{axis}.png", metric, axis, title)
        plot_heatmaps(grid, lambda p: out_dir / f"heatmap_{p}.png", metric)
        plot_drift(v, out_dir / "drift.png")
        plot_curves(study, df, transfers, out_dir / "curves.png", base_width, title)
    _write_markdown(out_dir / "report.md", study, v, tables, skipped, len(df), metric, out_dir)
    unreadable = sorted({str(study.path / "trials" / e["trial_id"]) for e in entries if e["status"] == UNREADABLE})
    return {"results": df, "skipped": skipped, "tables": tables, "verdict": v, "unreadable": unreadable}


def verdict_lines(v: dict) -> list[str]:
    """The verdict sentences, one per parameterization, and how the intervals were made."""
    return [pv["sentence"] for pv in v["params"].values()] + [v["interval"]]


def _write_markdown(path: Path, study: Study, v: dict, tables: dict, skipped: dict, n: int, metric: str,
                    out_dir: Path) -> None:
    lines = [f"# Study {study.name}", "", "## Verdict", ""]
    lines += [f"- {line}" for line in verdict_lines(v)[:-1]] + ["", verdict_lines(v)[-1], ""]
    lines += [f"{n} trial results read" + (
        "; skipped: " + ", ".join(f"{k} {key}" for key, k in skipped.items() if k) if any(skipped.values()) else "")
        + f". Selection metric: {METRIC_LABEL[metric]}. Machine-readable verdict: report.json.", ""]
    for key, title in TITLES.items():
        table = tables.get(key)
        if table is None or table.empty:
            continue
        lines += [f"## {title}", "", table.to_markdown(index=False, floatfmt=".4g"), ""]
    for png in sorted(out_dir.glob("*.png")):
        lines += [f"![{png.stem}]({png.name})", ""]
    track.write_atomic(path, "\n".join(lines))
