"""The verdict rules on hand-made tables of trial outcomes: no optimum from nothing, edges and cliffs named,
intervals over seeds, transfers / drifts / undecided with what would decide it."""
from __future__ import annotations

import math

import numpy as np
import pytest

from muso_cli import verdict
from muso_cli.errors import UsageError
from muso_cli.verdict import Settings, judge

NAN = math.nan


def table(outcome, *, params=("sp",), widths=(64,), xs=range(-8, 1), dampings=(NAN,), seeds=(0,)):
    """Rows for every param × width × log2 lr in ``xs`` × damping × seed; ``outcome(param, width, x, damping,
    seed)`` gives a loss, "diverged", "failed" or None (pending)."""
    rows = []
    for p in params:
        for w in widths:
            for x in xs:
                for d in dampings:
                    for s in seeds:
                        o = outcome(p, w, x, d, s)
                        status = {"diverged": "diverged", "failed": "failed", None: "pending"}.get(o, "ok")
                        value = math.inf if o == "diverged" else NAN if status != "ok" else float(o)
                        rows.append({"param": p, "width": w, "lr": 2.0 ** x, "damping": d, "seed": s,
                                     "status": status, "objective": value})
    return rows


def bowl(centre: float, floor: float = 0.1, curvature: float = 0.05):
    return lambda x: floor + curvature * (x - centre) ** 2


# ------------------------------------------------------------------------------------------------------
# No optimum from nothing

def test_a_base_cell_whose_every_setting_diverged_gives_no_optimum_no_drift_and_no_transfer():
    rows = table(lambda p, w, x, d, s: "diverged" if w == 64 else bowl(-4)(x), widths=(64, 256))
    v = judge(rows, 64)
    sp = v["params"]["sp"]
    assert sp["verdict"] == "no optimum" and sp["axes"] == {} and sp["regret"] == []
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
    assert sp["verdict"] == "undecided"
    at_1024 = next(r for r in sp["axes"]["lr"]["widths"] if r["width"] == 1024)
    assert at_1024["why"] == "all 9 settings diverged or failed at width 1024 (7 diverged, 2 failed)"
    assert "drift" not in at_1024  # nothing computed from it
    assert "widen study.lr downwards" in at_1024["decide"][0]


def test_pending_settings_are_not_an_optimum():
    cell = verdict.cells(table(lambda p, w, x, d, s: None if x > -8 else "diverged"))["sp", 64]
    e = cell.problem()
    assert cell.best is None and e.key == "study"
    assert e.problem == "no setting finished finite at width 64 (1 diverged, 0 failed, 8 not finished)"
    assert e.fix.startswith("finish the sweep")


# ------------------------------------------------------------------------------------------------------
# Edges and cliffs

def test_an_optimum_at_the_grid_edge_is_flagged_and_its_interval_is_unbounded_that_way():
    rows = table(lambda p, w, x, d, s: 0.1 + 0.01 * (x + 8) + 0.001 * s, widths=(64, 256), seeds=(0, 1))
    v = judge(rows, 64)
    lr = v["cells"][0]["optimum"]["axes"]["lr"]
    assert lr["edge"] == "low" and lr["step_below"] is None and lr["log2"] == -8
    assert lr["interval_log2"] == [-math.inf, -7.5]
    ax = v["params"]["sp"]["axes"]["lr"]
    assert ax["verdict"] == "undecided"
    assert ax["widths"][0]["interval"] == [-math.inf, math.inf]
    assert ax["decide"] == ["a wider grid (lr below 2^-8 at width 64)", "a wider grid (lr below 2^-8 at width 256)"]


def test_an_optimum_whose_next_larger_lr_diverged_is_stability_bound():
    rows = table(lambda p, w, x, d, s: "diverged" if x > -4 else bowl(-2)(x))
    lr = verdict.cells(rows)["sp", 64].axis("lr")
    assert lr["stability_bound"] and lr["edge"] is None and lr["log2"] == -4
    assert lr["step_above"] == 1.0      # the diverged neighbour bounds it
    assert lr["subgrid_log2"] is None   # no finite neighbour above: no parabola


def test_the_sub_grid_estimate_is_the_vertex_of_the_parabola_through_the_optimum_and_its_neighbours():
    losses = {-5: 0.3, -4: 0.1, -3: 0.2}
    rows = table(lambda p, w, x, d, s: losses[x], xs=(-5, -4, -3))
    lr = verdict.cells(rows)["sp", 64].axis("lr")
    assert lr["log2"] == -4 and lr["subgrid_log2"] == pytest.approx(-4 + 0.1 / 0.6)


# ------------------------------------------------------------------------------------------------------
# Intervals over seeds

def test_one_seed_gives_no_interval_and_no_decided_verdict():
    v = judge(table(lambda p, w, x, d, s: bowl(-4)(x), widths=(64, 256)), 64)
    assert v["interval"] == "1 seed: no interval."
    sp = v["params"]["sp"]
    assert sp["verdict"] == "undecided"
    assert sp["axes"]["lr"]["widths"][0]["why"] == "1 seed: no interval"
    assert "interval_log2" not in v["cells"][0]["optimum"]["axes"]["lr"]
    assert sp["regret"][0]["interval"] is None and "(1 seed: no interval)" in sp["sentence"]
    assert "more seeds (study.seeds=[0,1,2])" in sp["decide"]


# Two seeds, quarter-octave grid. At the base width both seeds' losses are centred at log2 lr = -4. At width 256
# seed 0 is centred at -4 and seed 1 at -3.5 (their mean at -3.75); at width 1024 at -2 and -1.5. Resampling two
# seeds gives {0,0}, {0,1}, {1,1} with probabilities 1/4, 1/2, 1/4, each well inside a 90% interval, so the
# interval runs over the three optima, each placed within half a step (0.125 octave) of its grid point.
CENTRES = {64: (-4, -4), 256: (-4, -3.5), 1024: (-2, -1.5)}


def spread(p, w, x, d, s):
    return bowl(CENTRES[w][s])(x)


def test_intervals_over_seeds_with_a_known_spread():
    rows = table(spread, widths=(64, 256, 1024), xs=np.arange(-6, -0.99, 0.25), seeds=(0, 1))
    v = judge(rows, 64)
    cells = {c["width"]: c["optimum"]["axes"]["lr"] for c in v["cells"]}
    assert cells[64]["interval_log2"] == [-4.125, -3.875]
    assert cells[256]["log2"] == -3.75 and cells[256]["interval_log2"] == [-4.125, -3.375]
    assert cells[1024]["interval_log2"] == [-2.125, -1.375]
    widths = {r["width"]: r for r in v["params"]["sp"]["axes"]["lr"]["widths"]}
    assert widths[256]["drift"] == 0.25 and widths[256]["interval"] == [-0.25, 0.75]
    assert widths[256]["seed_interval"] == [0.0, 0.5]
    assert widths[256]["verdict"] == "undecided" and widths[256]["decide"] == ["more seeds"]
    assert widths[1024]["drift"] == 2.25 and widths[1024]["interval"] == [1.75, 2.75]
    assert widths[1024]["verdict"] == "drifts"
    sp = v["params"]["sp"]
    assert sp["verdict"] == "drifts"
    assert sp["sentence"].startswith("sp: drifts — lr* moves up by 2.25 octaves by width 1024 (interval "
                                     "[+1.75, +2.75], wholly outside ±0.5)")
    # regret of the base optimum (2^-4) at 256: full data 0.025·(0 + 0.25) − 0.025·(0.0625 + 0.0625); the
    # resamples give 0 ({0,0}), 0.003125 ({0,1}) and 0.05·0.25 = 0.0125 ({1,1})
    regret = {r["width"]: r for r in sp["regret"]}
    assert regret[256]["regret"] == pytest.approx(0.003125)
    assert regret[256]["interval"] == pytest.approx([0.0, 0.0125])
    assert judge(rows, 64) == v  # a fixed generator: the same report every time


def test_the_tolerance_decides():
    rows = table(spread, widths=(64, 256), xs=np.arange(-6, -0.99, 0.25), seeds=(0, 1))
    assert judge(rows, 64, Settings(tolerance=1.0))["params"]["sp"]["verdict"] == "transfers"
    assert judge(rows, 64, Settings(tolerance=0.5))["params"]["sp"]["verdict"] == "undecided"


def test_an_octave_grid_cannot_decide_what_a_quarter_octave_grid_can():
    """With seeds that agree, the grid's resolution is what is left: each optimum is placed within half a step,
    so on an octave grid a drift of 0 reads [-1, +1] (undecided: refine), on a quarter-octave grid [-0.25, +0.25]."""
    same = lambda p, w, x, d, s: bowl(-4)(x) + 0.001 * s  # noqa: E731
    coarse = judge(table(same, widths=(64, 256), seeds=(0, 1)), 64)["params"]["sp"]
    assert coarse["axes"]["lr"]["widths"][0]["interval"] == [-1.0, 1.0]
    assert coarse["verdict"] == "undecided" and coarse["decide"] == ["a finer grid near the optimum (muso refine)"]
    fine = judge(table(same, widths=(64, 256), xs=np.arange(-6, -1.99, 0.25), seeds=(0, 1)), 64)["params"]["sp"]
    assert fine["axes"]["lr"]["widths"][0]["interval"] == [-0.25, 0.25]
    assert fine["verdict"] == "transfers"
    assert fine["sentence"] == ("sp: transfers — lr* within ±0.5 octave of the base at every width (at 256: +0.00, "
                                "interval [-0.25, +0.25]); regret of the transferred setting at width 256: 0 "
                                "(interval [0, 0]).")


def test_damping_gets_its_own_verdict_when_it_is_swept():
    """lr × damping: the lr optimum stays at 2^-4 (on an octave grid: undecided), the damping optimum moves from
    2^-3 to 2^-1 (two octaves up, [+1, +3] within half a step on each side): the parameterization drifts."""
    centre = {64: -3, 256: -1}

    def outcome(p, w, x, d, s):
        return bowl(-4)(x) + 0.05 * (math.log2(d) - centre[w]) ** 2 + 0.001 * s
    rows = table(outcome, widths=(64, 256), xs=range(-7, 0), dampings=[2.0 ** k for k in range(-6, 1)], seeds=(0, 1))
    sp = judge(rows, 64)["params"]["sp"]
    assert sp["axes"]["lr"]["verdict"] == "undecided"
    damping = sp["axes"]["damping"]
    assert damping["verdict"] == "drifts" and damping["widths"][0]["interval"] == [1.0, 3.0]
    assert sp["verdict"] == "drifts" and "damping* moves up by 2.00 octaves by width 256" in sp["sentence"]


def test_the_transferred_setting_that_diverged_wider_has_a_diverged_regret():
    def outcome(p, w, x, d, s):
        return "diverged" if w == 256 and x > -5 else bowl(-4)(x) + 0.001 * s
    sp = judge(table(outcome, widths=(64, 256), seeds=(0, 1)), 64, transfers={"sp": {"lr": 2 ** -4}})["params"]["sp"]
    assert sp["regret"][0]["diverged"] and sp["regret"][0]["regret"] == math.inf
    assert "regret of the transferred setting at width 256: diverged" in sp["sentence"]


# ------------------------------------------------------------------------------------------------------
# Settings

@pytest.mark.parametrize("study, key", [
    ({"tolerance": -1}, "study.tolerance"),
    ({"bootstrap": {"level": 1.5}}, "study.bootstrap.level"),
    ({"bootstrap": {"resamples": 0}}, "study.bootstrap.resamples"),
    ({"bootstrap": {"seed": "x"}}, "study.bootstrap.seed"),
])
def test_bad_verdict_settings_name_their_key(study, key):
    with pytest.raises(UsageError) as e:
        verdict.parse_settings(study)
    assert e.value.key == key
