"""`muso report` and `muso transfer` on hand-made studies (real study folders and configs; result files written
by the test): the verdict comes first, an empty base cell is refused, an edge optimum needs --allow-edge."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from handmade import make, parabola, write_results
from muso_cli import figures, report, verdict
from muso_cli.cli import main
from muso_cli.study.store import Study


def files(study: Study) -> dict:
    return {p: p.read_bytes() for p in study.path.rglob("*") if p.is_file()}


def test_a_study_whose_every_trial_diverged_says_so_and_transfer_launches_nothing(tmp_path, capsys):
    study = make(tmp_path, lambda *a: "diverged", "study.lr=log2:-3:0", "study.widths=[16,32]")
    assert main(["report", str(study.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:3] == [
        "verdict:",
        "  somup: no optimum — all 4 settings diverged at the base width 16: widen study.lr downwards; no transfer "
        "and no drift.",
        "  sp: no optimum — all 4 settings diverged at the base width 16: widen study.lr downwards; no transfer and "
        "no drift."]
    folder = study.path / "report"
    saved = json.loads((folder / "report.json").read_text())
    assert {p: v["verdict"] for p, v in saved["params"].items()} == {"sp": "no optimum", "somup": "no optimum"}
    assert all(c["optimum"] is None for c in saved["cells"])
    md = (folder / "report.md").read_text()
    assert md.splitlines()[2] == "## Verdict" and "no transfer and no drift" in md
    assert "## Drift" not in md and "no optimum: all 4 settings diverged at width 32" in md
    assert (folder / "loss_vs_lr.png").stat().st_size > 10_000 and not (folder / "drift.png").exists()

    before = files(study)
    assert main(["transfer", str(study.path), "transfer.widths=[64]"]) == 2
    err = capsys.readouterr().err
    assert ("error: study.lr: sp: no finite optimum at the base width: all 4 settings diverged at width 16. Fix: "
            "widen study.lr downwards.") in err
    assert files(study) == before  # nothing planned, nothing launched, no transfer.json


def test_transfer_refuses_an_edge_optimum_unless_allowed(tmp_path, capsys):
    study = make(tmp_path, lambda p, w, lr, d, s: 0.1 + lr, "study.lr=log2:-3:0", "study.params=[sp]")
    before = files(study)
    assert main(["transfer", str(study.path), "transfer.widths=[32]"]) == 2
    err = capsys.readouterr().err
    assert "error: study.lr: sp: the best lr at the base width, 0.125, is at the grid edge" in err
    assert "widen study.lr below 0.125" in err and "--allow-edge" in err
    assert files(study) == before
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--allow-edge", "--no-launch"]) == 0
    captured = capsys.readouterr()
    assert "warning: sp: the best lr at the base width, 0.125, is at the grid edge" in captured.err
    assert "lr=0.125" in captured.out and "lr at the grid edge" in captured.out
    assert study.transfers()["sp"]["lr"] == 0.125 and study.transfers()["sp"]["edge"] == {"lr": "low"}


def test_a_stability_bound_optimum_is_flagged_in_tables_and_transfer(tmp_path, capsys):
    loss = parabola(-1)
    study = make(tmp_path, lambda p, w, lr, d, s: "diverged" if lr > 0.25 else loss(lr), "study.lr=log2:-4:0",
                 "study.params=[sp]")
    tables = report.build(study, tmp_path / "r", "train_loss", 16)["tables"]
    row = tables["optima"].iloc[0]
    assert row["lr*"] == 0.25 and row["notes"] == "stability-bound: the next larger lr diverged"
    assert -2.5 < float(row["fitted log2 lr*"]) < -1  # the fitted optimum stays below the cliff at 2^-1
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--dry-run"]) == 0
    assert "lr=0.25" in capsys.readouterr().out.split("stability-bound in lr")[0]


# The known spread of test_verdict, at base width 16 on a quarter-octave grid: both seeds centred at log2 lr = -4 at
# width 16; at width 32 seed 0 at -4 and seed 1 at -3.5; at 64, -2 and -1.5.
CENTRES = {16: (-4, -4), 32: (-4, -3.5), 64: (-2, -1.5)}


def test_report_of_several_seeds_gives_the_verdict_and_its_intervals_first(tmp_path, capsys):
    study = make(tmp_path, lambda p, w, lr, d, s: parabola(CENTRES[w][s])(lr), "study.lr=log2:-6:-1:0.25",
                 "study.widths=[16,32,64]", "study.seeds=[0,1]", "study.params=[sp]")
    assert main(["report", str(study.path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "verdict:"
    assert out[1].startswith("  sp: fails — the transferred lr 0.0625 costs ")  # 2^-4, the base optimum
    assert "at width 64; lr* moved +2.25 octaves" in out[1]
    assert out[2].startswith("  Intervals: 90% parametric-bootstrap intervals of the fitted valleys (400 draws")
    folder = study.path / "report"
    saved = json.loads((folder / "report.json").read_text(), parse_constant=pytest.fail)  # strict JSON: no Infinity
    regret = {r["width"]: r for r in saved["params"]["sp"]["regret"]}
    # at 64 both seeds' valleys sit 2 octaves up: the base lr costs 0.05·(2² + 2.5²)/2 = 0.25625 (both sides alike)
    assert regret[64]["verdict"] == "fails" and regret[64]["regret"] == pytest.approx(0.25625, rel=0.05)
    assert regret[32]["regret"] < 0.01  # the seeds' optima at 32 straddle the base's by a quarter octave
    drift = {r["width"]: r for r in saved["params"]["sp"]["drift"]["lr"]}
    assert drift[32]["drift"] == pytest.approx(0.25, abs=0.05) and drift[64]["drift"] == pytest.approx(2.25, abs=0.05)
    md = (folder / "report.md").read_text().splitlines()
    assert md[2] == "## Verdict" and md[4].startswith("- sp: fails — the transferred lr 0.0625 costs")
    optima = pd.DataFrame(report.optima_table(saved, 1.0)).set_index("width")
    assert optima.loc[32, "log2 lr*"] == -3.75 and float(optima.loc[32, "fitted log2 lr*"]) == pytest.approx(-3.75,
                                                                                                           abs=0.05)
    for png in ("loss_vs_lr.png", "drift.png"):
        assert (folder / png).stat().st_size > 10_000


def test_a_bad_tolerance_is_refused_before_any_work(tmp_path, capsys):
    study = make(tmp_path, lambda p, w, lr, d, s: 0.1, "study.lr=[0.5]", "study.params=[sp]")
    assert main(["report", str(study.path), "study.tolerance=0"]) == 2
    assert "error: study.tolerance: must be a number > 0" in capsys.readouterr().err
    assert not (study.path / "report").exists()


def test_interval_words():
    assert verdict.fmt_interval(-math.inf, 0.5) == "[-inf, +0.50]"
    assert verdict.fmt_interval(0, 0.0125, octaves=False) == "[0, 0.0125]"


def test_a_sweep_only_report_prints_its_drift_and_plots_name_the_study_sp_first(tmp_path, capsys, monkeypatch):
    drawn = {}

    def keep(fig, path, **kwargs):  # look at the figure, then save it as the report does
        drawn[path.name] = {"title": fig._suptitle.get_text() if fig._suptitle else "",
                            "panels": [ax.get_title() for ax in fig.axes]}
        return save(fig, path, **kwargs)

    save = figures.save
    monkeypatch.setattr(figures, "save", keep)
    study = make(tmp_path, lambda p, w, lr, d, s: parabola(CENTRES[w][s])(lr), "study.lr=log2:-6:-1:0.25",
                 "study.widths=[16,32,64]", "study.seeds=[0,1]", "optimizer=kfac", "study.damping=[0.1]")
    assert main(["report", str(study.path)]) == 0
    out = capsys.readouterr().out
    drift = out.split("drift of the fitted optimum from the base width (octaves):\n")[1].splitlines()
    assert drift[0].split() == ["param", "axis", "width", "drift_octaves", "interval"]
    rows = [line.split() for line in drift[1:5]]
    assert [r[:3] for r in rows] == [[p, "lr", w] for p in ("sp", "somup") for w in ("32", "64")]
    assert len(drift) == 5 or not drift[5].split()[1:2] == ["damping"]  # one damping value: no damping drift
    assert drawn["loss_vs_lr.png"]["panels"] == ["sp", "somup"]
    assert drawn["loss_vs_lr.png"]["title"] == "h: kfac, mlp on synthetic · damping 0.1"

    assert main(["transfer", str(study.path), "transfer.widths=[128]", "--no-launch"]) == 0
    write_results(study, lambda p, w, lr, d, s: 0.05)
    assert main(["report", str(study.path)]) == 0
    assert drawn["curves.png"]["panels"][0].startswith("sp: lr=")
