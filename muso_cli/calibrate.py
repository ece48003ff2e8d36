"""Known-answer studies for the verdict: simulated studies whose answer is known, judged by muso_cli.verdict exactly
as a real study is, and the rates of right, undecided and wrong answers (and how often the intervals cover the
truth). What tests/test_calibration.py asserts and scripts/calibrate_verdict.py tabulates (docs/verdicts.md).

A :class:`Scenario` is a valley (its shape, floor, curvatures and stability cliff), the noise of a real study
(each seed an offset of the whole curve, plus point noise), the base width's lr grid (its step in octaves, at a
random phase), the seeds, the drift of the optimum by the largest width, and the design:

- ``transfer``: the advertised loop: the grid at the base width only, then the transferred lr (the verdict's
  choice from the base width) and ``verify`` − 1 points around it at each target width, then the verdict;
- ``grid``: the grid at every width (the paper's picture).

The truth of a replicate: the transferred lr's true regret at each target width, R = f_w(x_t) − min f_w, against
the δ the verdict states there (δ is part of the question it answers: "does the transfer cost more than δ?"; with
study.delta=auto it is computed from the study, and the verdict prints it); *fails* when some width's R > δ or
the transferred lr lies past the true cliff there, else *transfers*. A verdict is right when it says that, wrong
when it says the other, undecided otherwise.

The valley shapes: ``quadratic`` (the model the verdict fits: an asymmetric parabola), ``saturating`` (quadratic
near the optimum, straight further out, as real losses flatten at small lr: the model is then wrong beyond the
window), ``plateau`` (flat above the optimum from ``plateau`` octaves on, as K-FAC's trust region makes it when it
clips every step: measured in docs/verdicts.md; three verification points on the plateau show no valley at all),
and ``measured`` (a real study's mean curve, :data:`MEASURED`, interpolated monotonically on each side).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from . import verdict

# The mean final train loss of a real study against log2 lr relative to its optimum (K-FAC somup, MLP on
# Fashion-MNIST, width 64, scripts/calibrate_verdict.py --measure; docs/verdicts.md): the loss above the minimum.
MEASURED = {"x": [-3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0],
            "rise": [0.120, 0.085, 0.058, 0.036, 0.019, 0.006, 0.0, 0.010, 0.040]}


@dataclass(frozen=True)
class Scenario:
    """One kind of study whose answer is known (see the module docstring). Losses in the metric's units;
    curvatures in loss per octave²; drift and cliff in octaves."""

    step: float = 0.5
    seeds: int = 3
    drift: float = 0.0
    design: str = "transfer"
    shape: str = "saturating"
    widths: tuple[int, ...] = (64, 256, 1024)
    floor: float = 0.3
    floor_exponent: float = -0.1      # the best loss falls as width^floor_exponent
    left: float = 0.02
    right: float = 0.06
    bend: float = 1.5                 # saturating: beyond this many octaves below the optimum the rise is straight
    plateau: float = 0.75             # plateau: from this many octaves above the optimum on, the loss is flat
    cliff: float = 1.5                # diverged beyond this many octaves above the optimum (not with a plateau)
    seed_sd: float = 0.004
    point_sd: float = 0.0015
    verify: int = 3
    delta_relative: float = 0.01

    def centre(self, width: int) -> float:
        """log2 of the true optimum at ``width`` (the base width's is 0)."""
        base, top = self.widths[0], self.widths[-1]
        return self.drift * math.log2(width / base) / math.log2(top / base)

    def best(self, width: int) -> float:
        return self.floor * (width / self.widths[0]) ** self.floor_exponent

    def rise(self, u: np.ndarray | float) -> np.ndarray:
        """The loss above the minimum at u octaves from the optimum (the valley's shape)."""
        u = np.asarray(u, float)
        if self.shape == "measured":
            scale = self.right / 0.04   # the measured curve's right curvature is about 0.04 per octave²
            below = np.interp(u, MEASURED["x"], MEASURED["rise"])
            far = u < MEASURED["x"][0]
            slope = (MEASURED["rise"][0] - MEASURED["rise"][1]) / 0.5
            return scale * np.where(far, MEASURED["rise"][0] + slope * (MEASURED["x"][0] - u), below)
        left = self.left * u * u
        if self.shape == "saturating":
            b = self.bend
            left = np.where(u < -b, self.left * (b * b + 2 * b * (-u - b)), left)
        right = self.right * u * u
        if self.shape == "plateau":  # a trust region clips every step: a larger lr changes nothing
            right = self.right * np.minimum(u, self.plateau) ** 2
        return np.where(u < 0, left, right)

    def loss(self, width: int, x: float) -> float | None:
        """The true mean loss at log2 lr ``x`` and ``width`` (None: past the cliff, diverged)."""
        u = x - self.centre(width)
        return None if u > self.cliff and self.shape != "plateau" else self.best(width) + float(self.rise(u))

    def true_delta(self, width: int) -> float:
        return max(self.delta_relative * self.best(width), self.seed_sd)


def _rows(s: Scenario, width: int, xs, offsets: np.ndarray, rng: np.random.Generator) -> list[dict]:
    rows = []
    for x in xs:
        mean = s.loss(width, x)
        for seed in range(s.seeds):
            value = math.inf if mean is None else mean + offsets[seed] + rng.normal(0, s.point_sd)
            rows.append({"param": "sp", "width": width, "lr": 2.0 ** x, "damping": math.nan, "seed": seed,
                         "status": "ok" if math.isfinite(value) else "diverged", "objective": value})
    return rows


def replicate(s: Scenario, rng: np.random.Generator, settings: verdict.Settings = verdict.Settings()) -> dict:
    """One simulated study, judged: {verdict, truth, x_t, covered (the base optimum's interval covers the truth),
    regret_covered ([per target width: the regret's interval covers the true regret])}."""
    offsets = rng.normal(0, s.seed_sd, s.seeds)
    phase = rng.uniform(0, s.step)
    base = s.widths[0]
    span = (-3.0 - max(0.0, -s.drift), 2.0 + max(0.0, s.drift))
    grid = np.arange(span[0] + phase, span[1], s.step)
    rows = _rows(s, base, grid, offsets, rng)
    if s.design == "grid":
        for w in s.widths[1:]:
            rows += _rows(s, w, grid, offsets, rng)
        judged = verdict.judge(rows, base, settings)
    else:
        first = verdict.judge(rows, base, settings)["params"]["sp"]
        if first["transferred"] is None:
            return {"verdict": "no optimum", "truth": "fails"}
        x_t = math.log2(first["transferred"]["lr"])
        offs = [0.0] + [k * 0.5 * sign for k in range(1, s.verify) for sign in (-1, 1)]
        for w in s.widths[1:]:
            rows += _rows(s, w, [x_t + o for o in sorted(offs[:s.verify])], offsets, rng)
        judged = verdict.judge(rows, base, settings)
    pv = judged["params"]["sp"]
    if pv["transferred"] is None:
        return {"verdict": pv["verdict"], "truth": "fails"}
    x_t = math.log2(pv["transferred"]["lr"])
    delta = {r["width"]: r["delta"] for r in pv["regret"]}  # the δ the verdict states is part of its question
    fails = any(s.loss(w, x_t) is None or s.loss(w, x_t) - s.best(w) > delta.get(w, s.true_delta(w))
                for w in s.widths[1:])
    cell = next(c for c in judged["cells"] if c["width"] == base)
    fit = cell["optimum"]["axes"]["lr"]["fit"] if cell["optimum"] and "lr" in cell["optimum"]["axes"] else None
    covered = None
    if fit and fit["interval"]:
        covered = fit["interval"][0] <= s.centre(base) <= fit["interval"][1]
    regret_covered = []
    for r in pv["regret"]:
        true = s.loss(r["width"], x_t)
        if r["interval"] and true is not None:
            regret_covered.append(r["interval"][0] <= true - s.best(r["width"]) <= r["interval"][1])
    return {"verdict": pv["verdict"], "truth": "fails" if fails else "transfers", "x_t": x_t, "covered": covered,
            "regret_covered": regret_covered}


def rates(s: Scenario, replicates: int, seed: int = 0) -> dict:
    """Over ``replicates`` studies of scenario ``s``: the fractions right / undecided / wrong, the truth's split,
    and the coverage of the base optimum's and the regrets' intervals."""
    rng = np.random.default_rng(seed)
    outcomes = [replicate(s, rng) for _ in range(replicates)]
    counts = Counter("right" if o["verdict"] == o["truth"] else "undecided" if o["verdict"] == "undecided"
                     else "wrong" for o in outcomes)
    truths = Counter(o["truth"] for o in outcomes)
    covered = [o["covered"] for o in outcomes if o.get("covered") is not None]
    regret = [c for o in outcomes for c in o.get("regret_covered", [])]
    return {"right": counts["right"] / replicates, "undecided": counts["undecided"] / replicates,
            "wrong": counts["wrong"] / replicates, "truly fails": truths["fails"] / replicates,
            "x* covered": float(np.mean(covered)) if covered else math.nan,
            "regret covered": float(np.mean(regret)) if regret else math.nan, "replicates": replicates}


def table(base: Scenario, steps=(1.0, 0.5), seeds=(2, 3, 5), drifts=(0.0, -0.5, -1.0, -2.0), replicates: int = 100,
          seed: int = 0) -> pd.DataFrame:
    """The calibration table: one row per (grid step, seeds, drift) of ``base`` with :func:`rates`."""
    rows = []
    for step in steps:
        for n in seeds:
            for drift in drifts:
                s = replace(base, step=step, seeds=n, drift=drift)
                rows.append({"step": step, "seeds": n, "drift": drift, **rates(s, replicates, seed)})
    return pd.DataFrame(rows)
