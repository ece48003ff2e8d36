"""The report's figures, drawn from the verdict object and the cells (muso_cli.verdict, muso_cli.cells):
loss against log2 lr (and damping) per parameterization with the fitted valleys, the optimum against width,
heatmaps of lr × damping, and training curves of the transferred setting.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .cells import AXES, Cell
from .parametrize import PARAMS
from .plots import pyplot, save
from .study.spec import METRICS

METRIC_LABEL = {"train_loss": "final train loss", "test_loss": "final test loss", "test_acc": "final test accuracy"}
AXIS_LABEL = {"lr": "log2 base learning rate (octaves)", "damping": "log2 base damping (octaves)"}


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


def _curve(cell: Cell, axis: str) -> pd.DataFrame:
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


def _transferred_points(ax, cells: list, axis: str, sign: float, colors: dict,
                        scale: str = "width") -> tuple[list[float], list[str]]:
    """A transfer width's one setting as ◆ at its value of ``axis``; returns the x drawn and notes for diverged
    ones."""
    xs, notes = [], []
    for c in cells:
        if not len(c.mean) or not np.isfinite(c.values(axis)[0]):
            continue  # not finished yet, or the axis has no value (an undamped optimizer)
        x, y = math.log2(float(c.values(axis)[0])), sign * c.mean[0]
        xs.append(x)
        if np.isfinite(y):
            ax.scatter(x, y, marker="D", s=30, color=colors[c.scale], edgecolor="k", zorder=6,
                       label=f"{c.param}, {scale} {c.scale} (transferred)")
        else:
            notes.append(f"{scale} {c.scale}: the transferred setting diverged")
    return xs, notes


def _grid_curve(ax, c: Cell, k: int, axis: str, sign: float, color, band: float, notes: list,
                scale: str = "width") -> list[float]:
    """One swept width's curve: mean and seed band, diverged × in the k-th row of the top ``band``, the optimum ★
    with its flags (labels stacked by k, so that widths do not overprint), the fitted valley dashed over its
    window; a cell with no optimum adds a note. Returns the x drawn."""
    label = f"{c.param}, {scale} {c.scale}"
    if c.best is None:
        notes.append(f"{scale} {c.scale}: no optimum ({c.problem().problem.split(' at width')[0]})")
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
            ax.annotate(flag, (best.x, sign * best["mean"]), textcoords="offset points", xytext=(6, -10 - 9 * k),
                        fontsize=7, color=color)
        fit = c.fits.get(axis)
        if fit is not None:
            xs = np.linspace(fit.window[0], fit.window[1], 60)
            ax.plot(xs, sign * (fit.level + fit.shape(xs)), ls="--", lw=1, color=color)
            ax.axvline(fit.x_hat, ymax=0.04, color=color, lw=2)
    return list(curve.x)


def plot_loss_vs(grid: dict, path: Path, metric: str, axis: str = "lr", title: str = "", scale: str = "width") -> None:
    """One panel per parameterization (sp first): the score against log2 ``axis`` (best over the other axis), one
    curve per swept width with a band over seeds (min–max), the optimum ★ (flagged "edge" at the grid edge,
    "cliff" when stability-bound), a transfer width's single setting ◆ at its value, diverged settings × in one
    row per width above the curves, and a cell with no optimum named in the panel. ``title``: the study and its
    optimizer, completed with what the other axis holds. ``scale``: the study's axis (width or depth), in the labels."""
    plt = pyplot()
    sign = -1 if METRICS[metric] == "max" else 1
    params = ordered({p for p, _ in grid})
    colors = _colors(plt, {w for _, w in grid})
    log = sign > 0  # losses: a log axis keeps the basin readable beside blow-ups (metric > 0 checked below)
    rows = max(len([c for (p, _), c in grid.items() if p == param]) for param in params)
    band = 0.04 + 0.045 * rows  # the top band of each panel (axes fraction) holds the rows of × markers
    finite = np.concatenate([sign * c.scores[np.isfinite(c.scores)] for c in grid.values()] + [np.zeros(0)])
    low, high = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    log = log and low > 0
    if log:
        low, high = math.log(low), math.log(high)
    pad = 0.05 * (high - low) if high > low else 0.5
    fig, axes = plt.subplots(1, len(params), figsize=(4.6 * len(params), 4.0), squeeze=False, sharey=True)
    for ax, param in zip(axes[0], params):
        mine = sorted((c for (p, _), c in grid.items() if p == param), key=lambda c: c.scale)
        xs, notes = _transferred_points(ax, [c for c in mine if c.n_settings == 1], axis, sign, colors, scale)
        for k, c in enumerate(c for c in mine if c.n_settings >= 2):
            xs += _grid_curve(ax, c, k, axis, sign, colors[c.scale], band, notes, scale)
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
    bottom, top = low - pad, low - pad + (high - low + 2 * pad) / (1 - band)
    if log:
        axes[0][0].set_yscale("log")
        bottom, top = math.exp(bottom), math.exp(top)
    axes[0][0].set_ylim(bottom, top)
    if not len(finite):  # nothing finished finite: the score axis has nothing to show
        axes[0][0].set_yticks([])
    axes[0][0].set_ylabel(f"{METRIC_LABEL[metric]} (mean over seeds{', log scale' if log else ''})")
    fig.suptitle(" · ".join(t for t in (title, _other_axis_note(grid, axis)) if t), fontsize=10)
    fig.text(0.5, 0.005, "★ grid optimum (edge: at the grid edge, the optimum may lie beyond; cliff: stability-bound) · "
             f"dashed: fitted valley, tick: its optimum\n◆ transferred setting at a larger {scale} · × diverged, one row "
             f"per {scale} · band: min–max over seeds", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    save(fig, path, tight=False)


def plot_drift(v: dict, path: Path) -> bool:
    """The picture of the paper: per swept axis, the fitted optimum x̂ (log2) against log2 width per
    parameterization with its interval, the width law's line where there is one, and the base ± tolerance band;
    open markers where the valley is not bracketed (the optimum may lie beyond), a cross where a width has no
    optimum. Only widths with something drawn are on the axis. False (nothing drawn) when no parameterization has
    a fitted optimum above the base width."""
    cells = {(c["param"], c["width"]): c for c in v["cells"]}
    scale = v.get("scale", "width")  # the study's axis, in the labels
    axes_used = [a for a in AXES if any(pv.get("drift", {}).get(a) for pv in v["params"].values())]
    if not axes_used:
        return False
    plt = pyplot()
    params = ordered(v["params"])
    base = v["base_width"]
    fig, axes = plt.subplots(1, len(axes_used), figsize=(5.6 * len(axes_used), 4.2), squeeze=False)
    tol = v["settings"]["tolerance_octaves"]
    drawn: set[int] = set()
    for ax, axis in zip(axes[0], axes_used):
        for i, param in enumerate(params):
            pv, color = v["params"][param], plt.cm.tab10(i)
            rows = pv.get("drift", {}).get(axis)
            if not rows:
                continue
            x0 = cells[param, base]["optimum"]["axes"][axis]["fit"]["x_hat"]
            ax.axhspan(x0 - tol, x0 + tol, color=color, alpha=0.10, lw=0, label=f"{param}: base ±{tol:g} octave")
            offset = 0.05 * (i - (len(params) - 1) / 2)
            for w in [base] + [r["width"] for r in rows]:
                fit = cells[param, w]["optimum"]["axes"][axis]["fit"]
                x = math.log2(w) + offset
                drawn.add(w)
                lo, hi = fit["interval"] or (fit["x_hat"], fit["x_hat"])
                y = fit["x_hat"]
                shown = [max(lo, y - 3), min(hi, y + 3)]  # unbounded ends drawn as 3 octaves with an arrow
                ax.errorbar(x, y, yerr=[[y - shown[0]], [shown[1] - y]], color=color, capsize=3, lw=1)
                for end, inf, mark in ((shown[0], lo == -math.inf, "v"), (shown[1], hi == math.inf, "^")):
                    if inf:
                        ax.scatter(x, end, marker=mark, s=25, color=color)
                ax.scatter(x, y, marker="o", s=36, zorder=5, color=color if fit["bracketed"] else "white",
                           edgecolor=color)
            law = pv.get("law", {}).get(axis)
            if law:
                us = np.linspace(0, math.log2(max(drawn) / base), 20)
                lo_b, hi_b = law["beta_interval"]
                ax.plot(math.log2(base) + us, law["a"] + law["beta"] * us, color=color, ls="--", lw=1,
                        label=f"{param}: law β = {law['beta']:+.2f} [{lo_b:+.2f}, {hi_b:+.2f}]")
            ax.plot([], [], marker="o", color=color, ls="", label=f"{param}: {axis}* (verdict: {pv['verdict']})")
        for (param, w), c in cells.items():  # a width with a grid and no optimum
            if c["optimum"] is None and w in drawn:
                ax.scatter(math.log2(w), ax.get_ylim()[0], marker="X", s=60, color="crimson", zorder=5)
        widths = sorted(drawn)
        ax.set_xticks([math.log2(w) for w in widths], [str(w) for w in widths])
        ax.set_xlabel(f"{scale} (log2 scale)")
        ax.set_ylabel(f"fitted {axis}*: {AXIS_LABEL[axis]}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title(f"{axis}* against {scale}", fontsize=9)
    fig.text(0.5, 0.005, f"bars: {v['settings']['level']:.0%} interval of the fitted optimum (parametric bootstrap) · "
             f"open marker: not bracketed, the optimum may lie beyond · ▲▼: unbounded · dashed: the {scale} law",
             ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    save(fig, path, tight=False)
    return True


def plot_heatmaps(grid: dict, path_for, metric: str, scale: str = "width") -> list[Path]:
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
            ax.set_title(f"{param}, {scale} {c.width}", fontsize=9)
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=f"{METRIC_LABEL[metric]} (mean over seeds)")
        fig.text(0.01, 0.01, "× diverged · blank: not tried · ★ optimum", fontsize=7)
        path = path_for(param)
        save(fig, path, tight=False)
        paths.append(path)
    return paths


def setting_rows(df: pd.DataFrame, param: str, choice: dict) -> pd.DataFrame:
    """The trials of the transferred setting of ``param`` at every width (its lr at that width: ``lr_by_width``
    when the width law chose it, else ``lr``), every seed, whatever phase planned them."""
    same_damping = (df.damping.isna() if choice.get("damping") is None
                    else np.isclose(df.damping.astype(float), float(choice["damping"]), rtol=1e-9))
    by_width = choice.get("lr_by_width") or {}
    lr = df.width.map(lambda w: float(by_width.get(str(w), choice["lr"])))
    same = np.isclose(df.lr.astype(float), lr.astype(float), rtol=1e-9) & same_damping
    return df[(df.param == param) & same].drop_duplicates("trial_id")


def plot_curves(runs, df: pd.DataFrame, transfers: dict, path: Path, base_width: int, title: str = "",
                scale: str = "width") -> bool:
    """Training curves (train loss on the eval subset vs step; ``runs.metrics(trial_id)``) at the transferred
    setting, one panel per param
    (sp first), one colour per width from the base width up; the points are the evaluations (train.eval_every)."""
    params = ordered(p for p in transfers if (setting_rows(df, p, transfers[p]).width != base_width).any())
    if not params or not runs.has_metrics:
        return False  # nothing above the base width, or no per-run metrics (runs made elsewhere)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(params), figsize=(4.4 * len(params), 3.8), squeeze=False, sharey=True)
    evaluations = 0
    for ax, param in zip(axes[0], params):
        rows = setting_rows(df, param, transfers[param])
        colors = _colors(plt, rows.width.unique())
        for width, g in rows.groupby("width"):
            for k, trial_id in enumerate(g.trial_id):
                metrics = [m for m in runs.metrics(trial_id) or [] if m.get("train_loss") is not None]
                evaluations = max(evaluations, len(metrics))
                ax.plot([m["step"] for m in metrics], [m["train_loss"] for m in metrics], color=colors[width], lw=1,
                        marker="o", ms=2, label=f"{param}, {scale} {width}" + (" (base)" if width == base_width else "")
                        if k == 0 else None)
        ax.set_yscale("log")
        damping = transfers[param].get("damping")
        ax.set_title(f"{param}: lr={transfers[param]['lr']:.3g}"
                     + ("" if damping is None else f", damping={damping:.3g}"), fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("train loss on the eval subset (log scale)")
    if evaluations <= 3:  # a few evaluations: the lines only join them, they are not the curve between
        fig.text(0.5, 0.005, f"{evaluations} evaluations per run (train.eval_every sets them): straight lines join "
                 "them; lower train.eval_every for the curve in between", ha="center", fontsize=7, color="crimson")
    if title:
        fig.suptitle(title, fontsize=10)
    save(fig, path)
    return True
