"""Fitted valleys: the loss against x = log2 of a hyperparameter (lr, or damping) near its optimum, from the points
of one cell (one parameterization at one scale), every seed pooled with its own offset. Pure numpy.

The model, for the finished points (x_i, seed s_i, loss y_i) of the fit window::

    y_i = α_{s_i} + a_L·(x_i − x̂)²   for x_i < x̂          (an asymmetric parabola: the loss rises at its own
    y_i = α_{s_i} + a_R·(x_i − x̂)²   for x_i ≥ x̂           rate on each side; a_L, a_R ≥ 0)
                  + ε_i,  ε_i ~ N(0, σ²)

α_s is seed s's level at the minimum (seeds differ by an offset: the same initialisation and data order at every
lr), x̂ the sub-grid optimum. Why this model: near a minimum every smooth loss is quadratic, and learning-rate
valleys are not symmetric (a slow rise towards small lr, a steep one towards the stability cliff), so one
curvature per side; beyond an octave or so no quadratic holds, so the fit uses a window of the usable settings
within ``HALF_WIDTH`` octaves of the grid optimum (at least its nearest neighbour on each side; fewer where the
grid ends or a setting diverged: the cliff, beyond which the vertex may not go). With fewer than two points on a side the two sides share one
curvature ratio, which the points cannot tell: 1, or borrowed from a valley that could tell it (the same
parameterization's at the base width: near µP's transfer, a valley keeps its shape across widths). The seed offsets are removed exactly by centring each seed's
points (fixed effects), so unbalanced seeds (a seed missing at some lr) are fine.

Fitting: for each candidate vertex on a grid of 1/64 octave, the curvatures are a linear non-negative least
squares problem (solved in closed form); the vertex is the candidate of least squared error (profile least
squares). Everything is vectorised over candidates and resamples.

Uncertainty: a parametric bootstrap (:func:`fit` with ``draws``): the fitted curve plus Gaussian noise of a
standard deviation drawn from σ̂'s own sampling distribution (σ*² = σ̂²·ν/χ²_ν, ν the residual degrees of
freedom), refitted; so few degrees of freedom widen the intervals as a t distribution would. With no residual
degrees of freedom (3 settings × 1 seed) σ comes from elsewhere (``sigma``, ``nu``: e.g. pooled over the other
cells of the parameterization) or there is no interval. The coverage of the intervals this gives is measured on
known valleys (tests/test_calibration.py, docs/verdicts.md), not assumed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

HALF_WIDTH = 1.25        # octaves: the fit window's reach on each side of the grid optimum (at least 1 setting)
STEP = 1.0 / 64          # candidate vertices: octaves between them
REACH = 1.0              # an unbracketed vertex may lie this many octaves beyond the window (then: unbounded)
ASYMMETRY = 4.0          # a_R / a_L in [1/4, 4] where the points cannot tell (3 or 4 settings): see the docstring


@dataclass
class Valley:
    """A fitted valley (see the module docstring). ``x`` values in log2 units (octaves).

    x_hat: the vertex (sub-grid optimum); a_left / a_right: curvatures (loss per octave²); level: mean of the
    seeds' minima α̂_s; sigma / nu: the residual standard deviation and its degrees of freedom (sigma None: no
    estimate); window: (lowest, highest) x fitted; bracketed: the window has points on both sides of the grid
    optimum (or a diverged setting bounds it above: ``cliff``); symmetric: one curvature for both sides.
    draws: bootstrap draws {x_hat, a_left, a_right} (arrays of the resample count), empty without noise estimate.
    """

    x_hat: float
    a_left: float
    a_right: float
    level: float
    sigma: float | None
    nu: int
    window: tuple[float, float]
    bracketed: bool
    symmetric: bool
    cliff: float | None = None
    n_points: int = 0
    seeds: int = 0
    noise_borrowed: bool = False   # sigma / nu came from elsewhere (the points left no residual freedom)
    seed_levels: dict = field(default_factory=dict)  # seed → its level α̂_s at the minimum
    pure_sigma: float | None = None  # the points' noise about their own means (seeds as offsets), ν = pure_nu
    pure_nu: int = 0
    open_low: bool = False         # the loss does not rise out of the noise towards the window's low end
    open_high: bool = False        # … towards its high end (a plateau, or the grid's edge): the optimum may lie beyond
    draws: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def shape(self, x: float | np.ndarray) -> float | np.ndarray:
        """The fitted loss above the valley's minimum at ``x`` (≥ 0)."""
        d = np.asarray(x, float) - self.x_hat
        return np.where(d < 0, self.a_left, self.a_right) * d * d

    def shape_draws(self, x: float) -> np.ndarray:
        """:meth:`shape` at ``x`` under every bootstrap draw."""
        d = x - self.draws["x_hat"]
        return np.where(d < 0, self.draws["a_left"], self.draws["a_right"]) * d * d

    def covers(self, x: float) -> bool:
        """Whether ``x`` lies within the fitted window (the model is trusted there, not beyond)."""
        return self.window[0] - 1e-9 <= x <= self.window[1] + 1e-9


def window(xs: np.ndarray, means: np.ndarray, usable: np.ndarray) -> tuple[np.ndarray, bool, float | None]:
    """(indices of the settings to fit, bracketed, cliff) along one axis.

    xs: (G,) sorted log2 values of the settings on the line; means: (G,) their mean loss (inf: a diverged seed);
    usable: (G,) finite mean. The window is the grid optimum and the usable settings within HALF_WIDTH octaves
    of it on each side (at least the nearest one; further on one side when that makes 3 settings), stopping at
    the first unusable one (a diverged setting is a cliff: on the larger-x side it bounds the vertex). Bracketed: a usable setting on both sides, or a cliff
    right above the optimum."""
    best = int(np.argmin(np.where(usable, means, np.inf)))
    chosen = [best]
    for step in (-1, 1):
        j = best + step
        while 0 <= j < len(xs) and usable[j] and (j == best + step or abs(xs[j] - xs[best]) <= HALF_WIDTH + 1e-9):
            chosen.append(j)
            j += step
    for step in (-1, 1):  # fewer than 3 (a cliff or the grid's end on one side): reach further on the other
        j = (min(chosen) if step < 0 else max(chosen)) + step
        while len(chosen) < 3 and 0 <= j < len(xs) and usable[j]:
            chosen.append(j)
            j += step
    chosen.sort()
    above = best + 1
    cliff = float(xs[above]) if above < len(xs) and not usable[above] and np.isinf(means[above]) else None
    below_ok = chosen[0] < best
    above_ok = chosen[-1] > best or cliff is not None
    return np.array(chosen), below_ok and above_ok, cliff


def _centre_by_seed(m: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """``m`` (..., N) with each seed's mean removed along the last axis (fixed seed offsets)."""
    same = (seed[:, None] == seed[None, :]).astype(float)
    return m - m @ (same / same.sum(axis=0, keepdims=True))


def _profile(x: np.ndarray, seed: np.ndarray, y: np.ndarray, centres: np.ndarray, ratio: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares with curvatures ≥ 0 for every candidate vertex, for every row of ``y`` (B, N).

    ``ratio`` None: two free curvatures (left, right). Else (B,): one curvature a with a_R = ratio·a_L (the sides'
    ratio fixed per row). Returns (best candidate index (B,), curvatures (B, 2): left, right, SSE (B,))."""
    tiny = 1e-300
    d = x[None, :] - centres[:, None]                                     # (C, N)
    sq, left_side = d * d, d < 0
    yc = _centre_by_seed(y, seed)                                         # (B, N)
    total = (yc * yc).sum(axis=1)                                         # (B,)
    rows = np.arange(len(y))
    if ratio is not None:
        u = sq[None] * np.where(left_side[None], 1.0, ratio[:, None, None])  # (B, C, N)
        u = _centre_by_seed(u, seed)
        g = (u * u).sum(axis=2)                                           # (B, C)
        p = np.einsum("bcn,bn->bc", u, yc)
        a = np.maximum(p, 0.0) / np.maximum(g, tiny)
        sse = total[:, None] - 2 * a * p + a * a * g
        pick = np.argmin(sse, axis=1)
        al = a[rows, pick]
        return pick, np.stack([al, al * ratio], axis=1), sse[rows, pick]
    u = _centre_by_seed(np.stack([np.where(left_side, sq, 0.0), np.where(left_side, 0.0, sq)], axis=1), seed)
    g11, g12, g22 = ((u[:, i] * u[:, j]).sum(axis=1) for i, j in ((0, 0), (0, 1), (1, 1)))   # (C,)
    p1, p2 = yc @ u[:, 0].T, yc @ u[:, 1].T                               # (B, C)
    det = g11 * g22 - g12 * g12
    with np.errstate(divide="ignore", invalid="ignore"):
        a1 = np.where(det > tiny, (g22 * p1 - g12 * p2) / det, -1.0)
        a2 = np.where(det > tiny, (g11 * p2 - g12 * p1) / det, -1.0)
    both = (a1 >= 0) & (a2 >= 0)
    sse_both = total[:, None] - (a1 * p1 + a2 * p2)
    l1 = np.maximum(p1, 0.0) / np.maximum(g11, tiny)
    l2 = np.maximum(p2, 0.0) / np.maximum(g22, tiny)
    sse_1 = total[:, None] - 2 * l1 * p1 + l1 * l1 * g11
    sse_2 = total[:, None] - 2 * l2 * p2 + l2 * l2 * g22
    sse = np.where(both, sse_both, np.minimum(sse_1, sse_2))
    left = np.where(both, a1, np.where(sse_1 <= sse_2, l1, 0.0))
    right = np.where(both, a2, np.where(sse_1 <= sse_2, 0.0, l2))
    pick = np.argmin(sse, axis=1)
    return pick, np.stack([left[rows, pick], right[rows, pick]], axis=1), sse[rows, pick]


def fit(x: np.ndarray, seed: np.ndarray, y: np.ndarray, *, bracketed: bool = True, cliff: float | None = None,
        draws: int = 0, rng: np.random.Generator | None = None, sigma: float | None = None, nu: int = 0,
        ratios: np.ndarray | None = None) -> Valley:
    """Fit the valley to the window's points (x (N,) log2, seed (N,) labels, y (N,) finite losses).

    ``bracketed`` False lets the vertex go up to REACH octaves beyond the window; ``cliff`` bounds it below that
    x. ``draws`` > 0: that many bootstrap draws (needs a noise estimate: the fit's own residual degrees of
    freedom, or ``sigma`` with ``nu`` degrees of freedom from elsewhere). ``ratios``: draws of the sides'
    curvature ratio a_R/a_L from a valley that could tell it (the same parameterization's at the base width),
    for a fit whose points cannot (3 or 4 settings): its median fixes the point estimate's ratio and each
    bootstrap draw takes one of them; without it the ratio is 1 and the draws spread over [1/ASYMMETRY,
    ASYMMETRY]. Raises ValueError for fewer than 3 distinct x."""
    x, seed, y = np.asarray(x, float), np.asarray(seed), np.asarray(y, float)
    key = np.round(x, 9)
    distinct = np.unique(key)
    if len(distinct) < 3:
        raise ValueError("a valley needs at least 3 distinct settings")
    means = np.array([y[key == v].mean() for v in distinct])
    best = distinct[int(np.argmin(means))]
    symmetric = len(distinct) < 5 or min((distinct < best).sum(), (distinct > best).sum()) < 2
    lo, hi = distinct[0], distinct[-1]
    if bracketed:  # the grid brackets the optimum: do the points rise out of the noise on both sides?
        open_low, open_high = _flat_ends(x, seed, y, key, distinct, means, cliff, sigma, nu, symmetric)
        bracketed = not (open_low or open_high)
    else:
        open_low, open_high = best <= lo, best >= hi
    reach = 0.0 if bracketed else REACH
    top = hi + reach if cliff is None else min(hi + reach, cliff - STEP)
    centres = np.arange(lo - reach, top + STEP / 2, STEP)
    borrowed = symmetric and ratios is not None and len(ratios) > 0
    point_ratio = np.array([float(np.median(ratios))]) if borrowed else np.ones(1)
    pick, curv, sse = _profile(x, seed, y[None, :], centres, point_ratio if symmetric else None)
    x_hat = float(centres[pick[0]])
    a_left, a_right = (float(c) for c in curv[0])
    seeds = len(np.unique(seed))
    k = 1 if symmetric else 2
    own_nu = len(x) - seeds - k - 1
    if own_nu >= 1:
        sigma_hat, nu_hat = math.sqrt(max(float(sse[0]), 0.0) / own_nu), own_nu
    elif sigma is not None and nu >= 1:
        sigma_hat, nu_hat = float(sigma), int(nu)
    else:
        sigma_hat, nu_hat = None, 0
    d = x - x_hat
    shape = np.where(d < 0, a_left, a_right) * d * d
    offsets = {s: float(np.mean((y - shape)[seed == s])) for s in np.unique(seed)}
    pure_sigma, pure_nu = _pure_error(key, seed, y)
    valley = Valley(x_hat, a_left, a_right, float(np.mean(list(offsets.values()))), sigma_hat, nu_hat,
                    (float(lo), float(hi)), bracketed, symmetric, cliff, len(x), seeds, own_nu < 1,
                    pure_sigma=pure_sigma, pure_nu=pure_nu, seed_levels=offsets,
                    open_low=bool(open_low), open_high=bool(open_high))
    if draws and sigma_hat is not None:
        rng = rng or np.random.default_rng(0)
        fitted = shape + np.array([offsets[s] for s in seed])
        scale = sigma_hat * np.sqrt(nu_hat / rng.chisquare(nu_hat, size=draws))
        noisy = fitted[None, :] + scale[:, None] * rng.standard_normal((draws, len(x)))
        # a fit that cannot tell the sides' curvatures apart: each draw takes a ratio, borrowed or from ASYMMETRY
        ratio = None
        if borrowed:
            ratio = rng.choice(ratios, size=draws)
        elif symmetric:
            ratio = np.exp(rng.uniform(-math.log(ASYMMETRY), math.log(ASYMMETRY), draws))
        pick_b, curv_b, _ = _profile(x, seed, noisy, centres, ratio)
        valley.draws = {"x_hat": centres[pick_b], "a_left": curv_b[:, 0], "a_right": curv_b[:, 1]}
    return valley


def _pure_error(key: np.ndarray, seed: np.ndarray, y: np.ndarray) -> tuple[float | None, int]:
    """(σ of the points about the additive model setting + seed: their noise whatever the valley's shape, its
    degrees of freedom); (None, 0) with fewer than 2 seeds (the additive model is then the data)."""
    settings, seeds = np.unique(key), np.unique(seed)
    nu = len(y) - len(settings) - len(seeds) + 1
    if len(seeds) < 2 or nu < 1:
        return None, 0
    design = np.concatenate([(key[:, None] == settings[None, :]).astype(float),
                             (seed[:, None] == seeds[None, 1:]).astype(float)], axis=1)
    fitted = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    pure = float(((y - fitted) ** 2).sum())
    return (math.sqrt(pure / nu) if pure > 0 else None), nu


RISE_Z = 1.64  # a window's end counts as risen when it lies this many standard errors above the best setting


def _flat_ends(x, seed, y, key, distinct, means, cliff, sigma, nu, symmetric) -> tuple[bool, bool]:
    """(open low, open high): both when neither end of the window rises above the best setting by RISE_Z standard
    errors of a paired difference (σ from a quick fit of the window, or the one given): a plateau (a trust region
    clipping every step, a saturated loss) looks bracketed on the grid but locates no optimum. A cliff bounds the
    high end."""
    if sigma is None:
        pick = _profile(x, seed, y[None, :], np.arange(distinct[0], distinct[-1] + STEP / 2, STEP),
                        np.ones(1) if symmetric else None)
        dof = len(x) - len(np.unique(seed)) - (1 if symmetric else 2) - 1
        if dof < 1:
            return False, False  # no noise to judge by: the grid's bracketing stands
        sigma = math.sqrt(max(float(pick[2][0]), 0.0) / dof)
    b = int(np.argmin(means))
    n_best = (key == distinct[b]).sum()

    def risen(end: int) -> bool:
        n_end = (key == distinct[end]).sum()
        return means[end] - means[b] > RISE_Z * sigma * math.sqrt(1 / n_end + 1 / n_best)
    # one end rising is enough: a convex loss flat towards the other end cannot fall much below it there; both
    # flat is no valley at all (a plateau)
    flat = not risen(0) and (cliff is None and not risen(len(distinct) - 1))
    return flat, flat


def quantiles(values: np.ndarray, level: float) -> list[float]:
    """The two-sided ``level`` interval of ``values``: [(1 − level)/2, (1 + level)/2] quantiles."""
    return [float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))]
