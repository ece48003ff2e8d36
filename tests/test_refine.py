"""`muso refine`: grid points at half the step on both sides of each cell's optimum (one step beyond an edge),
through the same trial ids and resume, until the target resolution, a decided verdict or the trial budget."""
from __future__ import annotations

import math

import pytest

from handmade import make, parabola, write_results
from muso_cli import track
from muso_cli.cli import main
from muso_cli.study.plan import refine_values
from muso_cli.study.store import Study

LOSS = parabola(-3.3)  # the optimum of the octave grid is 2^-3; refining moves it to 2^-3.5, then 2^-3.25


def outcome(p, w, lr, d, s):
    return LOSS(lr) + 0.001 * s


def log2_lrs(study: Study, phase: str | None = None) -> list[float]:
    return sorted({round(math.log2(t.lr), 6) for t in study.trials() if phase in (None, t.phase)})


def results(study: Study) -> dict:
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in study.path.glob("trials/*/result.json")}


def test_refine_values_halve_the_step_near_the_optimum_and_step_beyond_an_edge():
    inner = {"value": 2 ** -3, "step_below": 1.0, "step_above": 1.0, "edge": None}
    assert refine_values(inner, 0.25) == pytest.approx([2 ** -3.5, 2 ** -2.5], rel=1e-11)
    assert refine_values({**inner, "step_below": 0.25, "step_above": 0.5}, 0.25) == pytest.approx([2 ** -2.75])
    assert refine_values({**inner, "step_below": None, "edge": "low"}, 0.25) == pytest.approx([2 ** -4, 2 ** -2.5])
    assert refine_values({**inner, "step_above": None, "edge": "high"}, 0.25) == pytest.approx([2 ** -3.5, 2 ** -2])
    assert refine_values({**inner, "step_below": 0.25, "step_above": 0.25}, 0.25) == []


def test_refine_adds_exactly_the_expected_points_and_reuses_finished_trials(tmp_path, capsys):
    """The test plays the launcher (--no-launch, then result files of the same loss), so each round is known."""
    study = make(tmp_path, outcome, "study.lr=log2:-6:-1", "study.params=[sp]", "study.seeds=[0,1]")
    assert log2_lrs(study) == [-6, -5, -4, -3, -2, -1]
    sweep_ids = {t.id for t in study.trials()}
    rounds = [[-3.5, -2.5], [-3.75, -3.25]]  # ±half the step around 2^-3, then around 2^-3.5
    for expected in rounds:
        before = results(study)
        assert main(["refine", str(study.path), "--no-launch"]) == 0
        new = [t for t in study.trials() if t.phase == "refine" and study.status(t) == track.PENDING]
        assert sorted({round(math.log2(t.lr), 6) for t in new}) == expected
        assert sorted(t.seed for t in new) == [0, 0, 1, 1]
        assert f"{len(new)} new trials" in capsys.readouterr().out
        assert results(study) == before  # finished trials are not rerun or rewritten
        write_results(study, outcome, new)
    assert log2_lrs(study, "refine") == [-3.75, -3.5, -3.25, -2.5]
    assert sweep_ids <= {t.id for t in study.trials()} and len(study.trials()) == 6 * 2 + 8

    # resolved to 0.25 octave: nothing more to run, nothing rewritten
    before, index = results(study), (study.path / "trials.jsonl").read_bytes()
    assert main(["refine", str(study.path)]) == 0
    out = capsys.readouterr().out
    assert "refine: done after 0 round(s), 0 trials run" in out and "resolved to 0.25 octave" in out
    assert results(study) == before and (study.path / "trials.jsonl").read_bytes() == index
    # the transfer carries the refined optimum
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--dry-run"]) == 0
    assert "lr=0.1051" in capsys.readouterr().out  # 2^-3.25


def test_refine_stops_before_a_round_that_exceeds_the_budget(tmp_path, capsys):
    study = make(tmp_path, outcome, "study.lr=log2:-6:-1", "study.params=[sp]", "study.seeds=[0,1]")
    index = (study.path / "trials.jsonl").read_bytes()
    assert main(["refine", str(study.path), "study.refine_budget=3"]) == 0
    out = capsys.readouterr().out
    assert "round 1 needs 4 trials, 3 left of study.refine_budget=3: stopped after 0 round(s)" in out
    assert (study.path / "trials.jsonl").read_bytes() == index


def test_a_decided_verdict_is_not_refined_further(tmp_path, capsys):
    """sp's optimum moves 3 octaves by width 32: the transferred lr costs far more than δ there (fails, decided
    even on an octave grid); somup's stays, but its points scatter by about δ (undecided): only somup's cells are
    refined. At the base width the new runs are sp's too (one run serves every parameterization there), so both
    base cells stay the same grid."""
    def moved(p, w, lr, d, s):
        scatter = 0.0003 * math.sin(1000 * lr + 7 * s + w) if p == "somup" else 0.0
        return parabola(-0.3 if (p, w) == ("sp", 32) else -3.3)(lr) + 0.001 * s + scatter
    study = make(tmp_path, moved, "study.lr=log2:-6:1", "study.widths=[16,32]", "study.seeds=[0,1]",
                 "study.delta=0.0002")
    assert main(["refine", str(study.path), "--no-launch"]) == 0
    assert "for somup" in capsys.readouterr().out
    refined = [t for t in study.trials() if t.phase == "refine"]
    assert {(t.param, t.width) for t in refined} == {("somup", 16), ("somup", 32), ("sp", 16)}
    base = {p: {t.id for t in refined if (t.param, t.width) == (p, 16)} for p in ("sp", "somup")}
    assert base["sp"] == base["somup"] and len(base["sp"]) == 4  # 2 new lrs × 2 seeds, run once


def test_refine_adds_the_point_past_an_open_valley(tmp_path, capsys):
    """At width 32 the five verification points still fall towards small lr: the verdict asks for the point half
    an octave past them, and refine plans exactly that (every seed), not a halving around the base optimum."""
    study = make(tmp_path, outcome, "study.lr=log2:-6:-1:0.5", "study.params=[somup]", "study.seeds=[0,1]",
                 "study.delta=0.01")
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--no-launch"]) == 0
    lr = study.transfers()["somup"]["lr"]
    falling = parabola(math.log2(lr) - 1.7, curvature=0.002)
    write_results(study, lambda p, w, x, d, s: falling(x) + 0.001 * s if w == 32 else outcome(p, w, x, d, s))
    capsys.readouterr()
    assert main(["refine", str(study.path), "--no-launch"]) == 0
    new = [t for t in study.trials() if t.phase == "refine" and study.status(t) == track.PENDING]
    assert {(t.width, round(math.log2(t.lr / lr), 6)) for t in new} == {(32, -1.5)}
    assert sorted(t.seed for t in new) == [0, 1]


@pytest.mark.slow
def test_refine_runs_its_rounds_through_the_launcher(tmp_path, capsys):
    """Real trials: the new points train (synthetic data, 30 steps), and their losses (above 1) never beat the
    hand-made ones (about 0.1), so the optimum stays at 2^-3 and the rounds are known: ±0.5, then ±0.25 octave."""
    study = make(tmp_path, outcome, "study.lr=log2:-6:-1", "study.params=[sp]")
    assert main(["refine", str(study.path)]) == 0
    out = capsys.readouterr().out
    assert "refine round 1: 2 new trials" in out and "refine round 2: 2 new trials" in out
    assert "refine: done after 2 round(s), 4 trials run" in out
    assert log2_lrs(study, "refine") == [-3.5, -3.25, -2.75, -2.5]
    assert all(study.status(t) in track.FINAL_STATUSES for t in study.trials())
    assert "verdicts now: sp undecided" in out  # one seed: no interval


def test_a_second_sweep_that_adds_a_parameterization_and_a_seed_is_refined_and_transferred_too(tmp_path, capsys):
    """refine and transfer read the study's grid from study.yaml: a sweep into an existing study with more
    parameterizations or seeds records the union there, so the added ones are refined and transferred as well."""
    from handmade import FAST

    common = [*FAST, f"study.root={tmp_path}", "study.name=h", "study.lr=log2:-6:-1", "study.widths=[16,32]"]
    assert main(["sweep", *common, "study.params=[sp]", "study.seeds=[0]", "--no-launch"]) == 0
    study = Study(tmp_path / "h")
    write_results(study, outcome)
    assert main(["sweep", *common, "study.params=[sp,somup]", "study.seeds=[0,1]", "--no-launch"]) == 0
    assert "its grid now records study.params=[sp,somup] study.seeds=[0,1]" in capsys.readouterr().out
    write_results(study, outcome)
    overrides = study.manifest()["overrides"]
    assert overrides[-2:] == ["study.params=[sp,somup]", "study.seeds=[0,1]"]
    assert sum(o.startswith(("study.params=", "study.seeds=")) for o in overrides) == 2

    assert main(["refine", str(study.path), "--no-launch"]) == 0
    refined = {(t.param, t.width, t.seed) for t in study.trials() if t.phase == "refine"}
    assert {p for p, _, _ in refined} == {"sp", "somup"} and {s for _, _, s in refined} == {0, 1}
    capsys.readouterr()
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "transfer.verify=1", "--no-launch"]) == 0
    plan = capsys.readouterr().out  # the fitted optimum of LOSS (2^-3.3), to 1/8 octave: 2^-3.25
    assert "somup width    32: 1 lr [0.105] × 2 seeds" in plan and "sp width    32: 1 lr [0.105] × 2 seeds" in plan
    assert set(study.transfers()) == {"sp", "somup"}
    # a sweep that adds nothing leaves study.yaml as it is
    before = (study.path / "study.yaml").read_bytes()
    assert main(["sweep", *common, "study.params=[somup]", "study.seeds=[1]", "--no-launch"]) == 0
    assert (study.path / "study.yaml").read_bytes() == before


def test_an_optimum_at_the_grid_edge_is_extended_even_when_its_verdict_is_decided(tmp_path, capsys):
    """transfer refuses an optimum at the grid's edge: refine adds the point beyond it whatever the verdict."""
    def rising(p, w, lr, d, s):  # lowest at the largest lr tried, at both widths
        return 1.0 - 0.1 * math.log2(lr) + 0.001 * s
    study = make(tmp_path, rising, "study.lr=log2:-6:-3", "study.params=[sp]", "study.widths=[16,32]",
                 "study.seeds=[0,1]")
    assert main(["refine", str(study.path), "--no-launch"]) == 0
    new = {(t.width, round(math.log2(t.lr), 6)) for t in study.trials() if t.phase == "refine"}
    assert (16, -2.0) in new  # one step beyond the base grid's top


@pytest.mark.parametrize("command", [["refine", "studies/x", "--yes"], ["sweep", "--bogus"], ["report", "s", "--nope"]])
def test_an_option_a_command_does_not_take_is_named_with_exit_2(command, capsys):
    """refine plans no new sizes, so it takes no --yes; any unknown option is named as the key, with the fix."""
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"error: {command[-1]}: is not an option of `muso {command[0]}`" in err and "--help" in err
    assert "Traceback" not in err
