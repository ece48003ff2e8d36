"""Verdicts: did the optimum transfer along the scale axis (width today, depth next), and which lr to use there?
Pure: a plain table of trial outcomes in, one JSON-able object out (no files, no plots: testable on hand-made
tables and on simulated studies whose answer is known, tests/test_calibration.py).

Input: one row per trial entry: ``param``, the scale (a column named by ``scale``, default ``width``), ``lr``,
``damping`` (NaN for optimizers without damping), ``seed``, ``status`` (ok | diverged | failed | running |
pending | unreadable) and ``objective`` (the selection metric as a loss, lower is better: +inf for a diverged
trial, NaN for one that did not finish).

The rules, in order:

- A *setting* (param, scale, lr, damping) is usable when every finished seed is finite; a *cell* is the settings
  tried at one (param, scale). Its *grid optimum* is the usable setting of lowest mean objective over seeds. A
  cell with no usable setting has **no optimum**: it says so in words, with the fix, and nothing is computed
  from it. An optimum at the lowest or highest value of a swept axis is *at the grid edge*; one whose next
  larger lr (next smaller damping) diverged is *stability-bound*.
- Along each swept axis (lr, damping; in log2, octaves) a cell's *valley* is fitted near its optimum
  (muso_cli.valley: an asymmetric parabola, every seed pooled with its own offset, a parametric bootstrap for
  the intervals): the *sub-grid optimum* x̂ with its interval.
- The *transferred setting*: the one recorded in transfer.json, else the base cell's fitted optimum.
- The *regret* at scale w: how much more the transferred setting loses than the best setting at w,
  R_w = f̂_w(x_t) − min f̂_w, from the valley at w (plus, when x_t lies outside the fitted window, the paired
  difference of the seeds' losses at x_t and at the grid optimum), summed over the swept axes, with its interval.
- **The verdict**, per parameterization, against δ (``study.delta``: auto = max(``study.delta_relative`` × the
  fitted minimum at w, the SD of the base valley's fitted seed levels); the loss a transfer may cost): *fails*
  when the transferred setting diverged on any seed at some scale, or some scale's regret interval lies wholly
  above δ; *transfers* when every scale tried has its regret interval's upper end ≤ δ; either only when the
  points' own regret (the seeds' paired difference at x_t, where it was tried) is on the same side of δ; else
  *undecided*, saying what
  would decide it (how many more seeds, which points). The drift x̂_w − x̂_base (octaves, with its interval)
  describes how the optimum moved; it does not decide.
- *The scale law*: with fitted optima at ≥ 3 scales, log2 x̂_w = a + β·log2(w / base) by weighted least squares,
  β's interval from the bootstrap draws, checked by leaving the largest scale out, and the prediction at any
  scale (``transfer.lr=fit``).

Intervals are ``Settings.level`` (90%) percentile intervals of the valleys' parametric bootstrap
(``Settings.resamples`` draws from numpy's default_rng(``Settings.seed``): the same results give the same
report). What they rest on is said in words (:meth:`Settings.describe`); their coverage on known valleys is
measured in tests/test_calibration.py and docs/verdicts.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import valley
from .cells import Cell, cells, choose, fit_cells, fit_line, same_value, study_seeds, table
from .errors import UsageError, check_positive, is_int, is_number, raise_all

DECIDED = ("transfers", "fails")  # the other verdicts: undecided, no optimum
VERIFY_STEP = 0.5                 # octaves between verification points (transfer.verify)


@dataclass(frozen=True)
class Settings:
    """The verdict's knobs (config keys study.delta, study.delta_relative, study.tolerance, study.bootstrap.*)."""

    delta: float | None = None       # the regret a transfer may cost, in the metric's units; None: auto
    delta_relative: float = 0.01     # auto δ: at least this fraction of the best loss at the scale
    tolerance: float = 0.5           # octaves: drift within ±tolerance is described as "stays"
    level: float = 0.9               # two-sided level of every interval
    resamples: int = 400             # bootstrap draws per fitted valley
    seed: int = 0                    # seed of the draws' generator

    def describe(self, seeds: int) -> str:
        """What the intervals rest on, in words (printed under the verdicts)."""
        delta = f"δ = {self.delta:g}" if self.delta is not None else (
            f"δ = max({self.delta_relative:g} × the fitted minimum at each width, the SD of the base valley's "
            f"seed levels)")
        return (f"Intervals: {self.level:.0%} parametric-bootstrap intervals of the fitted valleys ({self.resamples} "
                f"draws, numpy default_rng({self.seed})), resting on {seeds} seed{'s' if seeds != 1 else ''} and the "
                f"points near each optimum: each seed an offset, the rest Gaussian noise of the residuals' SD "
                f"(coverage measured on known valleys: docs/verdicts.md). A fitted regret decides only where the "
                f"seeds' paired difference at the transferred lr is on the same side of δ. {delta}.")


def parse_settings(study) -> Settings:
    """study.delta, study.delta_relative, study.tolerance and study.bootstrap.* as Settings, or UsageError naming
    the key."""
    b = study.get("bootstrap") or {}
    level, resamples, seed = b.get("level", 0.9), b.get("resamples", 400), b.get("seed", 0)
    delta = study.get("delta", "auto")
    raise_all([
        None if delta == "auto" or (is_number(delta) and delta > 0) else UsageError(
            "study.delta", f"must be auto or a number > 0 (the loss a transfer may cost), got {delta!r}.",
            "e.g. study.delta=auto or study.delta=0.005."),
        check_positive("study.delta_relative", study.get("delta_relative", 0.01)),
        check_positive("study.tolerance", study.get("tolerance", 0.5)),
        None if is_number(level) and 0 < level < 1 else UsageError(
            "study.bootstrap.level", f"must be a number in (0, 1), got {level!r}.", "e.g. study.bootstrap.level=0.9."),
        check_positive("study.bootstrap.resamples", resamples, integer=True),
        None if is_int(seed) else UsageError("study.bootstrap.seed", f"must be an integer, got {seed!r}.",
                                             "e.g. study.bootstrap.seed=0."),
    ])
    return Settings(None if delta == "auto" else float(delta), float(study.get("delta_relative", 0.01)),
                    float(study.get("tolerance", 0.5)), float(level), int(resamples), int(seed))


# ------------------------------------------------------------------------------------------------------
# The transferred setting, its regret, the verdict

def _axis_regret(cell: Cell, axis: str, choice: dict, settings: Settings, rng: np.random.Generator) -> dict:
    """The transferred setting's regret along ``axis`` at one cell, on the line through its other coordinate:
    {value, draws, open (the valley is not bracketed: no upper bound), fit} or {why, decide} when unknown."""
    other = "damping" if axis == "lr" else "lr"
    want = choice.get(other)
    ref = cell.values(other)
    if want is not None and np.isfinite(ref).any() and not same_value(ref, want).any():
        # the transferred other coordinate lies between grid values (a fitted optimum): the nearest line
        tried = np.unique(ref[np.isfinite(ref)])
        want = float(tried[np.argmin(np.abs(np.log2(tried) - math.log2(want)))])
    on_line = np.flatnonzero(same_value(ref, math.nan if want is None else want))
    x_t = math.log2(choice[axis])
    verify = _verify_words(cell.scale)
    more = f"more seeds (study.seeds=[{','.join(map(str, range(max(3, len(cell.seeds) + 1))))}])"
    if not len(on_line):
        return {"why": f"no setting with the transferred {other} was tried", "decide": [verify],
                "needs": [{"kind": "verify", "width": cell.scale}]}
    usable = on_line[np.isfinite(cell.mean[on_line])]
    if not len(usable):
        return {"why": "no setting on its line finished finite", "decide": [verify],
                "needs": [{"kind": "verify", "width": cell.scale}]}
    best = int(usable[np.argmin(cell.mean[usable])])
    if best == cell.best and axis in cell.fits:  # the line through the optimum: fitted already
        fit = cell.fits[axis]
    else:
        fit = fit_line(cell, axis, best, settings, rng, cell.noise, cell.ratios.get(axis)) if len(usable) >= 3 else None
    xs = cell.log2(axis)[on_line]
    x_best = cell.log2(axis)[best]
    at_t = on_line[np.abs(xs - x_t) < 1e-6]
    if fit is not None and fit.covers(x_t):  # the valley's height there; and, where x_t was tried, what the points
        raw = _paired(cell, axis, int(at_t[0]), best, fit, settings, rng) if len(at_t) else None  # say directly
        part = {"value": float(fit.shape(x_t)), "draws": fit.shape_draws(x_t) if fit.draws else None,
                "raw": raw[0] + float(fit.shape(x_best)) if raw else None, "open": not fit.bracketed, "fit": fit,
                "axis": axis}
        return part
    if len(at_t):  # tried, beyond the fitted points: the seeds' paired difference to the best, plus the valley below it
        near = far = int(at_t[0])
    else:  # between two tried settings on the same side of the optimum: the loss is monotone there
        below, above = on_line[xs < x_t], on_line[xs > x_t]
        lower = int(below[np.argmax(cell.log2(axis)[below])]) if len(below) else None
        upper = int(above[np.argmin(cell.log2(axis)[above])]) if len(above) else None
        if lower is not None and cell.log2(axis)[lower] >= x_best:     # x_t above the optimum's side
            near, far = lower, upper
        elif upper is not None and cell.log2(axis)[upper] <= x_best:   # x_t below it
            near, far = upper, lower
        else:
            return {"why": f"the transferred {axis} was not tried here and lies outside the fitted points",
                    "decide": [verify], "needs": [{"kind": "verify", "width": cell.scale}]}
    lo_part = _paired(cell, axis, near, best, fit, settings, rng)
    if lo_part is None:
        return {"why": "no seed finished both the transferred setting and the best one", "decide": [more],
                "needs": [{"kind": "seeds"}]}
    hi_part = _paired(cell, axis, far, best, fit, settings, rng) if far is not None else None
    tail = fit.shape(x_best) if fit else 0.0
    return {"value": float(lo_part[0] + tail), "draws": lo_part[1],
            "upper_draws": hi_part[1] if hi_part is not None else None,
            "open": fit is None or not fit.bracketed or far is None, "fit": fit, "axis": axis}


def _paired(cell: Cell, axis: str, g: int, best: int, fit, settings: Settings, rng: np.random.Generator
            ) -> tuple[float, np.ndarray | None] | None:
    """(the seeds' mean loss difference between setting ``g`` and the line's best, draws of it plus the fitted
    loss of the best above the valley's minimum), or None when no seed finished both; draws None without a noise
    estimate."""
    both = np.isfinite(cell.scores[g]) & np.isfinite(cell.scores[best])
    diff = (cell.scores[g] - cell.scores[best])[both]
    if not len(diff):
        return None
    # the difference's noise, t-distributed on its degrees of freedom: the points' noise about their own means
    # (every point near the optimum, seeds as offsets), else the seeds' own spread of the difference
    if fit is not None and fit.pure_sigma:
        sd, nu = fit.pure_sigma * math.sqrt(2), fit.pure_nu
    elif len(diff) >= 2:
        sd, nu = float(np.std(diff, ddof=1)), len(diff) - 1
    else:
        return float(diff.mean()), None
    if fit is not None and not fit.draws:
        return float(diff.mean()), None
    draws = diff.mean() + sd / math.sqrt(len(diff)) * rng.standard_t(max(nu, 1), settings.resamples)
    return float(diff.mean()), draws + (fit.shape_draws(cell.log2(axis)[best]) if fit else 0.0)


def regret(cell: Cell, choice: dict, axes: list[str], delta: float, settings: Settings,
           rng: np.random.Generator) -> dict:
    """The transferred setting's regret at one scale (summed over the swept ``axes``), with its interval and the
    scale's verdict: fails (diverged, or the interval wholly above δ), transfers (its upper end ≤ δ), undecided
    (with what would decide it)."""
    out: dict[str, Any] = {"width": cell.scale, "delta": delta, "regret": None, "interval": None,
                           "diverged": False, "verdict": "undecided", "why": "", "decide": [], "needs": []}
    g = cell.find(choice["lr"], choice.get("damping"))
    if g is not None and np.isinf(cell.mean[g]):
        bad = int(np.isinf(cell.scores[g]).sum())
        return {**out, "regret": math.inf, "diverged": True, "verdict": "fails",
                "why": f"the transferred setting diverged on {bad} of {int(np.isfinite(cell.scores[g]).sum()) + bad} "
                       f"seeds"}
    if g is None:
        flanked = _diverged_neighbours(cell, choice, axes)
        if flanked:
            return {**out, "regret": math.inf, "diverged": True, "verdict": "fails", "why": flanked}
    if cell.best is None:
        e = cell.problem()
        return {**out, "why": e.problem, "decide": [e.fix], "needs": [{"kind": "cell"}]}
    parts = [_axis_regret(cell, a, choice, settings, rng) for a in axes]
    unknown = [p for p in parts if "value" not in p]
    if unknown:
        return {**out, "why": "; ".join(p["why"] for p in unknown),
                "decide": list(dict.fromkeys(d for p in unknown for d in p["decide"])),
                "needs": [n for p in unknown for n in p["needs"]]}
    value = sum(p["value"] for p in parts)
    value = 0.0 if abs(value) < 1e-12 else value  # a vertex on the point: rounding, not a regret
    if any(p["draws"] is None for p in parts):
        more = f"more seeds (study.seeds=[{','.join(map(str, range(max(3, len(cell.seeds) + 1))))}])"
        return {**out, "regret": value, "why": f"regret {value:.4g}, no interval (one seed, no residual to tell "
                f"the noise)", "decide": [more], "needs": [{"kind": "seeds"}]}
    draws = np.sum([p["draws"] for p in parts], axis=0)
    lo, hi = valley.quantiles(draws, settings.level)
    lo = 0.0 if lo < 1e-12 else lo
    is_open = any(p["open"] for p in parts)
    if is_open:
        hi = math.inf
    elif any(p.get("upper_draws") is not None for p in parts):  # bounded above by the farther neighbour
        upper = np.sum([p["upper_draws"] if p.get("upper_draws") is not None else p["draws"] for p in parts], axis=0)
        hi = valley.quantiles(upper, settings.level)[1]
    out.update(regret=value, interval=[lo, hi], open=is_open)
    # the fitted valley decides, provided the points themselves (the seeds' paired difference, where x_t was tried)
    # are on the same side of δ: a valley the parabola misdescribes must not decide against its own points
    raws = [p.get("raw") for p in parts]
    raw = sum(raws) if all(r is not None for r in raws) else None
    if raw is not None:
        out["points_regret"] = raw
    if lo > delta and (raw is None or raw > delta):
        return {**out, "verdict": "fails", "why": f"regret {value:.4g} [{lo:.4g}, {_num(hi)}] > δ {delta:.4g}"}
    if hi <= delta and (raw is None or raw <= delta):
        return {**out, "verdict": "transfers", "why": f"regret {value:.4g} [{lo:.4g}, {hi:.4g}] ≤ δ {delta:.4g}"}
    if raw is not None and (lo > delta or hi <= delta):
        words, n = _seeds_words(len(cell.seeds), raw, min(lo, raw), max(hi, raw), delta)
        return {**out, "why": f"the fitted valley says {value:.4g} [{lo:.4g}, {_num(hi)}], the points themselves "
                f"{raw:.4g}: not both on one side of δ {delta:.4g}", "decide": [words],
                "needs": [{"kind": "seeds", "seeds": n}]}
    if is_open:
        opened = next(p for p in parts if p["open"])
        if opened["fit"] is not None:
            x = _beyond(opened["fit"], opened["axis"])
            decide = [f"{opened['axis']} 2^{x:.4g} at width {cell.scale}, past the tried points where the loss still "
                      "falls (muso refine <study>)"]
            needs = [{"kind": "point", "width": cell.scale, "axis": opened["axis"], "log2": x}]
        else:
            decide, needs = [_verify_words(cell.scale)], [{"kind": "verify", "width": cell.scale}]
    else:
        words, n = _seeds_words(len(cell.seeds), value, lo, hi, delta)
        decide, needs = [words], [{"kind": "seeds", "seeds": n}]
    return {**out, "why": f"regret {value:.4g} [{lo:.4g}, {_num(hi)}] straddles δ {delta:.4g}", "decide": decide,
            "needs": needs}


def _diverged_neighbours(cell: Cell, choice: dict, axes: list[str]) -> str | None:
    """Why an untried transferred setting counts as diverged: along some swept axis the nearest settings tried on
    both sides of it (its other coordinate held) diverged; else None."""
    for axis in axes:
        other = "damping" if axis == "lr" else "lr"
        want = choice.get(other)
        on = np.flatnonzero(same_value(cell.values(other), math.nan if want is None else want))
        x, x_t = cell.log2(axis)[on], math.log2(choice[axis])
        below, above = on[x < x_t], on[x > x_t]
        if len(below) and len(above):
            lo, hi = below[np.argmax(x[x < x_t])], above[np.argmin(x[x > x_t])]
            if np.isinf(cell.mean[lo]) and np.isinf(cell.mean[hi]):
                return (f"the transferred {axis} was not tried, and the settings either side of it "
                        f"({axis} 2^{cell.log2(axis)[lo]:.4g} and 2^{cell.log2(axis)[hi]:.4g}) diverged")
    return None


def _verify_words(scale: int) -> str:
    return (f"verification points around the transferred setting at width {scale} (muso transfer <study> "
            f"transfer.widths=[{scale}])")


def _beyond(fit: valley.Valley, axis: str) -> float:
    """Where the next point would bracket an open valley: VERIFY_STEP octaves past the tried end towards which the
    loss still falls (log2)."""
    if fit.open_low and fit.open_high:  # a plateau: go past it on the stable side (a smaller lr, a larger damping)
        return fit.window[0] - VERIFY_STEP if axis == "lr" else fit.window[1] + VERIFY_STEP
    low_side = fit.x_hat < 0.5 * (fit.window[0] + fit.window[1])
    return fit.window[0] - VERIFY_STEP if low_side else fit.window[1] + VERIFY_STEP


def _seeds_words(seeds: int, value: float, lo: float, hi: float, delta: float) -> tuple[str, int | None]:
    """(how many seeds would make the interval clear δ if the estimate stays where it is (its half-width shrinks
    as 1/√seeds), in words; that number, None when more seeds cannot decide it cheaply)."""
    half = (hi - value) if value <= delta else (value - lo)
    margin = abs(value - delta)
    needed = math.ceil(max(seeds, 1) * (half / margin) ** 2) if margin > 1e-12 and half > 0 else None
    if needed is None or needed > 50:
        return (f"the regret {value:.4g} is within noise of δ {delta:.4g}: more seeds cannot decide it cheaply "
                f"(set study.delta if a loss of {value:.2g} is acceptable)", None)
    return f"about {needed} seeds in all (study.seeds=[0,...,{needed - 1}]; {seeds} now)", needed


def _num(x: float) -> str:
    return "+inf" if math.isinf(x) else f"{x:.4g}"


# ------------------------------------------------------------------------------------------------------
# The verdict object

def judge(points: Iterable[dict] | pd.DataFrame, base: int, settings: Settings = Settings(),
          transfers: dict | None = None, scale: str = "width") -> dict:
    """The verdict object: {settings, seeds, interval (in words), base_width, scale, cells: [...], params: {...}}.

    Per parameterization: ``verdict`` (transfers | fails | undecided | no optimum), ``sentence`` (what report.md
    and the terminal print first), ``transferred`` (the setting and where it comes from), ``delta``, ``regret``
    (per scale: value, interval, verdict, why, what would decide it), ``drift`` (per axis and scale, octaves,
    with intervals), ``law`` (per axis, with ≥ 3 fitted scales) and ``decide``. ±inf interval ends (null in
    JSON) are unbounded. ``transfers``: transfer.json's choices ({param: {lr, damping}}), whose regret is
    measured; the base cell's fitted optimum (:func:`choose`) stands in where none is recorded."""
    df = table(points, scale)
    seeds = study_seeds(df)
    grid = cells(df, seeds, scale="scale")
    fit_cells(grid, settings, base)
    rng = np.random.default_rng(settings.seed + 1)
    params = {p: _judge_param(p, grid, base, settings, (transfers or {}).get(p), rng)
              for p in sorted({k[0] for k in grid})}
    summaries = [c.summary(settings.level) for _, c in sorted(grid.items())]
    return {"settings": {"delta": settings.delta, "delta_relative": settings.delta_relative,
                         "tolerance_octaves": settings.tolerance, "level": settings.level,
                         "resamples": settings.resamples, "seed": settings.seed},
            "seeds": len(seeds), "interval": settings.describe(len(seeds)), "base_width": int(base), "scale": scale,
            "cells": summaries, "params": params}


def delta_for(base_cell: Cell, cell: Cell, settings: Settings) -> float:
    """δ at ``cell``'s scale: study.delta, or max(delta_relative × the best loss there, the base optimum's SD over
    seeds)."""
    if settings.delta is not None:
        return settings.delta
    g = base_cell.best
    levels = [f.seed_levels for f in base_cell.fits.values() if f is not None and len(f.seed_levels) >= 2]
    if levels:  # the seeds' fitted levels: each averages the points near the optimum, not one noisy point
        sd = float(np.std(list(levels[0].values()), ddof=1))
    else:
        finite = base_cell.scores[g][np.isfinite(base_cell.scores[g])]
        sd = float(np.std(finite, ddof=1)) if len(finite) >= 2 else 0.0
    best = cell.mean[cell.best] if cell.best is not None else base_cell.mean[g]
    fits = [f for f in cell.fits.values() if f is not None]
    level = min([f.level for f in fits], default=best)
    return max(settings.delta_relative * abs(level), sd)


def _judge_param(param: str, grid: dict, base: int, settings: Settings, choice: dict | None,
                 rng: np.random.Generator) -> dict:
    base_cell = grid.get((param, base))
    if base_cell is None or base_cell.best is None:
        e = base_cell.problem() if base_cell is not None else UsageError("study", f"no trial at width {base}",
                                                                         "run muso sweep")
        problem, fix = e.problem.replace(f"at width {base}", f"at the base width {base}"), e.fix
        return {"param": param, "verdict": "no optimum", "regret": [], "drift": {}, "law": {}, "decide": [fix],
                "transferred": None, "sentence": f"{param}: no optimum — {problem}: {fix}; no transfer and no drift."}
    chosen = choose(base_cell)
    if choice is not None:
        chosen = {"lr": float(choice["lr"]), "damping": choice.get("damping"),
                  "source": choice.get("source", "transfer.json")}
    axes = list(base_cell.swept)
    others = [grid[p, w] for p, w in sorted(grid) if p == param and w != base]
    rows = [regret(c, chosen, axes or ["lr"], delta_for(base_cell, c, settings), settings, rng) for c in others
            if c.n_settings]
    drift = {a: _drift(base_cell, others, a, settings.level) for a in axes}
    law_by_axis = {a: _law(base_cell, others, a, base, settings.level) for a in axes}
    verdicts = [r["verdict"] for r in rows]
    if "fails" in verdicts:
        verdict = "fails"
    elif rows and set(verdicts) == {"transfers"}:
        verdict = "transfers"
    else:
        verdict = "undecided"
    decide = list(dict.fromkeys(d for r in rows if r["verdict"] == "undecided" for d in r["decide"]))
    if not rows:
        decide = [f"the transferred setting trained at a larger width (muso transfer <study> "
                  f"transfer.widths=[{4 * base},{16 * base}])"]
    out = {"param": param, "verdict": verdict, "transferred": chosen, "regret": rows, "drift": drift,
           "law": {a: law for a, law in law_by_axis.items() if law}, "decide": decide}
    out["sentence"] = sentence(out, base)
    return out


def _drift(base_cell: Cell, others: list[Cell], axis: str, level: float) -> list[dict]:
    """Per scale with a fitted optimum along ``axis``: x̂_w − x̂_base (octaves) with its interval."""
    b = base_cell.fits.get(axis)
    rows = []
    for c in others:
        f = c.fits.get(axis)
        if b is None or f is None:
            continue
        interval = None
        if b.draws and f.draws:
            lo, hi = valley.quantiles(f.draws["x_hat"] - b.draws["x_hat"], level)
            if not f.bracketed:
                lo, hi = (lo, math.inf) if f.x_hat > 0.5 * (f.window[0] + f.window[1]) else (-math.inf, hi)
            interval = [lo, hi]
        rows.append({"width": c.scale, "drift": f.x_hat - b.x_hat, "interval": interval, "bracketed": f.bracketed})
    return rows


def _law(base_cell: Cell, others: list[Cell], axis: str, base: int, level: float) -> dict | None:
    """The scale law of the optimum along ``axis`` from every cell with a bracketed fit (None with fewer than 3)."""
    from . import law

    fitted = [c for c in [base_cell, *others] if c.fits.get(axis) is not None and c.fits[axis].bracketed
              and c.fits[axis].draws]
    return law.fit([c.scale for c in fitted], base, [c.fits[axis].x_hat for c in fitted],
                   [c.fits[axis].draws["x_hat"] for c in fitted], level)


def sentence(pv: dict, base: int) -> str:
    """One sentence: the verdict, the evidence that decides it, how the optimum moved, what would decide it."""
    name, t = pv["param"], pv["transferred"]
    setting = f"lr {t['lr']:.4g}" + ("" if t.get("damping") is None else f", damping {t['damping']:.3g}")
    rows = pv["regret"]
    if pv["verdict"] == "fails":
        worst = next(r for r in rows if r["verdict"] == "fails")
        head = (f"{name}: fails — the transferred {setting} diverged at width {worst['width']}" if worst["diverged"]
                else f"{name}: fails — the transferred {setting} costs {worst['regret']:.4g} "
                     f"{fmt_interval(*worst['interval'], octaves=False)} > δ {worst['delta']:.4g} at width "
                     f"{worst['width']}")
    elif pv["verdict"] == "transfers":
        last = rows[-1]
        head = (f"{name}: transfers — the transferred {setting} costs at most δ at every width (at {last['width']}: "
                f"{last['regret']:.4g} {fmt_interval(*last['interval'], octaves=False)} ≤ δ {last['delta']:.4g})")
    else:
        why = "; ".join(f"at width {r['width']}: {r['why']}" for r in rows if r["verdict"] == "undecided")
        head = f"{name}: undecided — " + (why or "the transferred setting has not been trained above the base width")
    parts = [head]
    lr_drift = pv["drift"].get("lr") or []
    if lr_drift:
        d = lr_drift[-1]
        parts.append(f"lr* moved {d['drift']:+.2f} octaves "
                     f"{fmt_interval(*d['interval']) if d['interval'] else '(no interval)'} by width {d['width']}")
    law = pv["law"].get("lr")
    if law:
        lo, hi = law["beta_interval"]
        parts.append(f"lr* ∝ width^β with β = {law['beta']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                     + (" (contains 0)" if lo <= 0 <= hi else " (excludes 0)"))
    if pv["verdict"] == "undecided" and pv["decide"]:
        parts.append(" or ".join(pv["decide"]) + " would decide it")
    return "; ".join(parts) + "."


def fmt_interval(lo: float, hi: float, octaves: bool = True) -> str:
    """An interval in words: [-1.25, +0.25] (octaves) or [0, 0.0061]; ±inf as -inf / +inf."""
    def f(v):
        if math.isinf(v):
            return "+inf" if v > 0 else "-inf"
        return f"{v:+.2f}" if octaves else f"{v:.4g}"
    return f"[{f(lo)}, {f(hi)}]"
