"""Verdicts on runs made elsewhere (muso_cli.external): a CSV of runs, and W&B runs (an offline export), give the
same verdict, tables and figures as a muso study of the same runs."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from handmade import FAST, make, parabola
from muso_cli import external, report
from muso_cli.cli import main
from muso_cli.errors import UsageError
from muso_cli.study.store import Study


def outcome(p, w, lr, d, s):
    centre = -3.0 if p == "somup" else -3.0 - math.log2(w / 16)  # sp's optimum moves an octave per doubling
    return parabola(centre)(lr) + 0.002 * s + 0.0005 * math.sin(7 * math.log2(lr) + w)


def as_csv(study: Study, path) -> None:
    rows = []
    for e in report.StudyRuns(study).entries("train_loss"):
        rows.append({"param": e["param"], "width": e["width"], "lr": e["lr"], "seed": e["seed"],
                     "train_loss": e["result"]["final"]["train_loss"], "status": e["status"]})
    pd.DataFrame(rows).to_csv(path, index=False)


def test_a_csv_of_runs_gets_the_verdict_its_study_gets(tmp_path):
    study = make(tmp_path, outcome, "study.lr=log2:-6:0:0.5", "study.widths=[16,32,64]", "study.seeds=[0,1,2]")
    as_csv(study, tmp_path / "runs.csv")
    mine = report.build(study, tmp_path / "r1", "train_loss", 16)["verdict"]
    theirs = report.build(external.read_csv(tmp_path / "runs.csv", "train_loss"), tmp_path / "r2", "train_loss",
                          16)["verdict"]
    assert {p: v["verdict"] for p, v in theirs["params"].items()} == {"sp": "fails", "somup": "transfers"}
    for p in ("sp", "somup"):
        assert theirs["params"][p]["sentence"] == mine["params"][p]["sentence"]
    assert (tmp_path / "r2" / "loss_vs_lr.png").stat().st_size > 10_000 and (tmp_path / "r2" / "drift.png").exists()


def test_wandb_runs_from_an_offline_export_get_the_verdict_their_study_gets(tmp_path, capsys):
    args = ["sweep", *FAST, f"study.root={tmp_path}", "study.name=s", "study.lr=log2:-3:0", "study.widths=[16,32]",
            "study.seeds=[0,1]", "logger.mode=offline"]
    assert main(args) == 0
    study = Study(tmp_path / "s")
    mine = report.build(study, tmp_path / "r1", "train_loss", 16)["verdict"]
    runs = external.read_wandb(str(study.path / "wandb"), "train_loss")
    theirs = report.build(runs, tmp_path / "r2", "train_loss", 16)["verdict"]
    assert len(runs.rows) == len(study.trials())  # the shared base-width runs serve both parameterizations
    for p in ("sp", "somup"):
        assert theirs["params"][p]["verdict"] == mine["params"][p]["verdict"]
        assert [r["regret"] for r in theirs["params"][p]["regret"]] == pytest.approx(
            [r["regret"] for r in mine["params"][p]["regret"]])


@pytest.mark.parametrize("text, problem", [
    ("param,width,lr,seed\nsp,16,0.1,0\n", "no column train_loss"),
    ("param,width,lr,seed,train_loss\nsp,sixteen,0.1,0,0.5\n", "row 1: width is 'sixteen', not a number"),
    ("param,width,lr,seed,train_loss\nsp,16,-0.1,0,0.5\n", "row 1: lr must be > 0"),
    ("param,width,lr,seed,train_loss\nmyp,16,0.1,0,0.5\n", "unknown parameterization(s) ['myp']"),
    ("param,width,lr,seed,train_loss,status\nsp,16,0.1,0,0.5,great\n", "unknown status ['great']"),
])
def test_a_csv_that_cannot_be_read_names_its_row_and_column(tmp_path, text, problem):
    (tmp_path / "runs.csv").write_text(text)
    with pytest.raises(UsageError) as e:
        external.read_csv(tmp_path / "runs.csv", "train_loss")
    assert e.value.key == "--from" and problem in e.value.problem


def test_muso_report_from_a_csv_prints_the_verdict_and_writes_the_report(tmp_path, capsys):
    study = make(tmp_path, outcome, "study.lr=log2:-6:0:0.5", "study.widths=[16,32,64]", "study.seeds=[0,1,2]")
    as_csv(study, tmp_path / "runs.csv")
    capsys.readouterr()
    assert main(["report", "--from", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "r"),
                 "study.delta=0.002"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict:\n  somup: transfers") and "  sp: fails" in out
    assert "δ = 0.002" in out and (tmp_path / "r" / "report.json").exists()
    assert main(["report", "--from", str(tmp_path / "runs.csv"), "train.steps=3"]) == 2
    assert main(["report"]) == 2 and "a study folder or --from" in capsys.readouterr().err
