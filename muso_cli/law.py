"""The scale law of an optimum: log2 x̂_w = a + β·log2(w / base) fitted to the sub-grid optima of ≥ 3 scales (width,
or depth), with β's interval, a check that leaves the largest scale out, and the prediction at any scale. Pure.

Each scale contributes its fitted optimum x̂_w and its bootstrap draws (muso_cli.valley). The line is weighted
least squares with weights 1 / var(draws of x̂_w); β's interval comes from refitting the line to every joint
draw (one draw of every scale's x̂), so it carries both the seeds' noise and the fits' uncertainty. Under µP the
law should be flat: whether β's interval contains 0 is what the report says.
"""
from __future__ import annotations

import math

import numpy as np

MIN_SCALES = 3


def _line(u: np.ndarray, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares (a, β) of x ≈ a + β·u for every row of ``x`` (R, K); u (K,), w (K,)."""
    sw = w.sum()
    ub = (w * u).sum() / sw
    xb = (x * w).sum(axis=-1) / sw
    su = (w * (u - ub) ** 2).sum()
    beta = ((x - xb[..., None]) * (w * (u - ub))).sum(axis=-1) / su
    return xb - beta * ub, beta


def fit(scales: list[int], base: int, x_hat: list[float], draws: list[np.ndarray], level: float) -> dict | None:
    """The law from the optima at ``scales`` (None with fewer than MIN_SCALES). ``draws``: per scale, the bootstrap
    draws of its x̂ (equal lengths). Returns {a, beta, beta_interval, scales, holdout} with holdout the check:
    the law fitted without the largest scale, its prediction there with an interval, and the fitted optimum
    there with its own."""
    if len(scales) < MIN_SCALES:
        return None
    u = np.log2(np.asarray(scales, float) / base)
    x = np.asarray(x_hat, float)
    d = np.stack(draws, axis=1)                               # (R, K)
    var = np.maximum(d.var(axis=0), 1e-6)
    w = 1.0 / var
    a, beta = _line(u, x[None, :], w)
    a_d, beta_d = _line(u, d, w)
    q = ((1 - level) / 2, (1 + level) / 2)
    out = {"a": float(a[0]), "beta": float(beta[0]), "beta_interval": [float(np.quantile(beta_d, p)) for p in q],
           "scales": [int(s) for s in scales], "holdout": None}
    # the check: the other scales (≥ 2) predict the largest
    keep = np.argsort(u)[:-1]
    a_h, beta_h = _line(u[keep], d[:, keep], w[keep])
    largest = int(np.argmax(u))
    predicted = a_h + beta_h * u[largest]
    a0, b0 = _line(u[keep], x[None, keep], w[keep])
    out["holdout"] = {"scale": int(scales[largest]), "predicted": float(a0[0] + b0[0] * u[largest]),
                      "predicted_interval": [float(np.quantile(predicted, p)) for p in q],
                      "fitted": float(x[largest]), "fitted_interval": [float(np.quantile(d[:, largest], p))
                                                                       for p in q]}
    lo_p, hi_p = out["holdout"]["predicted_interval"]
    lo_f, hi_f = out["holdout"]["fitted_interval"]
    out["holdout"]["consistent"] = bool(lo_p <= hi_f and lo_f <= hi_p)
    return out


def predict(law: dict, scale: int, base: int) -> float:
    """log2 x̂ the law gives at ``scale``."""
    return law["a"] + law["beta"] * math.log2(scale / base)
