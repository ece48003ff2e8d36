"""The verdict rules on hand-made tables of trial outcomes: no optimum from nothing, edges and cliffs named, the
fitted valley's optimum where the parabola says it is, the transferred setting's regret against δ deciding
transfers / fails, what would decide an undecided one, and the width law."""
from __future__ import annotations

import math

import numpy as np
import pytest

from muso_cli import cells, valley, verdict
from muso_cli.errors import UsageError
from muso_cli.verdict import Settings, judge

NAN = math.nan


def table(outcome, *, params=("sp",), widths=(64,), xs=range(-8, 1), dampings=(NAN,), seeds=(0,)):
    """Rows for every param × width × log2 lr in ``xs`` × damping × seed; ``outcome(param, width, x, damping,
    seed)`` gives a loss, "diverged", "failed" or None (pending). ``xs`` may be a function of the width."""
    rows = []
    for p in params:
        for w in widths:
            for x in (xs(w) if callable(xs) else xs):
                for d in dampings:
                    for s in seeds:
                        o = outcome(p, w, x, d, s)
                        status = {"diverged": "diverged", "failed": "failed", None: "pending"}.get(o, "ok")
                        value = math.inf if o == "diverged" else NAN if status != "ok" else float(o)
                        rows.append({"param": p, "width": w, "lr": 2.0 ** x, "damping": d, "seed": s,
                                     "status": status, "objective": value})
    return rows


def bowl(centre: float, floor: float = 0.1, left: float = 0.02, right: float = 0.06):
    """A learning-rate valley: an asymmetric parabola in log2 lr, steeper towards large lr."""
    return lambda x: floor + (left if x < centre else right) * (x - centre) ** 2


def noisy(centre_of, sd: float = 0.0005, seed_sd: float = 0.003, cliff: float | None = None, seed: int = 0):
    """An outcome: the bowl around ``centre_of(width)``, each seed shifted by its own offset, plus point noise, and
    diverged beyond ``cliff`` octaves above the centre."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0, seed_sd, 100)

    def outcome(p, w, x, d, s):
        c = centre_of(w)
        if cliff is not None and x - c > cliff:
            return "diverged"
        return bowl(c)(x) + offsets[s] + rng.normal(0, sd)
    return outcome


HALF = np.arange(-8, -1.9, 0.5)   # a half-octave grid around 2^-4


# ------------------------------------------------------------------------------------------------------
# No optimum from nothing

def test_a_base_cell_whose_every_setting_diverged_gives_no_optimum_no_drift_and_no_transfer():
    rows = table(lambda p, w, x, d, s: "diverged" if w == 64 else bowl(-4)(x), widths=(64, 256))
    v = judge(rows, 64)
    sp = v["params"]["sp"]
    assert sp["verdict"] == "no optimum" and sp["drift"] == {} and sp["regret"] == []
    assert sp["sentence"] == ("sp: no optimum — all 9 settings diverged at the base width 64: widen study.lr "
                              "downwards; no transfer and no drift.")
    base = next(c for c in v["cells"] if c["width"] == 64)
    assert base["optimum"] is None and base["counts"]["diverged"] == 9
    # a damped optimizer with a fixed damping: raising the damping is the other way out
    damped = judge(table(lambda *a: "diverged", dampings=(1e-4,)), 64)
    assert "widen study.lr downwards or raise the damping" in damped["params"]["sp"]["sentence"]


def test_a_wider_cell_without_optimum_leaves_the_verdict_undecided_and_says_why():
    def outcome(p, w, x, d, s):
        if w == 1024:
            return "failed" if x in (-8, -7) else "diverged"
        return bowl(-4)(x) + 0.001 * s
    v = judge(table(outcome, widths=(64, 256, 1024), seeds=(0, 1, 2)), 64)
    sp = v["params"]["sp"]
    at_1024 = next(r for r in sp["regret"] if r["width"] == 1024)
    # the transferred lr (the base valley's fitted optimum, between grid points) was not tried at 1024, but the
    # settings either side of it diverged there
    assert at_1024["verdict"] == "fails" and at_1024["diverged"] and "either side of it" in at_1024["why"]
    assert sp["verdict"] == "fails" and "diverged at width 1024" in sp["sentence"]


def test_pending_settings_are_not_an_optimum():
    cell = cells.cells(table(lambda p, w, x, d, s: None if x > -8 else "diverged"))["sp", 64]
    e = cell.problem()
    assert cell.best is None and e.key == "study"
    assert e.problem == "no setting finished finite at width 64 (1 diverged, 0 failed, 8 not finished)"
    assert e.fix.startswith("finish the sweep")


# ------------------------------------------------------------------------------------------------------
# Edges and cliffs

def test_an_optimum_at_the_grid_edge_is_flagged_and_its_fitted_valley_is_open():
    rows = table(lambda p, w, x, d, s: 0.1 + 0.01 * (x + 8) + 0.001 * s, widths=(64, 256), seeds=(0, 1, 2))
    v = judge(rows, 64)
    lr = v["cells"][0]["optimum"]["axes"]["lr"]
    assert lr["edge"] == "low" and lr["step_below"] is None and lr["log2"] == -8
    assert not lr["fit"]["bracketed"] and lr["fit"]["interval"][0] == -math.inf


def test_an_optimum_whose_next_larger_lr_diverged_is_stability_bound_and_its_vertex_stays_below_the_cliff():
    rows = table(lambda p, w, x, d, s: "diverged" if x > -4 else bowl(-2)(x) + 0.001 * s, seeds=(0, 1))
    cell = cells.cells(rows)["sp", 64]
    lr = cell.axis("lr")
    assert lr["stability_bound"] and lr["edge"] is None and lr["log2"] == -4
    assert lr["step_above"] == 1.0      # the diverged neighbour bounds it
    cells.fit_cells({("sp", 64): cell}, Settings())
    fit = cell.fits["lr"]
    assert fit.bracketed and fit.cliff == -3 and fit.x_hat < -3


# ------------------------------------------------------------------------------------------------------
# The fitted valley

def test_the_fitted_optimum_is_the_vertex_of_a_known_asymmetric_valley_between_the_grid_points():
    """Noise-free points of an asymmetric parabola (left 0.02, right 0.06 per octave²) with its vertex at −4.3, on
    a half-octave grid, two seeds offset by 0.01: the fit finds the vertex to 1/64 octave, both curvatures, and an
    interval of zero width (no noise)."""
    rows = table(lambda p, w, x, d, s: bowl(-4.3)(x) + 0.01 * s, xs=HALF, seeds=(0, 1))
    v = judge(rows, 64)
    fit = v["cells"][0]["optimum"]["axes"]["lr"]["fit"]
    assert fit["x_hat"] == pytest.approx(-4.3, abs=1 / 64)
    assert fit["a_left"] == pytest.approx(0.02, rel=0.05) and fit["a_right"] == pytest.approx(0.06, rel=0.05)
    assert not fit["symmetric"] and fit["bracketed"]
    assert fit["interval"][1] - fit["interval"][0] <= 2 / 64


def test_three_points_fit_a_parabola_whose_asymmetry_they_cannot_tell():
    """Three settings leave the sides' curvatures unknown: the fitted optimum is the symmetric parabola's vertex,
    and its interval spans what asymmetry ratios up to valley.ASYMMETRY would put there."""
    x = np.array([-5.0, -4.0, -3.0] * 3)
    seed = np.repeat([0, 1, 2], 3)
    y = np.array([0.3, 0.1, 0.2] * 3) + np.repeat([0.0, 0.01, -0.01], 3) + [0, 1e-4, -1e-4, 2e-4, 0, -2e-4, 1e-4,
                                                                               -1e-4, 0]
    fit = valley.fit(x, seed, y, draws=400, rng=np.random.default_rng(0))
    assert fit.symmetric and fit.x_hat == pytest.approx(-4 + 0.1 / 0.6, abs=1 / 64)
    lo, hi = valley.quantiles(fit.draws["x_hat"], 0.9)
    assert lo < fit.x_hat - 0.05 and hi > fit.x_hat + 0.05  # the unknown asymmetry widens it
    assert -5 <= lo and hi <= -3


# ------------------------------------------------------------------------------------------------------
# The verdict on regret

def test_an_optimum_that_stays_put_transfers_and_one_that_drifts_fails():
    """Known valleys, 3 seeds, a half-octave grid at every width, noise as in a real study: the optimum stays at
    2^-4 (transfers: the regret's upper end below δ) or moves down half an octave per doubling... of width by 4
    (−1 octave at 256, −2 at 1024: fails, the regret's lower end above δ)."""
    stays = judge(table(noisy(lambda w: -4.0), widths=(64, 256, 1024), xs=HALF, seeds=(0, 1, 2)), 64)
    sp = stays["params"]["sp"]
    assert sp["verdict"] == "transfers", sp["sentence"]
    assert all(r["interval"][1] <= r["delta"] for r in sp["regret"])
    assert sp["sentence"].startswith("sp: transfers — the transferred lr")
    assert abs(sp["drift"]["lr"][-1]["drift"]) < 0.25

    drifts = judge(table(noisy(lambda w: -4.0 - 0.5 * math.log2(w / 64)), widths=(64, 256, 1024), xs=HALF,
                         seeds=(0, 1, 2)), 64)
    sp = drifts["params"]["sp"]
    assert sp["verdict"] == "fails", sp["sentence"]
    at_1024 = next(r for r in sp["regret"] if r["width"] == 1024)
    assert at_1024["interval"][0] > at_1024["delta"]
    assert at_1024["regret"] == pytest.approx(0.06 * 4, rel=0.15)  # 2 octaves on the steep side
    assert sp["drift"]["lr"][-1]["drift"] == pytest.approx(-2, abs=0.2)


def test_a_transferred_setting_that_diverges_at_a_larger_width_fails_decisively():
    rows = table(lambda p, w, x, d, s: "diverged" if w == 256 and x > -5 else bowl(-4)(x) + 0.001 * s,
                 widths=(64, 256), seeds=(0, 1))
    sp = judge(rows, 64, transfers={"sp": {"lr": 2 ** -4}})["params"]["sp"]
    assert sp["verdict"] == "fails" and sp["regret"][0]["diverged"] and sp["regret"][0]["regret"] == math.inf
    assert "the transferred lr 0.0625 diverged at width 256" in sp["sentence"]


def test_the_sweep_transfer_loop_decides_from_three_verification_points_per_width():
    """A sweep at the base width only, then the transferred lr and half an octave either side at 256 and 1024
    (transfer.verify=3, ½ octave apart): enough to decide both ways here, without tuning at the large widths."""
    base = table(noisy(lambda w: -4.0, seed=1), xs=HALF, seeds=(0, 1, 2))
    x_t = math.log2(judge(base, 64)["params"]["sp"]["transferred"]["lr"])
    verify = lambda w: [x_t - 0.5, x_t, x_t + 0.5]  # noqa: E731
    stays = base + table(noisy(lambda w: -4.0, seed=2), widths=(256, 1024), xs=verify, seeds=(0, 1, 2))
    assert judge(stays, 64)["params"]["sp"]["verdict"] == "transfers"
    moves = base + table(noisy(lambda w: -4.0 - 0.5 * math.log2(w / 64), seed=2), widths=(256, 1024), xs=verify,
                         seeds=(0, 1, 2))
    sp = judge(moves, 64)["params"]["sp"]
    assert sp["verdict"] == "fails"
    # the valley at 1024 is not bracketed by the three points, yet the loss they show already costs more than δ
    at_1024 = next(r for r in sp["regret"] if r["width"] == 1024)
    assert at_1024["open"] and at_1024["interval"][1] == math.inf and at_1024["interval"][0] > at_1024["delta"]


def test_an_undecided_verdict_names_the_point_or_the_seeds_that_would_decide_it():
    # the loss still falls past the lowest verification point, by less than δ: the next point decides
    base = table(lambda p, w, x, d, s: bowl(-4)(x) + 0.0005 * s, xs=HALF, seeds=(0, 1, 2))
    x_t = -4.0
    wider = table(lambda p, w, x, d, s: bowl(-4.6, left=0.002, right=0.002)(x) + 0.0005 * s + 0.00002 * (x % 1),
                  widths=(256,), xs=[x_t - 0.5, x_t, x_t + 0.5], seeds=(0, 1, 2))
    sp = judge(base + wider, 64, Settings(delta=0.01))["params"]["sp"]
    row = sp["regret"][0]
    assert sp["verdict"] == "undecided" and row["open"]
    assert row["needs"] == [{"kind": "point", "width": 256, "axis": "lr", "log2": -5.0}]
    assert "lr 2^-5 at width 256, past the tried points where the loss still falls" in sp["sentence"]
    # a bracketed valley whose regret straddles δ: how many seeds would decide it
    straddle = judge(table(noisy(lambda w: -4.0 if w == 64 else -4.35, sd=0.004), widths=(64, 256), xs=HALF,
                           seeds=(0, 1)), 64, Settings(delta=0.002))["params"]["sp"]
    row = straddle["regret"][0]
    assert straddle["verdict"] == "undecided" and row["needs"][0]["kind"] == "seeds"
    assert "seeds in all (study.seeds=[0,...," in straddle["sentence"] or "within noise of δ" in straddle["sentence"]


def test_delta_is_the_larger_of_one_percent_of_the_best_loss_and_the_base_seeds_spread():
    rows = table(noisy(lambda w: -4.0, seed_sd=0.02), widths=(64, 256), xs=HALF, seeds=(0, 1, 2))
    grid = cells.cells(rows)
    cells.fit_cells(grid, Settings())
    base, wide = grid["sp", 64], grid["sp", 256]
    levels = np.array(list(base.fits["lr"].seed_levels.values()))  # the seeds' fitted levels at the minimum
    drawn = np.random.default_rng(0).normal(0, 0.02, 100)[:3]      # the offsets noisy() gave the seeds
    assert levels - levels.mean() == pytest.approx(drawn - drawn.mean(), abs=0.002)
    sd = float(np.std(levels, ddof=1))
    assert verdict.delta_for(base, wide, Settings()) == pytest.approx(max(sd, 0.01 * wide.fits["lr"].level))
    assert verdict.delta_for(base, wide, Settings(delta=0.5)) == 0.5


# ------------------------------------------------------------------------------------------------------
# The width law

def test_the_width_law_recovers_a_known_exponent_and_checks_itself_on_the_largest_width():
    widths = (64, 128, 256, 512)
    moving = judge(table(noisy(lambda w: -4.0 - 0.5 * math.log2(w / 64)), widths=widths,
                         xs=lambda w: HALF - 0.5 * math.log2(w / 64), seeds=(0, 1, 2)), 64)["params"]["sp"]["law"]["lr"]
    assert moving["beta"] == pytest.approx(-0.5, abs=0.05)
    lo, hi = moving["beta_interval"]
    assert hi < 0 and lo < -0.5 < hi + 0.05
    assert moving["holdout"]["scale"] == 512 and moving["holdout"]["consistent"]
    still = judge(table(noisy(lambda w: -4.0), widths=widths, xs=HALF, seeds=(0, 1, 2)), 64)["params"]["sp"]
    lo, hi = still["law"]["lr"]["beta_interval"]
    assert lo <= 0 <= hi and "(contains 0)" in still["sentence"]


# ------------------------------------------------------------------------------------------------------
# Damping, determinism, settings

def test_damping_gets_its_own_valley_when_it_is_swept_and_its_regret_adds_to_the_lr_one():
    centre = {64: -3, 256: -1}

    def outcome(p, w, x, d, s):
        return bowl(-4)(x) + 0.05 * (math.log2(d) - centre[w]) ** 2 + 0.001 * s
    rows = table(outcome, widths=(64, 256), xs=range(-7, 0), dampings=[2.0 ** k for k in range(-6, 1)],
                 seeds=(0, 1))
    sp = judge(rows, 64)["params"]["sp"]
    assert set(sp["drift"]) == {"lr", "damping"}
    assert sp["drift"]["damping"][0]["drift"] == pytest.approx(2, abs=0.1)
    assert sp["verdict"] == "fails" and sp["regret"][0]["regret"] == pytest.approx(0.05 * 4, rel=0.1)


def test_the_same_results_give_the_same_verdict():
    rows = table(noisy(lambda w: -4.0), widths=(64, 256), xs=HALF, seeds=(0, 1, 2))
    assert judge(rows, 64) == judge(rows, 64)


@pytest.mark.parametrize("study, key", [
    ({"tolerance": -1}, "study.tolerance"),
    ({"delta": -1}, "study.delta"),
    ({"delta": "big"}, "study.delta"),
    ({"delta_relative": 0}, "study.delta_relative"),
    ({"bootstrap": {"level": 1.5}}, "study.bootstrap.level"),
    ({"bootstrap": {"resamples": 0}}, "study.bootstrap.resamples"),
    ({"bootstrap": {"seed": "x"}}, "study.bootstrap.seed"),
])
def test_bad_verdict_settings_name_their_key(study, key):
    with pytest.raises(UsageError) as e:
        verdict.parse_settings(study)
    assert e.value.key == key
