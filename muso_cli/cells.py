"""The grid of a study, cell by cell, and its fitted valleys: the settings tried at one (parameterization, scale),
their scores per seed, the grid optimum, its edges and cliffs, why a cell has no optimum, and the valley fitted
along each swept axis near the optimum (muso_cli.valley). Pure: what muso_cli.verdict judges and what
``muso transfer`` and ``muso refine`` plan from.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from . import valley
from .errors import UsageError
from .track import FAILED, FINAL_STATUSES

AXES = ("lr", "damping")
# The less stable side of each axis: a larger lr, a smaller damping. An optimum whose neighbour on that side
# diverged is stability-bound; a cell whose every setting diverged is widened the other way.
UNSTABLE_SIDE = {"lr": "above", "damping": "below"}
WIDEN = {"lr": "study.lr downwards", "damping": "study.damping upwards"}



def same_value(a: np.ndarray, b: float) -> np.ndarray:
    """Elementwise a == b for grid values, NaN equal to NaN (the damping of an undamped optimizer)."""
    return np.isclose(a, b, rtol=1e-9, atol=0) | (np.isnan(a) & math.isnan(b))


class Cell:
    """The settings tried at one (param, scale), their scores per seed, the grid optimum and the grid around it.

    ``seeds``: the study's seed list (the columns of the score matrix). Arrays over the G settings with at least
    one finished seed: ``lr``, ``damping`` (G,); ``scores`` (G, len(seeds)) objective per seed (NaN: not
    finished); ``mean`` (G,): +inf where a seed diverged. ``fits``: the fitted valley per swept axis (set by
    :func:`judge`)."""

    def __init__(self, param: str, scale: int, rows: pd.DataFrame, seeds: list[int]):
        self.param, self.scale = str(param), int(scale)
        self.seeds = list(seeds)
        column = {s: i for i, s in enumerate(seeds)}
        self.counts = {"settings": 0, "finite": 0, "diverged": 0, "failed": 0, "unfinished": 0}
        lr_col, damping_col = rows.lr.to_numpy(float), rows.damping.to_numpy(float)
        status, seed_col, objective = rows.status.to_numpy(), rows.seed.to_numpy(), rows.objective.to_numpy(float)
        finished = np.isin(status, FINAL_STATUSES)
        keys = np.stack([lr_col, np.nan_to_num(damping_col, nan=-1.0)], axis=1)  # damping NaN: one group
        unique, group = np.unique(keys, axis=0, return_inverse=True)
        group = group.ravel()
        lrs, dampings, scores = [], [], []
        for g in range(len(unique)):  # settings in (lr, damping) order
            at = group == g
            self.counts["settings"] += 1
            done = at & finished
            if not done.any():
                self.counts["failed" if (status[at] == FAILED).any() else "unfinished"] += 1
                continue
            row = np.full(len(seeds), np.nan)
            for seed, value in zip(seed_col[done], objective[done]):
                row[column[int(seed)]] = value
            lrs.append(float(unique[g, 0]))
            dampings.append(float(damping_col[at][0]))
            scores.append(row)
        self.lr, self.damping = np.array(lrs), np.array(dampings)
        self.scores = np.array(scores).reshape(len(lrs), len(seeds))
        finite = np.isfinite(self.scores)
        total = np.where(finite, self.scores, 0.0).sum(axis=1)
        count = finite.sum(axis=1)
        self.mean = np.where(np.isinf(self.scores).any(axis=1), np.inf, total / np.maximum(count, 1))
        self.counts["finite"] = int(np.isfinite(self.mean).sum())
        self.counts["diverged"] = int(np.isinf(self.mean).sum())
        finite = np.isfinite(self.mean)
        self.best = int(np.argmin(np.where(finite, self.mean, np.inf))) if finite.any() else None
        self.swept = [a for a in AXES if len(np.unique(self.values(a)[~np.isnan(self.values(a))])) >= 2]
        self.fits: dict[str, valley.Valley | None] = {}
        self.noise: tuple[float, int] | None = None  # the parameterization's pooled (σ, ν): fit_cells
        self.ratios: dict[str, np.ndarray | None] = {}  # per axis, the asymmetry borrowed from the base cell

    def values(self, axis: str) -> np.ndarray:
        return self.lr if axis == "lr" else self.damping

    def log2(self, axis: str) -> np.ndarray:
        """log2 of the axis' values, to 1e-9 octave (grid values carry 12 digits)."""
        return np.round(np.log2(self.values(axis)), 9)

    @property
    def n_settings(self) -> int:
        return self.counts["settings"]

    def line(self, axis: str, at: int) -> np.ndarray:
        """Indices of the settings on ``axis``'s line through setting ``at`` (the other axis held), sorted."""
        other = self.values("damping" if axis == "lr" else "lr")
        on = np.flatnonzero(same_value(other, other[at]))
        return on[np.argsort(self.log2(axis)[on])]

    def axis(self, axis: str) -> dict:
        """What the grid says about the optimum along ``axis``: its value, log2 value, the steps to its neighbours
        on its line (octaves; None at an edge), the edge it sits at, and whether it is stability-bound."""
        g = self.best
        on = self.line(axis, g)
        x, xs = float(self.log2(axis)[g]), self.log2(axis)[on]
        k = int(np.flatnonzero(on == g)[0])
        below = float(x - xs[k - 1]) if k > 0 else None
        above = float(xs[k + 1] - x) if k + 1 < len(on) else None
        all_x = self.log2(axis)
        edge = "low" if x <= all_x.min() + 1e-9 else "high" if x >= all_x.max() - 1e-9 else None
        side = k + 1 if UNSTABLE_SIDE[axis] == "above" else k - 1
        cliff = 0 <= side < len(on) and bool(np.isinf(self.mean[on[side]]))
        return {"value": float(self.values(axis)[g]), "log2": x, "step_below": below, "step_above": above,
                "edge": edge, "stability_bound": cliff}

    def problem(self) -> UsageError | None:
        """Why the cell has no optimum, as a UsageError naming the key to change and the fix; None when it has one."""
        if self.best is not None:
            return None
        c, n, where = self.counts, self.counts["settings"], f"at width {self.scale}"
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

    def find(self, lr: float, damping: float | None) -> int | None:
        """Index of the tried setting (lr, damping), or None."""
        hit = np.flatnonzero(same_value(self.lr, lr) & same_value(self.damping, math.nan if damping is None else damping))
        return int(hit[0]) if len(hit) else None

    def points(self, axis: str, on: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x log2, seed, loss) of the finished finite points of the settings ``on`` along ``axis``."""
        x = np.repeat(self.log2(axis)[on], len(self.seeds))
        seed = np.tile(np.arange(len(self.seeds)), len(on))
        y = self.scores[on].ravel()
        ok = np.isfinite(y)
        return x[ok], seed[ok], y[ok]

    def summary(self, level: float = 0.9) -> dict:
        """The cell as a JSON-able dict: counts, and the optimum with each axis' grid facts and fit (its
        interval at ``level``)."""
        out: dict[str, Any] = {"param": self.param, "width": self.scale, "counts": dict(self.counts)}
        if self.best is None:
            e = self.problem()
            out.update(optimum=None, problem=e.problem, fix=e.fix)
            return out
        g = self.best
        finite = self.scores[g][np.isfinite(self.scores[g])]
        axes = {a: {**self.axis(a), "fit": fit_summary(self.fits.get(a), level)} for a in self.swept}
        out["optimum"] = {"lr": float(self.lr[g]), "damping": _finite_or_none(self.damping[g]),
                          "objective": float(self.mean[g]), "seeds": int(len(finite)),
                          "seed_sd": float(np.std(finite, ddof=1)) if len(finite) >= 2 else None, "axes": axes}
        return out


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def cells(points: Iterable[dict] | pd.DataFrame, seeds: list[int] | None = None, scale: str = "width"
          ) -> dict[tuple[str, int], Cell]:
    """Every (param, scale) cell of a table of trial entries (see the module docstring for the columns)."""
    df = table(points, scale)
    if seeds is None:
        seeds = study_seeds(df)
    return {(str(p), int(w)): Cell(p, w, rows, seeds) for (p, w), rows in df.groupby(["param", "scale"])}


def study_seeds(df: pd.DataFrame) -> list[int]:
    """The seeds with a finished trial somewhere in the study (sorted)."""
    return sorted({int(s) for s in df.seed[df.status.isin(FINAL_STATUSES)]}) if len(df) else []


def table(points, scale: str = "width") -> pd.DataFrame:
    df = pd.DataFrame(points) if not isinstance(points, pd.DataFrame) else points
    df = df.rename(columns={scale: "scale"})
    return df.assign(damping=df.damping.astype(float), objective=df.objective.astype(float))


# ------------------------------------------------------------------------------------------------------
# Valleys per cell

def fit_line(cell: Cell, axis: str, at: int, settings, rng: np.random.Generator,
             noise: tuple[float, int] | None = None, ratios: np.ndarray | None = None) -> valley.Valley | None:
    """The valley along ``axis`` on the line through setting ``at`` (None: fewer than 3 usable settings there).
    ``noise``: (σ, ν) to use when the points alone leave no residual degrees of freedom; ``ratios``: the sides'
    curvature ratios to use when they cannot tell it (muso_cli.valley.fit)."""
    on = cell.line(axis, at)
    usable = np.isfinite(cell.mean[on])
    if usable.sum() < 3:
        return None
    idx, bracketed, cliff = valley.window(cell.log2(axis)[on], cell.mean[on], usable)
    if UNSTABLE_SIDE[axis] == "below" and cliff is not None:
        cliff = None  # damping's cliff is below: a smaller damping diverged; the window stops there already
    x, seed, y = cell.points(axis, on[idx])
    if len(np.unique(x)) < 3:
        return None
    sigma, nu = noise if noise else (None, 0)
    return valley.fit(x, seed, y, bracketed=bracketed, cliff=cliff, draws=settings.resamples, rng=rng,
                      sigma=sigma, nu=nu, ratios=ratios)


def fit_summary(v: valley.Valley | None, level: float = 0.9) -> dict | None:
    """A fitted valley as a JSON-able dict (None: no fit)."""
    if v is None:
        return None
    out = {"x_hat": v.x_hat, "a_left": v.a_left, "a_right": v.a_right, "level": v.level, "sigma": v.sigma,
           "nu": v.nu, "window": list(v.window), "bracketed": v.bracketed, "symmetric": v.symmetric,
           "points": v.n_points, "interval": None}
    if v.draws:
        lo, hi = valley.quantiles(v.draws["x_hat"], level)
        # a vertex pushed to the end of its reach is not bounded there
        if not v.bracketed and hi >= v.window[1] + valley.REACH - valley.STEP:
            hi = math.inf
        if not v.bracketed and lo <= v.window[0] - valley.REACH + valley.STEP:
            lo = -math.inf
        out["interval"] = [lo, hi]
    return out


def fit_cells(grid: dict, settings, base: int | None = None) -> None:
    """Fit every cell's valleys through its optimum, the ``base`` scale's first. Cells whose points leave no
    residual freedom borrow the parameterization's pooled noise (σ² weighted by degrees of freedom over its other
    fits); cells whose points cannot tell the valley's asymmetry borrow the base cell's (its draws of a_R/a_L)."""
    rng = np.random.default_rng(settings.seed)
    pooled: dict[str, list[tuple[float, int]]] = {}
    order = sorted(grid.items(), key=lambda kv: (kv[0][0], kv[0][1] != base, kv[0][1]))
    for (param, scale), c in order:
        base_cell = grid.get((param, base))
        for a in c.swept:
            ratios = asymmetry(base_cell.fits.get(a)) if base_cell is not None and scale != base else None
            c.ratios[a] = ratios
            fit = fit_line(c, a, c.best, settings, rng, ratios=ratios) if c.best is not None else None
            c.fits[a] = fit
            if fit is not None and fit.draws and not fit.noise_borrowed:
                pooled.setdefault(param, []).append((fit.sigma, fit.nu))
    for (param, _), c in order:
        noise = pooled_noise(pooled.get(param, []))
        c.noise = noise
        for a in c.swept:
            if c.best is not None and (c.fits.get(a) is None or not c.fits[a].draws) and noise:
                c.fits[a] = fit_line(c, a, c.best, settings, rng, noise, c.ratios.get(a))


def asymmetry(fit: valley.Valley | None) -> np.ndarray | None:
    """The draws of a fit's curvature ratio a_R/a_L, when the fit could tell it (both sides fitted and curved);
    else None."""
    if fit is None or fit.symmetric or not fit.draws:
        return None
    left, right = fit.draws["a_left"], fit.draws["a_right"]
    ok = (left > 0) & (right > 0)
    return (right[ok] / left[ok]) if ok.sum() >= 10 else None


def pooled_noise(fits: list[tuple[float, int]]) -> tuple[float, int] | None:
    """(σ, ν) pooled over fits of (σ_i, ν_i): σ² = Σ ν_i σ_i² / Σ ν_i; None without any."""
    nu = sum(n for _, n in fits)
    if not nu:
        return None
    return math.sqrt(sum(n * s * s for s, n in fits) / nu), nu


def choose(cell: Cell) -> dict:
    """The setting a base cell transfers (``transfer.lr=base``): per swept axis the fitted optimum when its valley
    is bracketed (to 1/8 octave, so that replanning finds the same trials), else the grid optimum; with where it
    comes from."""
    g = cell.best
    out = {"lr": float(cell.lr[g]), "damping": _finite_or_none(cell.damping[g]), "source": "grid optimum"}
    fitted = []
    for a in cell.swept:
        fit = cell.fits.get(a)
        if fit is not None and fit.bracketed:
            out[a] = float(f"{2.0 ** (round(fit.x_hat * 8) / 8):.12g}")
            fitted.append(a)
    if fitted:
        out["source"] = "fitted optimum (" + ", ".join(fitted) + ")"
    return out
