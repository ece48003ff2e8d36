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
from .study.plan import verify_offsets

# The mean final train loss above its minimum against log2 lr relative to the optimum, measured: K-FAC (its
# defaults, trust region on) with MSE on Fashion-MNIST, width 64, 50 steps, 3 seeds (the demo's set-up; study
# mse-s50 of the demo search, docs/results.md "The demo"). Flat above the optimum: the trust region clips there.
MEASURED = {"x": [-3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0],
            "rise": [0.0865, 0.0607, 0.0400, 0.0235, 0.0116, 0.0040, 0.0, 0.0051, 0.0067]}


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
    floor: float = 0.14               # defaults: as measured on the demo's set-up (docs/verdicts.md, "Noise")
    floor_exponent: float = -0.05     # the best loss falls as width^floor_exponent
    left: float = 0.01
    right: float = 0.012
    bend: float = 1.5                 # saturating: beyond this many octaves below the optimum the rise is straight
    plateau: float = 0.75             # plateau: from this many octaves above the optimum on, the loss is flat
    cliff: float = 1.5                # diverged beyond this many octaves above the optimum (not with a plateau)
    seed_sd: float = 0.004
    point_sd: float = 0.0018
    verify: int = 5                   # transfer.verify: settings at each target width
    verify_step: float = 0.5          # transfer.verify_step: octaves between them
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
            inside = np.interp(u, MEASURED["x"], MEASURED["rise"])
            slope = (MEASURED["rise"][0] - MEASURED["rise"][1]) / 0.5  # straight on below the measured range
            below = MEASURED["rise"][0] + slope * (MEASURED["x"][0] - u)
            return np.where(u < MEASURED["x"][0], below, np.where(u > MEASURED["x"][-1], MEASURED["rise"][-1], inside))
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
    upper_holds / lower_holds ([per target width: the true regret ≤ the interval's upper end / ≥ its lower end])}."""
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
        for w in s.widths[1:]:
            rows += _rows(s, w, [x_t + o for o in verify_offsets(s.verify, s.verify_step)], offsets, rng)
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
    below, above = [], []  # the regret's upper end above the truth (what "transfers" rests on), its lower end below
    for r in pv["regret"]:
        true = s.loss(r["width"], x_t)
        if r["interval"] and true is not None:
            below.append(true - s.best(r["width"]) <= r["interval"][1])
            above.append(true - s.best(r["width"]) >= r["interval"][0])
    return {"verdict": pv["verdict"], "truth": "fails" if fails else "transfers", "x_t": x_t, "covered": covered,
            "upper_holds": below, "lower_holds": above}


def rates(s: Scenario, replicates: int, seed: int = 0) -> dict:
    """Over ``replicates`` studies of scenario ``s``: the fractions right / undecided / wrong, the truth's split,
    how often the base optimum's interval covers the truth, and how often the true regret lies below the
    regret's upper end (what "transfers" rests on) and above its lower end (what "fails" rests on)."""
    rng = np.random.default_rng(seed)
    outcomes = [replicate(s, rng) for _ in range(replicates)]
    counts = Counter("right" if o["verdict"] == o["truth"] else "undecided" if o["verdict"] == "undecided"
                     else "wrong" for o in outcomes)
    truths = Counter(o["truth"] for o in outcomes)
    covered = [o["covered"] for o in outcomes if o.get("covered") is not None]
    upper = [c for o in outcomes for c in o.get("upper_holds", [])]
    lower = [c for o in outcomes for c in o.get("lower_holds", [])]
    share = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
    return {"right": counts["right"] / replicates, "undecided": counts["undecided"] / replicates,
            "wrong": counts["wrong"] / replicates, "truly fails": truths["fails"] / replicates,
            "x* covered": share(covered), "R ≤ upper": share(upper), "R ≥ lower": share(lower),
            "replicates": replicates}


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
