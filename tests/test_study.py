"""Studies: `muso sweep` → `muso transfer` → `muso report`, resumable, with W&B mirrored offline."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from muso_cli import track
from muso_cli.cli import main
from muso_cli.config import compose, to_container
from muso_cli.errors import UsageError
from muso_cli.study.spec import parse_grid
from muso_cli.study.store import Study
from muso_cli.study.trials import trial_id, with_values
from handmade import FAST
from wandb_records import offline_run


def sweep(tmp_path, *extra, code=0):
    assert main(["sweep", *FAST, f"study.root={tmp_path / 'studies'}", "study.name=s", *extra]) == code
    return Study(tmp_path / "studies" / "s")


def snapshot(study: Study) -> dict:
    """(bytes, mtime) of every result.json: a finished result must never be rewritten."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in study.path.glob("trials/*/result.json")}


# ------------------------------------------------------------------------------------------------------
# Grids and ids

def test_grids():
    assert parse_grid("k", "log2:-3:0") == [0.125, 0.25, 0.5, 1.0]
    assert parse_grid("k", "log10:-4:-2") == pytest.approx([1e-4, 1e-3, 1e-2])
    assert parse_grid("k", "log2:0:1:0.5") == pytest.approx([1.0, 2 ** 0.5, 2.0])
    assert parse_grid("k", [0.1, 3]) == [0.1, 3.0] and parse_grid("k", 0.5) == [0.5]
    for bad in ("log3:0:1", "log2:1:0", "lin:0:1", [0.1, -1], [0.0]):
        with pytest.raises(UsageError) as e:
            parse_grid("study.lr", bad)
        assert e.value.key == "study.lr"


def test_trial_id_ignores_runtime_keys_and_is_shared_at_the_base_width():
    cfg = {p: to_container(compose([*FAST, "model.width=16", f"param={p}"])) for p in ("sp", "somup")}
    base = trial_id(cfg["sp"])
    assert trial_id(with_values(cfg["sp"], lr=0.2)) != base
    runtime = to_container(compose([*FAST, "model.width=16", "param=sp", "logger.mode=offline", "device=cpu", "train.progress=true",
                                    "study.lr=[1]", "train.threads=1"]))
    assert trial_id(runtime) == base
    assert trial_id(cfg["somup"]) == base  # every multiplier is 1 at the base width: one run serves all
    wide = {p: trial_id(with_values(c, width=64)) for p, c in cfg.items()}
    assert wide["sp"] != wide["somup"]


# ------------------------------------------------------------------------------------------------------
# Sweep

def test_sweep_runs_the_grid_once_and_resumes_without_rewriting(tmp_path, capsys):
    study = sweep(tmp_path, "study.lr=log2:-3:0", "study.seeds=[0,1]")
    trials = study.trials()
    assert len(trials) == 2 * 4 * 2 and [t.index for t in trials] == list(range(16))
    assert len({t.id for t in trials}) == 8  # sp and somup share their base-width runs
    assert {study.status(t) for t in trials} == {"ok"}
    for t in trials:
        assert (study.trial_dir(t) / "config.yaml").exists() and (study.trial_dir(t) / "metrics.jsonl").exists()
    before = snapshot(study)
    assert len(before) == 8
    capsys.readouterr()

    sweep(tmp_path, "study.lr=log2:-3:0", "study.seeds=[0,1]")
    assert snapshot(study) == before  # nothing rerun, nothing rewritten
    assert "[" not in capsys.readouterr().err  # no progress lines: no trial ran

    # a failed trial is retried, and only it
    victim = trials[3]
    result_path = study.trial_dir(victim) / "result.json"
    track.write_json(result_path, {"status": "failed", "error": "simulated"})
    others = {p: v for p, v in snapshot(study).items() if p != result_path}
    sweep(tmp_path, "study.lr=log2:-3:0", "study.seeds=[0,1]")
    assert study.status(victim) == "ok"
    assert {p: v for p, v in snapshot(study).items() if p != result_path} == others

    # a larger grid extends the study: old trials keep their indices
    sweep(tmp_path, "study.lr=log2:-3:1", "study.seeds=[0,1]")
    grown = study.trials()
    assert len(grown) == 20 and [t.id for t in grown[:16]] == [t.id for t in trials]


def test_dry_run_prints_the_plan_and_creates_nothing(tmp_path, capsys):
    assert main(["sweep", *FAST, f"study.root={tmp_path / 'studies'}", "study.lr=log2:-3:0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 trials" in out and "4 lr" in out and "4 to run" in out  # sp and somup share their 4 runs
    assert not (tmp_path / "studies").exists()


def test_diverged_trials_are_results_and_never_selected(tmp_path):
    study = sweep(tmp_path, "study.lr=[0.5,1000]", "study.params=[sp]")
    statuses = {t.lr: study.status(t) for t in study.trials()}
    assert statuses == {0.5: "ok", 1000.0: "diverged"}
    assert main(["transfer", str(study.path), "transfer.widths=[32]", "--allow-edge"]) == 0
    assert study.transfers()["sp"]["lr"] == 0.5


@pytest.mark.parametrize("extra, key", [
    (["study.lr=log3:0:1"], "study.lr"),
    (["study.lr=[0.1,-1]"], "study.lr"),
    (["study.params=[sp,nope]"], "study.params"),
    (["study.damping=[0.1]"], "study.damping"),  # sgd has no damping
    (["study.widths=[16,0]"], "study.widths"),
    (["study.metric=accuracy"], "study.metric"),
    (["param=somup"], "param"),                  # the study decides: study.params
    (["optimizer.lr=-1"], "optimizer.lr"),
])
def test_bad_sweep_input_exits_2_before_any_work(tmp_path, capsys, extra, key):
    assert main(["sweep", *FAST, f"study.root={tmp_path / 'studies'}", *extra]) == 2
    assert f"error: {key}" in capsys.readouterr().err
    assert not (tmp_path / "studies").exists()


def test_a_named_study_refuses_other_settings(tmp_path, capsys):
    sweep(tmp_path, "study.lr=[0.5]", "study.params=[sp]")
    capsys.readouterr()
    assert main(["sweep", *FAST, "train.steps=31", f"study.root={tmp_path / 'studies'}", "study.name=s"]) == 2
    err = capsys.readouterr().err
    assert "error: train.steps" in err and "study.name=<new name>" in err


# ------------------------------------------------------------------------------------------------------
# Transfer

def test_transfer_picks_the_best_base_setting_and_records_its_source(tmp_path, capsys):
    study = sweep(tmp_path, "study.lr=log2:-3:0", "study.seeds=[0,1]")
    capsys.readouterr()
    assert main(["transfer", str(study.path), "transfer.widths=[32,64]", "transfer.verify=1", "--allow-edge"]) == 0
    # the choice, recomputed here from the result files: lowest mean final train loss over seeds (the optimum is
    # at the grid's edge, so its valley is not bracketed and the grid optimum is what transfers)
    rows = [(t.param, t.lr, study.result(t)["final"]["train_loss"]) for t in study.trials() if t.phase == "sweep"]
    means = pd.DataFrame(rows, columns=["param", "lr", "loss"]).groupby(["param", "lr"]).loss.mean()
    transfers = study.transfers()
    for param in ("sp", "somup"):
        assert transfers[param]["lr"] == means[param].idxmin()
        assert transfers[param]["value"] == pytest.approx(means[param].min())
        sources = {t.id: t for t in study.trials() if t.param == param}
        assert all(sources[i].lr == transfers[param]["lr"] for i in transfers[param]["trials"])
        moved = [t for t in study.trials() if t.id in transfers[param]["transfer_trials"] and t.param == param]
        assert sorted((t.width, t.seed) for t in moved) == [(32, 0), (32, 1), (64, 0), (64, 1)]
        assert all(study.status(t) == "ok" and t.lr == transfers[param]["lr"] for t in moved)
    assert "best setting at base width 16" in capsys.readouterr().out


def test_transfer_verifies_around_the_transferred_lr_at_every_target_width(tmp_path, capsys):
    """transfer.verify=5 (the default): at each target width the transferred lr and half an octave and an octave
    either side, every seed; the regret table of the report then has a fitted valley at each target width."""
    study = sweep(tmp_path, "study.lr=log2:-3:0:0.5", "study.seeds=[0,1]", "study.params=[somup]")
    assert main(["transfer", str(study.path), "transfer.widths=[64]", "--allow-edge"]) == 0
    lr = study.transfers()["somup"]["lr"]
    at_64 = sorted({(t.phase, round(math.log2(t.lr / lr), 6)) for t in study.trials() if t.width == 64})
    assert at_64 == [("transfer", 0.0), ("verify", -1.0), ("verify", -0.5), ("verify", 0.5), ("verify", 1.0)]
    assert sorted(t.seed for t in study.trials() if t.width == 64) == [0] * 5 + [1] * 5
    capsys.readouterr()
    assert main(["report", str(study.path)]) == 0
    out = capsys.readouterr().out
    assert "regret of the transferred setting per width" in out and "compute:" in out


@pytest.mark.parametrize("args, key", [
    (["transfer.widths=[8,32]"], "transfer.widths"),   # below the base width
    ([], "transfer.widths"),                           # no target widths (the sweep's are not reused)
    (["study.widths=[32]"], "study.widths"),           # the sweep's key: refused, naming transfer.widths
    (["train.steps=99", "transfer.widths=[32]"], "train.steps"),  # transfer keeps the sweep's settings
])
def test_bad_transfer_input_exits_2(tmp_path, capsys, args, key):
    study = sweep(tmp_path, "study.lr=[0.5]", "study.params=[sp]")
    capsys.readouterr()
    assert main(["transfer", str(study.path), *args]) == 2
    assert f"error: {key}" in capsys.readouterr().err


def test_unreadable_study_folder_exits_2(tmp_path, capsys):
    assert main(["transfer", str(tmp_path), "transfer.widths=[32]"]) == 2
    assert "not a study folder" in capsys.readouterr().err
    (tmp_path / "study.yaml").write_text("name: x\n")
    (tmp_path / "trials.jsonl").write_text("{not json\n")
    assert main(["report", str(tmp_path)]) == 2
    assert "cannot be read" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------
# Report

def test_report_tables_plots_and_skipped_folders(tmp_path, capsys):
    study = sweep(tmp_path, "study.lr=log2:-3:0", "study.widths=[16,32]")
    assert main(["transfer", str(study.path), "transfer.widths=[32,64]", "--allow-edge"]) == 0
    entries = study.trials()
    # a half-written trial (config only) and an unreadable result are skipped and counted, never fatal
    half, garbled = entries[0], entries[-1]
    (study.trial_dir(half) / "result.json").unlink()
    (study.trial_dir(garbled) / "result.json").write_text('{"status": "ok", "fin')
    capsys.readouterr()
    assert main(["report", str(study.path)]) == 0
    out = capsys.readouterr().out
    shared = sum(1 for t in entries if t.id == half.id)
    assert f"skipped: {shared} pending, 1 unreadable" in out and "headline" in out
    accuracy = out.split("test accuracy of the transferred setting per width")[1].splitlines()
    # the transferred setting at every width it ran at: the sweep's (16, 32) and the transfer's (64)
    assert accuracy[1].split() == ["param", "w16", "w32", "w64"]
    assert [row.split()[0] for row in accuracy[2:4]] == ["sp", "somup"]
    report = study.path / "report"
    df = pd.read_parquet(report / "results.parquet")
    assert len(df) == len(entries) - shared - 1
    assert {"param", "width", "lr", "status", "final_train_loss", "config.model.depth"} <= set(df.columns)
    pd.testing.assert_frame_equal(df, pd.read_parquet(report / "results.parquet"))
    for png in ("loss_vs_lr.png", "curves.png"):
        assert (report / png).stat().st_size > 10_000
    md = (report / "report.md").read_text()
    assert "## Drift of the fitted optimum" in md and "## Regret of the transferred setting (what decides)" in md

    # drift and regret, recomputed here from the fitted valleys of report.json and from the table
    res = __import__("muso_cli.report", fromlist=["x"])
    built = res.build(study, tmp_path / "r2", "train_loss", 16)
    tables, cells = built["tables"], {(c["param"], c["width"]): c for c in built["verdict"]["cells"]}
    sweep_rows = df[df.phase == "sweep"]
    for param in ("sp", "somup"):
        axes = {w: cells[param, w]["optimum"]["axes"]["lr"] for w in (16, 32)}
        fitted = {w: axes[w]["fit"]["x_hat"] for w in (16, 32)}
        assert all(abs(fitted[w] - axes[w]["log2"]) <= 1.0 for w in (16, 32))  # within reach of the grid optimum
        drift = tables["drift"].set_index(["param", "width"]).loc[(param, 32), "drift_octaves"]
        assert drift == pytest.approx(fitted[32] - fitted[16])
        regret = tables["regret"].set_index(["param", "width"]).loc[(param, 32), "regret"]
        at_32 = sweep_rows[(sweep_rows.param == param) & (sweep_rows.width == 32)]
        assert 0 <= regret <= at_32.final_train_loss.max() - at_32.final_train_loss.min()


def test_report_of_a_damping_only_grid_gives_the_damping_drift(tmp_path, capsys):
    """The paper's damping-transfer study fixes lr and sweeps damping: the optimum and its drift come from the
    damping grid (log2 of damping*/damping*_base), and the (single) lr gets no verdict."""
    study = sweep(tmp_path, "optimizer=kfac", "study.lr=[0.5]", "study.damping=[0.01,0.1,1]", "study.params=[somup]",
                  "study.widths=[16,32]")
    res = __import__("muso_cli.report", fromlist=["x"])
    tables = res.build(study, tmp_path / "r", "train_loss", 16)["tables"]
    df = pd.read_parquet(tmp_path / "r" / "results.parquet")
    best = {w: g.groupby("damping").final_train_loss.mean().idxmin() for w, g in df.groupby("width")}
    assert set(tables["drift"].axis) == {"damping"}
    drift = tables["drift"].set_index("width")
    assert list(drift.index) == [32]
    optima = tables["optima"].set_index("width")
    assert optima.loc[32, "damping*"] == pytest.approx(best[32])
    fitted = {w: float(optima.loc[w, "fitted log2 damping*"]) for w in (16, 32)}
    assert drift.loc[32, "drift_octaves"] == pytest.approx(fitted[32] - fitted[16], abs=0.006)
    assert all(abs(fitted[w] - math.log2(best[w])) <= math.log2(10) for w in (16, 32))
    assert tables["optima"].settings.tolist() == [3, 3]
    assert (tmp_path / "r" / "loss_vs_damping.png").stat().st_size > 10_000
    assert not (tmp_path / "r" / "loss_vs_lr.png").exists()


# ------------------------------------------------------------------------------------------------------
# Status and run-trial

def test_status_and_run_trial(tmp_path, capsys):
    study = sweep(tmp_path, "study.lr=[0.25,0.5]", "study.params=[sp]")
    track.write_json(study.trial_dir(study.trials()[1]) / "result.json", {"status": "failed"})
    capsys.readouterr()
    assert main(["status", str(study.path), "--list"]) == 0
    out = capsys.readouterr().out
    assert "2 trials: 1 ok, 0 diverged, 1 failed, 0 running, 0 pending" in out
    before = snapshot(study)
    assert main(["run-trial", str(study.path), "0"]) == 0  # finished: skipped, untouched
    assert main(["run-trial", str(study.path), "1"]) == 0  # failed: run again
    after = snapshot(study)
    assert after[study.trial_dir(study.trials()[0]) / "result.json"] == before[
        study.trial_dir(study.trials()[0]) / "result.json"]
    assert study.status(study.trials()[1]) == "ok"
    assert main(["run-trial", str(study.path), "7"]) == 2


# ------------------------------------------------------------------------------------------------------
# W&B mirror (offline: no network, no account)

def test_wandb_offline_mirror_matches_the_files(tmp_path):
    study = sweep(tmp_path, "study.lr=[0.5]", "study.params=[sp]", "logger.mode=offline", "logger.project=p")
    trial = study.trials()[0]
    run = offline_run(study.path, trial.id)  # one W&B folder per study: <study>/wandb
    assert len(run["files"]) == 1
    assert run["run"].run_id == trial.id and run["run"].project == "p"
    assert run["run"].display_name == "sp-w16-lr0.5-s0"
    assert run["run"].run_group == "s" and run["run"].job_type == "sweep"
    assert set(run["run"].tags) == {"param:sp", "optimizer:sgd", "width:16"}
    metrics = track.read_json_lines(study.trial_dir(trial) / "metrics.jsonl")
    assert [h["_step"] for h in run["history"]] == [m["step"] for m in metrics] == [0, 10, 20, 30]
    assert [h["train_loss"] for h in run["history"]] == [m["train_loss"] for m in metrics]
    result = study.result(trial)
    assert run["summary"]["status"] == "ok"
    assert run["summary"]["final/train_loss"] == result["final"]["train_loss"]


def test_the_report_goes_to_the_studys_wandb_group_with_its_verdict_and_figures(tmp_path, capsys):
    study = sweep(tmp_path, "study.lr=log2:-3:0", "study.params=[sp]", "study.seeds=[0,1]", "logger.mode=offline",
                  "logger.project=p")
    capsys.readouterr()
    assert main(["report", str(study.path)]) == 0
    run = offline_run(study.path, "s-report")
    assert run["run"].run_group == "s" and run["run"].job_type == "report" and run["run"].project == "p"
    saved = json.loads((study.path / "report" / "report.json").read_text())
    assert run["summary"]["verdict/sp"] == saved["params"]["sp"]["verdict"]
    assert run["summary"]["sentence/sp"] == saved["params"]["sp"]["sentence"]
    assert run["history"][0]["figure/loss_vs_lr/_type"] == "image-file"
    files = run["files"][0].parent / "files"
    assert (files / "report.json").read_bytes() == (study.path / "report" / "report.json").read_bytes()
    # logger.mode=disabled on the command line: nothing more is mirrored
    before = sorted((study.path / "wandb").iterdir())
    assert main(["report", str(study.path), "logger.mode=disabled"]) == 0
    assert sorted((study.path / "wandb").iterdir()) == before


def test_wandb_names_tags_and_diverged_summaries_read_like_the_study(tmp_path):
    """A base-width run shared by sp and somup is tagged with both; a diverged run's summary says what its
    result says (no blown-up batch loss as its train_loss)."""
    # lr 300 diverges once the trust region is off (with it, K-FAC's step is clipped and trains)
    study = sweep(tmp_path, "study.lr=[0.5,300]", "optimizer=kfac", "optimizer.damping=0.1", "optimizer.kl_clip=null",
                  "logger.mode=offline")
    by_lr = {t.lr: t for t in study.trials() if t.param == "sp"}
    shared = offline_run(study.path, by_lr[0.5].id)
    assert shared["run"].display_name == "sp+somup-w16-lr0.5-d0.1-s0"
    assert {"param:sp", "param:somup"} <= set(shared["run"].tags)
    diverged = offline_run(study.path, by_lr[300.0].id)
    assert study.result(by_lr[300.0])["status"] == "diverged"
    assert diverged["summary"]["status"] == "diverged"
    assert diverged["summary"]["train_loss"] is None and diverged["summary"]["final/train_loss"] is None


# ------------------------------------------------------------------------------------------------------
# Interrupt and resume (a real process and a real signal)

@pytest.fixture
def restore_threads():
    import torch
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_sigterm_mid_sweep_then_rerun_finishes_the_rest_only(tmp_path, restore_threads):
    # one thread everywhere, so the resumed run and the uninterrupted one add floats in the same order
    run_args = [*FAST, "train.steps=400", "train.eval_every=50", "model.width=16", "train.threads=1"]
    args = [*run_args, "study.lr=log2:-4:0", "study.params=[sp]", f"study.root={tmp_path / 'studies'}",
            "study.name=s"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "muso_cli", "sweep", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    study = Study(tmp_path / "studies" / "s")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(study.path.glob("trials/*/result.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    finished = snapshot(study)
    assert 2 <= len(finished) < 5
    interrupted = [t for t in study.trials() if (study.trial_dir(t) / "checkpoint.pt").exists()]
    assert len(interrupted) == 1  # the trial in progress saved its state at a step boundary

    assert main(["sweep", *args]) == 0
    assert all(study.status(t) == "ok" for t in study.trials())
    now = snapshot(study)
    assert {p: now[p] for p in finished} == finished  # finished results untouched
    assert len(now) == 5
    # a trial stopped mid-run resumed from its checkpoint: the same numbers as an uninterrupted run
    for t in interrupted:
        steps = [m["step"] for m in track.read_json_lines(study.trial_dir(t) / "metrics.jsonl")]
        assert steps == sorted(set(steps)) and steps[-1] == 400
        fresh = tmp_path / "fresh"
        assert main(["run", *run_args, "param=sp", f"optimizer.lr={t.lr}", f"hydra.run.dir={fresh}"]) == 0
        assert study.result(t)["final"] == json.loads((fresh / "result.json").read_text())["final"]
