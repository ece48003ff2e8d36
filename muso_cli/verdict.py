"""Verdicts: did the optimum transfer across width? Optima, grid edges, stability cliffs, intervals over seeds and
the verdict rules, on a plain table of trial outcomes (no files, no plots: testable on hand-made tables).

The input is one row per trial entry of a study: ``param``, ``width``, ``lr``, ``damping`` (NaN for optimizers
without damping), ``seed``, ``status`` (ok | diverged | failed | running | pending | unreadable) and ``objective``
(the selection metric as a loss, lower is better: +inf for a diverged trial, NaN for one that did not finish).

The rules, in order:

- A *setting* (param, width, lr, damping) scores the mean objective over its finished seeds; a setting where
  any seed diverged scores +inf (it is not a usable setting).
- A *cell* is the grid tried at one (param, width). Its optimum is the setting with the lowest finite score.
  A cell where no setting scores finite has **no optimum**: it says so in words, with the fix, and nothing (no
  drift, no slope, no transfer) is computed from it.
- Along each *axis* (lr, damping; in log2, so steps are octaves) swept in a cell (two values or more), the
  optimum's neighbours are the nearest values tried on its line (the same value of the other axis). An optimum
  at the lowest or highest value of the cell's axis is **at the grid edge**: the optimum may lie beyond. An
  optimum whose next larger lr (next smaller damping: the less stable side) diverged is **stability-bound**.
  The *sub-grid* estimate is the vertex of the parabola through the optimum and its two finite neighbours.
- *Intervals* (``Settings.level``, 90% by default) are paired percentile-bootstrap intervals over seeds: each of
  ``Settings.resamples`` resamples draws the study's seed list with replacement (``numpy.random.default_rng``
  (PCG64) seeded with ``Settings.seed``, so a report is reproducible) and uses the same draw at every setting of
  every cell (a seed is the same initialisation and data order at every setting, so the draws stay paired).
  Each resample's optimum is placed within half a grid step of its grid point on either side, the finest the
  grid can place it if the loss is locally parabolic, unbounded at a grid edge; the interval runs from the
  (1 − level)/2 quantile of the lower ends to the (1 + level)/2 quantile of the upper ends. One seed: no interval.
- The *drift* at width w is log2 x*_w − log2 x*_base in octaves (x = lr or damping), with its interval from
  the same resamples. Per parameterization and swept axis: **transfers** when every width's drift interval lies
  within ± ``Settings.tolerance``, **drifts** when some width's interval lies wholly outside it, else
  **undecided**, saying which widths and what would decide it (more seeds, a finer grid, a wider grid). A
  parameterization transfers when every swept axis does, drifts when one does, and has **no optimum** when its
  base cell has none (no transfer, no drift).
- The *regret* at width w: the score of the transferred setting (the base optimum when none was recorded)
  minus the best score at w, with its interval.

:func:`judge` returns all of it as one JSON-able object (what report.json holds and report.md and the terminal
print first); :func:`cells` gives the cells alone (what ``muso transfer`` needs at the base width).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .errors import UsageError, check_positive, is_int, is_number, raise_all
from .track import FAILED, FINAL_STATUSES

AXES = ("lr", "damping")
# The less stable side of each axis: a larger lr, a smaller damping. An optimum whose neighbour on that side
# diverged is stability-bound; a cell whose every setting diverged is widened the other way.
UNSTABLE_SIDE = {"lr": "above", "damping": "below"}
WIDEN = {"lr": "study.lr downwards", "damping": "study.damping upwards"}
DECIDED = ("transfers", "drifts")  # the other verdicts: undecided, no optimum


@dataclass(frozen=True)
class Settings:
    """The verdict's knobs (config keys study.tolerance and study.bootstrap.*)."""

    tolerance: float = 0.5   # octaves: a drift within ±tolerance of the base width's optimum counts as transferred
    level: float = 0.9       # coverage of every interval
    resamples: int = 1000    # bootstrap resamples of the seeds
    seed: int = 0            # seed of the resampling generator

    def describe(self, seeds: int) -> str:
        """The interval, in words (printed under the verdicts)."""
        if seeds < 2:
            return "1 seed: no interval."
        return (f"Intervals: {self.level:.0%} paired percentile bootstrap over {seeds} seeds ({self.resamples} "
                f"resamples, numpy default_rng({self.seed})), each optimum placed within half a grid step of its "
                f"grid point; in octaves (log2). Tolerance: ±{self.tolerance:g} octave.")


def parse_settings(study) -> Settings:
    """study.tolerance and study.bootstrap.* as Settings, or UsageError naming the key."""
    b = study.get("bootstrap") or {}
    level, resamples, seed = b.get("level", 0.9), b.get("resamples", 1000), b.get("seed", 0)
    raise_all([
        check_positive("study.tolerance", study.get("tolerance", 0.5)),
        None if is_number(level) and 0 < level < 1 else UsageError(
            "study.bootstrap.level", f"must be a number in (0, 1), got {level!r}.", "e.g. study.bootstrap.level=0.9."),
        check_positive("study.bootstrap.resamples", resamples, integer=True),
        None if is_int(seed) else UsageError("study.bootstrap.seed", f"must be an integer, got {seed!r}.",
                                             "e.g. study.bootstrap.seed=0."),
    ])
    return Settings(float(study.get("tolerance", 0.5)), float(level), int(resamples), int(seed))


# ------------------------------------------------------------------------------------------------------
# Cells: the grid tried at one (param, width)

def _same(a: np.ndarray, b: float) -> np.ndarray:
    """Elementwise a == b for grid values, NaN equal to NaN (the damping of an undamped optimizer)."""
    return np.isclose(a, b, rtol=1e-9, atol=0) | (np.isnan(a) & math.isnan(b))


class Cell:
    """The settings tried at one (param, width), their scores per seed, the optimum and the grid around it.

    ``seeds``: the study's seed list (the columns of the score matrix, shared by every cell so that bootstrap
    draws stay paired). Arrays over the G settings with at least one finished seed ("tried"):
    ``lr``, ``damping`` (G,); ``scores`` (G, len(seeds)) objective per seed (NaN: not finished); ``mean`` (G,).
    """

    def __init__(self, param: str, width: int, rows: pd.DataFrame, seeds: list[int]):
        self.param, self.width = str(param), int(width)
        column = {s: i for i, s in enumerate(seeds)}
        self.counts = {"settings": 0, "finite": 0, "diverged": 0, "failed": 0, "unfinished": 0}
        lrs, dampings, scores = [], [], []
        for (lr, damping), g in rows.groupby(["lr", "damping"], dropna=False, sort=True):
            self.counts["settings"] += 1
            finished = g[g.status.isin(FINAL_STATUSES)]
            if finished.empty:
                self.counts["failed" if (g.status == FAILED).any() else "unfinished"] += 1
                continue
            row = np.full(len(seeds), np.nan)
            for seed, value in zip(finished.seed, finished.objective):
                row[column[int(seed)]] = value
            lrs.append(float(lr))
            dampings.append(float(damping))
            scores.append(row)
        self.lr, self.damping = np.array(lrs), np.array(dampings)
        self.scores = np.array(scores).reshape(len(lrs), len(seeds))
        self.mean = _means(self.scores)
        self.counts["finite"] = int(np.isfinite(self.mean).sum())
        self.counts["diverged"] = int(np.isinf(self.mean).sum())
        finite = np.isfinite(self.mean)
        self.best = int(np.argmin(np.where(finite, self.mean, np.inf))) if finite.any() else None
        self.swept = [a for a in AXES if len(np.unique(self.values(a)[~np.isnan(self.values(a))])) >= 2]
        self.geometry = {a: _geometry(self.log2(a), self.values(_other(a))) for a in self.swept}

    def values(self, axis: str) -> np.ndarray:
        return self.lr if axis == "lr" else self.damping

    def log2(self, axis: str) -> np.ndarray:
        """log2 of the axis' values, to 1e-9 octave: grid values carry 12 digits, and a step of 0.25 octave should
        read 0.25, not 0.2500000000006, when it is compared with a tolerance."""
        return np.round(np.log2(self.values(axis)), 9)

    @property
    def n_settings(self) -> int:
        return self.counts["settings"]

    # --- the optimum (all seeds) ---------------------------------------------------------------------
    def axis(self, axis: str) -> dict:
        """What the grid says about the optimum along ``axis``: its value, log2 value, the steps to its neighbours
        (octaves; None at an edge), the edge it sits at, whether it is stability-bound, the sub-grid estimate."""
        g, geo = self.best, self.geometry[axis]
        x = float(self.log2(axis)[g])
        cliff_neighbour = geo["line_" + UNSTABLE_SIDE[axis]][g]
        return {"value": float(self.values(axis)[g]), "log2": x,
                "step_below": _finite_or_none(geo["below"][g]), "step_above": _finite_or_none(geo["above"][g]),
                "edge": "low" if geo["edge_low"][g] else "high" if geo["edge_high"][g] else None,
                "stability_bound": bool(cliff_neighbour >= 0 and np.isinf(self.mean[cliff_neighbour])),
                "subgrid_log2": self._parabola(axis)}

    def _parabola(self, axis: str) -> float | None:
        """log2 of the vertex of the parabola through the optimum and its two line neighbours, when both are finite
        and the parabola opens upwards; else None."""
        g, geo = self.best, self.geometry[axis]
        lo, hi = geo["line_below"][g], geo["line_above"][g]
        if lo < 0 or hi < 0 or not (np.isfinite(self.mean[lo]) and np.isfinite(self.mean[hi])):
            return None
        x = self.log2(axis)[[lo, g, hi]]
        a, b, _ = np.polyfit(x, self.mean[[lo, g, hi]], 2)
        return float(-b / (2 * a)) if a > 0 else None

    def problem(self) -> UsageError | None:
        """Why the cell has no optimum, as a UsageError naming the key to change and the fix; None when it has one."""
        if self.best is not None:
            return None
        c, n, where = self.counts, self.counts["settings"], f"at width {self.width}"
        if c["diverged"] == n:
            problem = f"all {n} settings diverged {where}"
        elif c["diverged"] + c["failed"] == n:
            problem = f"all {n} settings diverged or failed {where} ({c['diverged']} diverged, {c['failed']} failed)"
        else:
            problem = (f"no setting finished finite {where} ({c['diverged']} diverged, {c['failed']} failed, "
                       f"{c['unfinished']} not finished)")
        fixes, key = [], "study"
        if c["unfinished"]:
            fixes.append("finish the sweep (muso status <study> shows what is left)")
        if c["failed"]:
            fixes.append("see why trials failed (muso status <study> --list, result.json)")
        if c["diverged"]:
            swept = [a for a in AXES if a in self.swept] or ["lr"]
            widen = "widen " + " or ".join(WIDEN[a] for a in swept)
            if np.isfinite(self.damping).any() and "damping" not in swept:
                widen += " or raise the damping"
            fixes.append(widen)
            if not (c["unfinished"] or c["failed"]):
                key = f"study.{swept[0]}"
        return UsageError(key, problem, "; ".join(fixes))

    # --- resampled optima ----------------------------------------------------------------------------
    def resampled_best(self, draws: np.ndarray) -> np.ndarray:
        """The optimum's index under each resample (B,), −1 where no setting scores finite. ``draws``: (B, S)
        how often each seed is drawn."""
        return _argmin_finite(_means(self.scores, draws))

    def resampled_scores(self, draws: np.ndarray) -> np.ndarray:
        """(B, G) score of every setting under each resample."""
        return _means(self.scores, draws)

    def placement(self, axis: str, best: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) log2 ends within which each resample's optimum lies: its grid point ± half the step to
        each neighbour (unbounded at a grid edge, and where a resample has no optimum)."""
        geo, x = self.geometry[axis], self.log2(axis)
        ok = best >= 0
        g = np.where(ok, best, 0)
        lower = np.where(ok, x[g] - geo["below"][g] / 2, -np.inf)
        upper = np.where(ok, x[g] + geo["above"][g] / 2, np.inf)
        return lower, upper

    def find(self, lr: float, damping: float | None) -> int | None:
        """Index of the tried setting (lr, damping), or None."""
        hit = np.flatnonzero(_same(self.lr, lr) & _same(self.damping, math.nan if damping is None else damping))
        return int(hit[0]) if len(hit) else None

    def summary(self) -> dict:
        """The cell as a JSON-able dict (the optimum's axes carry their interval once :func:`judge` adds it)."""
        out: dict[str, Any] = {"param": self.param, "width": self.width, "counts": dict(self.counts)}
        if self.best is None:
            e = self.problem()
            out.update(optimum=None, problem=e.problem, fix=e.fix)
            return out
        g = self.best
        out["optimum"] = {"lr": float(self.lr[g]), "damping": _finite_or_none(self.damping[g]),
                          "objective": float(self.mean[g]),
                          "seeds": int(np.isfinite(self.scores[g]).sum()),
                          "axes": {a: self.axis(a) for a in self.swept}}
        return out


def _other(axis: str) -> str:
    return "damping" if axis == "lr" else "lr"


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _means(scores: np.ndarray, draws: np.ndarray | None = None) -> np.ndarray:
    """Mean score over seeds, +inf where a (drawn) seed diverged, NaN where no (drawn) seed finished.

    scores: (G, S). draws: (B, S) multiplicities of the seeds in each resample, or None for all seeds once.
    Returns (G,) without draws, else (B, G)."""
    weights = np.ones((1, scores.shape[1])) if draws is None else draws
    finished, diverged = ~np.isnan(scores), np.isinf(scores)
    n = weights @ finished.T
    total = weights @ np.where(np.isfinite(scores), scores, 0.0).T
    out = np.where((weights @ diverged.T) > 0, np.inf, np.where(n > 0, total / np.maximum(n, 1), np.nan))
    return out[0] if draws is None else out


def _argmin_finite(means: np.ndarray) -> np.ndarray:
    """Per row, the index of the lowest finite value, −1 where none is finite. means: (B, G)."""
    if means.shape[1] == 0:
        return np.full(means.shape[0], -1)
    masked = np.where(np.isfinite(means), means, np.inf)
    best = np.argmin(masked, axis=1)
    return np.where(np.isfinite(masked.min(axis=1)), best, -1)


def _geometry(x: np.ndarray, other: np.ndarray) -> dict[str, np.ndarray]:
    """Per setting, along one axis (x: log2 values; other: the other axis' values): steps to the nearest value
    below / above on its line (falling back to the nearest value of the whole cell when the line has none; inf
    at the cell's edge), the line neighbours' indices (−1: none) and the edge flags."""
    n = len(x)
    out = {"below": np.full(n, np.inf), "above": np.full(n, np.inf), "line_below": np.full(n, -1),
           "line_above": np.full(n, -1), "edge_low": np.zeros(n, bool), "edge_high": np.zeros(n, bool)}
    eps = 1e-9
    for g in range(n):
        line = np.flatnonzero(_same(other, other[g]))
        for side, sign in (("below", -1), ("above", 1)):
            on_line = [j for j in line if sign * (x[j] - x[g]) > eps]
            in_cell = sign * (x - x[g]) > eps
            if on_line:
                j = min(on_line, key=lambda j: abs(x[j] - x[g]))
                out["line_" + side][g] = j
                out[side][g] = abs(x[j] - x[g])
            elif in_cell.any():
                out[side][g] = np.abs(x[in_cell] - x[g]).min()
            out["edge_low" if side == "below" else "edge_high"][g] = not in_cell.any()
    return out


def cells(points: Iterable[dict] | pd.DataFrame, seeds: list[int] | None = None) -> dict[tuple[str, int], Cell]:
    """Every (param, width) cell of a table of trial entries (see the module docstring for the columns)."""
    df = _table(points)
    if seeds is None:
        seeds = study_seeds(df)
    return {(str(p), int(w)): Cell(p, w, rows, seeds) for (p, w), rows in df.groupby(["param", "width"])}


def study_seeds(df: pd.DataFrame) -> list[int]:
    """The seeds with a finished trial somewhere in the study (sorted)."""
    return sorted({int(s) for s in df.seed[df.status.isin(FINAL_STATUSES)]}) if len(df) else []


def _table(points) -> pd.DataFrame:
    df = pd.DataFrame(points, columns=["param", "width", "lr", "damping", "seed", "status", "objective"]) \
        if not isinstance(points, pd.DataFrame) else points
    return df.assign(damping=df.damping.astype(float), objective=df.objective.astype(float))


def draws(n_seeds: int, settings: Settings) -> np.ndarray | None:
    """(resamples, n_seeds): how often each seed is drawn in each bootstrap resample; None for fewer than 2 seeds."""
    if n_seeds < 2:
        return None
    rng = np.random.default_rng(settings.seed)
    picks = rng.integers(0, n_seeds, size=(settings.resamples, n_seeds))
    out = np.zeros((settings.resamples, n_seeds))
    np.add.at(out, (np.arange(settings.resamples)[:, None], picks), 1)
    return out


def _interval(lower: np.ndarray, upper: np.ndarray, level: float) -> list[float]:
    """[(1 − level)/2 quantile of the lower ends, (1 + level)/2 quantile of the upper ends] (±inf: unbounded)."""
    return [float(np.quantile(lower, (1 - level) / 2, method="inverted_cdf")),
            float(np.quantile(upper, (1 + level) / 2, method="inverted_cdf"))]


# ------------------------------------------------------------------------------------------------------
# The verdict

def judge(points: Iterable[dict] | pd.DataFrame, base_width: int, settings: Settings = Settings(),
          transfers: dict | None = None) -> dict:
    """The verdict object: {settings, seeds, interval (in words), base_width, cells: [...], params: {param: ...}}.

    Per parameterization: ``verdict`` (transfers | drifts | undecided | no optimum), ``sentence`` (one sentence,
    what report.md and the terminal print first), ``axes`` ({lr, damping}: verdict and the drift per width with its
    interval, what would decide it), ``regret`` (per width, with its interval) and ``decide`` (all suggestions).
    Octave values are log2; ±inf interval ends (null in JSON) are unbounded. ``transfers``: transfer.json's
    choices ({param: {lr, damping}}), whose regret is measured; the base optimum stands in where none is recorded.
    """
    df = _table(points)
    seeds = study_seeds(df)
    boot = draws(len(seeds), settings)
    grid = cells(df, seeds)
    best = {key: c.resampled_best(boot) for key, c in grid.items()} if boot is not None else {}
    summaries = []
    for key, c in sorted(grid.items()):
        s = c.summary()
        if boot is not None and c.best is not None:
            for a, info in s["optimum"]["axes"].items():
                info["interval_log2"] = _interval(*c.placement(a, best[key]), settings.level)
        summaries.append(s)
    params = {p: _judge_param(p, grid, best, boot, base_width, settings, (transfers or {}).get(p))
              for p in sorted({k[0] for k in grid})}
    return {"settings": {"tolerance_octaves": settings.tolerance, "level": settings.level,
                         "resamples": settings.resamples, "seed": settings.seed},
            "seeds": len(seeds), "interval": settings.describe(len(seeds)), "base_width": int(base_width),
            "cells": summaries, "params": params}


def _judge_param(param: str, grid: dict, best: dict, boot, base_width: int, settings: Settings,
                 choice: dict | None) -> dict:
    base = grid.get((param, base_width))
    if base is None or base.best is None:
        e = base.problem() if base is not None else UsageError("study", f"no trial at width {base_width}",
                                                                 "run muso sweep")
        problem, fix = e.problem.replace(f"at width {base_width}", f"at the base width {base_width}"), e.fix
        return {"param": param, "verdict": "no optimum", "axes": {}, "regret": [], "decide": [fix],
                "sentence": f"{param}: no optimum — {problem}: {fix}; no transfer and no drift."}
    widths = sorted(w for (p, w), c in grid.items() if p == param and w != base_width and c.n_settings >= 2)
    axes = {a: _judge_axis(a, base, [grid[param, w] for w in widths], best, boot, settings) for a in base.swept}
    if choice is None:
        choice = {"lr": float(base.lr[base.best]), "damping": _finite_or_none(base.damping[base.best])}
    regret = [r for w in widths if (r := _regret(grid[param, w], choice, best.get((param, w)), boot, settings))]
    verdicts = [ax["verdict"] for ax in axes.values()]
    if not axes:
        verdict, phrases = "undecided", ["no lr or damping grid at the base width"]
        decide = ["an lr grid (study.lr=log2:-8:0)"]
    elif not widths:
        verdict = "undecided"
        phrases = [f"no {' or '.join(axes)} grid above the base width {base_width}"]
        decide = [f"the grid at several widths (study.widths=[{base_width},{4 * base_width},{16 * base_width}])"]
    else:
        verdict = "drifts" if "drifts" in verdicts else "transfers" if set(verdicts) == {"transfers"} else "undecided"
        phrases = [ax["phrase"] for ax in axes.values()]
        decide = list(dict.fromkeys(d for ax in axes.values() for d in ax["decide"]))
    sentence = f"{param}: {verdict} — " + "; ".join(phrases)
    if regret:
        sentence += "; " + _regret_phrase(regret[-1])
    if verdict == "undecided" and decide:
        sentence += "; " + " or ".join(decide) + " would decide it"
    return {"param": param, "verdict": verdict, "sentence": sentence + ".", "axes": axes, "regret": regret,
            "decide": decide, "transferred": {"lr": choice["lr"], "damping": choice.get("damping")}}


def _judge_axis(axis: str, base: Cell, others: list[Cell], best: dict, boot, settings: Settings) -> dict:
    """Drift of the optimum along ``axis`` at each width against the base cell, and the axis' verdict."""
    tol, name = settings.tolerance, f"{axis}*"
    x0 = base.axis(axis)
    rows = []
    for c in others:
        row: dict[str, Any] = {"width": c.width}
        if c.best is None:
            e = c.problem()
            rows.append({**row, "verdict": "undecided", "why": e.problem, "decide": [e.fix]})
            continue
        if axis not in c.swept:
            continue
        xw = c.axis(axis)
        row.update(value=xw["value"], drift=xw["log2"] - x0["log2"], edge=xw["edge"],
                   stability_bound=xw["stability_bound"])
        if boot is None:
            rows.append({**row, "interval": None, "verdict": "undecided", "why": "1 seed: no interval",
                         "decide": ["more seeds (study.seeds=[0,1,2])"]})
            continue
        b0, bw = best[base.param, base.width], best[c.param, c.width]
        lo0, hi0 = base.placement(axis, b0)
        low, hiw = c.placement(axis, bw)
        lo, hi = _interval(low - hi0, hiw - lo0, settings.level)
        grid_drift = _grid_log2(c, axis, bw) - _grid_log2(base, axis, b0)
        seed_lo, seed_hi = _interval(grid_drift, grid_drift, settings.level)
        row.update(interval=[lo, hi], seed_interval=[seed_lo, seed_hi])
        if -tol <= lo and hi <= tol:
            rows.append({**row, "verdict": "transfers"})
        elif lo > tol or hi < -tol:
            rows.append({**row, "verdict": "drifts"})
        else:
            decide = []
            for cell, info in ((base, x0), (c, xw)):
                if info["edge"]:
                    side = "below" if info["edge"] == "low" else "above"
                    decide.append(f"a wider grid ({axis} {side} 2^{info['log2']:.4g} at width {cell.width})")
            # the seeds alone decide clearly (off the band's edges), but not once each optimum is placed within
            # half a grid step: the grid's resolution leaves it open; else the seeds' spread does (too)
            seeds_decide = (-tol < seed_lo and seed_hi < tol) or seed_lo > tol or seed_hi < -tol
            steps = [s for info in (x0, xw) for s in (info["step_below"], info["step_above"]) if s is not None]
            if not decide and (seeds_decide or (steps and max(steps) > tol)):
                decide.append("a finer grid near the optimum (muso refine)")
            if not seeds_decide:
                decide.append("more seeds")
            rows.append({**row, "verdict": "undecided", "why": f"interval {fmt_interval(lo, hi)} crosses ±{tol:g}",
                         "decide": decide})
    verdicts = [r["verdict"] for r in rows]
    drifting = [r for r in rows if r["verdict"] == "drifts"]
    if drifting:
        r = max(drifting, key=lambda r: abs(r["drift"]))
        way = "down" if r["drift"] < 0 else "up"
        unbounded = math.isinf(r["interval"][0]) or math.isinf(r["interval"][1])
        by = (f"at least {abs(r['interval'][1] if r['drift'] < 0 else r['interval'][0]):.2f}" if unbounded
              else f"{abs(r['drift']):.2f}")
        phrase = (f"{name} moves {way} by {by} octaves by width {r['width']} (interval {fmt_interval(*r['interval'])}, "
                  f"wholly outside ±{tol:g}" + ("; at the grid edge)" if r["edge"] else ")"))
        verdict = "drifts"
    elif rows and set(verdicts) == {"transfers"}:
        r = rows[-1]
        phrase = (f"{name} within ±{tol:g} octave of the base at every width (at {r['width']}: "
                  f"{r['drift']:+.2f}, interval {fmt_interval(*r['interval'])})")
        verdict = "transfers"
    elif not rows:
        phrase, verdict = f"{name}: no grid of {axis} above the base width", "undecided"
    else:
        undecided = [r for r in rows if r["verdict"] == "undecided"]
        phrase = f"{name} " + ", ".join(f"at width {r['width']}: {r['why']}"
                                        + (f" (grid drift {r['drift']:+.2f})" if "drift" in r else "")
                                        for r in undecided)
        verdict = "undecided"
    decide = list(dict.fromkeys(d for r in rows if r["verdict"] == "undecided" for d in r["decide"]))
    return {"verdict": verdict, "phrase": phrase, "base": x0, "widths": rows, "decide": decide}


def _grid_log2(cell: Cell, axis: str, best: np.ndarray) -> np.ndarray:
    """log2 grid value of each resample's optimum (NaN where a resample has none)."""
    x = cell.log2(axis)
    return np.where(best >= 0, x[np.where(best >= 0, best, 0)], np.nan)


def _regret(cell: Cell, choice: dict, best: np.ndarray | None, boot, settings: Settings) -> dict | None:
    """Score of ``choice`` at this width minus the cell's best score, with its interval (None when the choice was
    not tried here)."""
    g = cell.find(choice["lr"], choice.get("damping"))
    if g is None:
        return None
    value = float(cell.mean[g] - cell.mean[cell.best]) if cell.best is not None else math.inf
    out = {"width": cell.width, "regret": value, "diverged": bool(np.isinf(cell.mean[g])), "interval": None}
    if boot is not None and cell.best is not None:
        scores = cell.resampled_scores(boot)
        rows = np.arange(len(best))
        floor = np.where(best >= 0, scores[rows, np.where(best >= 0, best, 0)], np.nan)
        diff = scores[:, g] - floor  # NaN where a resample drew no finished seed of the setting: unknown
        out["interval"] = _interval(np.where(np.isnan(diff), 0.0, diff), np.where(np.isnan(diff), np.inf, diff),
                                    settings.level)
    return out


def _regret_phrase(r: dict) -> str:
    head = f"regret of the transferred setting at width {r['width']}: "
    if r["diverged"]:
        return head + "diverged"
    interval = ("1 seed: no interval" if r["interval"] is None
                else f"interval {fmt_interval(*r['interval'], octaves=False)}")
    return head + f"{r['regret']:.4g} ({interval})"


def fmt_interval(lo: float, hi: float, octaves: bool = True) -> str:
    """An interval in words: [-1.25, +0.25] (octaves) or [0, 0.0061]; ±inf as -inf / +inf."""
    def f(v):
        if math.isinf(v):
            return "+inf" if v > 0 else "-inf"
        return f"{v:+.2f}" if octaves else f"{v:.4g}"
    return f"[{f(lo)}, {f(hi)}]"
