"""The verdict on studies whose answer is known (muso_cli.calibrate): simulated valleys with the noise of a real
study, judged exactly as a real study is. A rule that decides is proven on known answers: wrong-decided at most
5% everywhere; right at least 90% for an optimum that stays put or drifts an octave or more, with 3 seeds on a
half-octave grid, and 80% on an octave grid. The full table (more replicates, 2 and 5 seeds) is
scripts/calibrate_verdict.py's, in docs/verdicts.md."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from muso_cli import calibrate
from muso_cli.calibrate import Scenario


def test_a_stay_and_a_two_octave_drift_are_told_apart_on_the_sweep_transfer_loop():
    """The advertised loop (the grid at the base width, 5 verification points at 256 and 1024): a few replicates
    of each end, none wrong and nearly all decided."""
    for drift, truth in ((0.0, "transfers"), (-2.0, "fails")):
        outs = [calibrate.replicate(Scenario(drift=drift), np.random.default_rng(k)) for k in range(6)]
        assert all(o["truth"] == truth for o in outs)
        assert sum(o["verdict"] == truth for o in outs) >= 5 and not any(o["verdict"] not in (truth, "undecided")
                                                                         for o in outs), outs


@pytest.mark.slow
@pytest.mark.parametrize("step, right", [(0.5, 0.9), (1.0, 0.8)])
def test_the_verdict_meets_its_targets_on_known_valleys(step, right):
    rows = calibrate.table(Scenario(), steps=(step,), seeds=(2, 3, 5), drifts=(0.0, -0.5, -1.0, -2.0),
                           replicates=25, seed=1)
    assert (rows.wrong <= 0.05).all(), rows
    targets = rows[(rows.seeds == 3) & rows.drift.isin([0.0, -1.0, -2.0])]
    assert (targets.right >= right).all(), targets


@pytest.mark.slow
def test_the_verdict_stays_right_when_the_valley_is_not_the_model():
    """The measured shape (a real study's curve, flat above its optimum where the trust region clips) and the grid
    at every width: the fitted model is an approximation there, and the rule must still not decide wrongly; on
    the grid design (more points at every width) it must also decide."""
    measured = calibrate.table(Scenario(shape="measured"), steps=(0.5,), seeds=(3,), drifts=(0.0, -1.0, -2.0),
                               replicates=20, seed=2)
    assert (measured.wrong <= 0.05).all(), measured
    grid = calibrate.table(Scenario(design="grid"), steps=(0.5,), seeds=(3,), drifts=(0.0, -1.0), replicates=20,
                           seed=2)
    assert (grid.wrong <= 0.05).all() and (grid.right >= 0.8).all(), grid


def test_three_points_on_a_plateau_never_pass_for_a_transfer():
    """K-FAC's trust region clips every step above some lr: the loss is flat there (measured: docs/verdicts.md).
    The transferred lr lands two octaves up that plateau at 1024; its three verification points show no valley,
    and the verdict must not read the flatness as a transfer: undecided (the point below decides) or fails."""
    r = calibrate.rates(Scenario(shape="plateau", drift=-2.0), 10, seed=4)
    assert r["truly fails"] == 1.0 and r["wrong"] == 0.0


def test_the_regret_bounds_hold_about_as_often_as_they_say():
    """What "transfers" rests on (the true regret below the upper end) and what "fails" rests on (above the lower
    end): each one-sided 95% bound, measured on known valleys."""
    r = calibrate.rates(replace(Scenario(), drift=-1.0), 12, seed=3)
    assert r["wrong"] == 0 and r["R ≤ upper"] >= 0.8 and r["R ≥ lower"] >= 0.75
