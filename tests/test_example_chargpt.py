"""The example of your own training loop (examples/chargpt): a character-level GPT whose script trains it with its
own loop, driven by muso through trainer=command: sweep → transfer → report, and the same script under torchrun
(DDP on CPU, gloo) through the same contract."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from muso_cli import track
from muso_cli.study.store import Study

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "chargpt"
pytestmark = pytest.mark.slow


def run_example(out: Path, *overrides: str, **env: str) -> subprocess.CompletedProcess:
    muso = Path(sys.executable).parent / "muso"
    environment = {**os.environ, "WANDB_MODE": "disabled", "MUSO": str(muso), "PYTHON": sys.executable,
                   "STEPS": "30", **env}
    return subprocess.run(["bash", str(EXAMPLE / "run.sh"), str(out), *overrides], capture_output=True, text=True,
                          env=environment, timeout=1200)


def test_the_example_runs_sweep_transfer_and_report_through_its_own_script(tmp_path):
    done = run_example(tmp_path, "study.lr=log2:-6:-3", "study.seeds=[0,1]",
                       TRANSFER="transfer.widths=[128,256] transfer.verify=3", REFINE="study.refine_to=1")
    assert done.returncode == 0, done.stderr[-3000:]
    study = Study(tmp_path / "chargpt-muon")
    trials = study.trials()
    assert {"sweep", "transfer", "verify"} <= {t.phase for t in trials} <= {"sweep", "refine", "transfer", "verify"}
    assert all(study.status(t) in track.FINAL_STATUSES for t in trials)
    some = study.result(trials[0])
    assert some["trainer"] == "command" and "chargpt.py --width 64" in some["command"]
    saved = json.loads((study.path / "report" / "report.json").read_text())
    assert set(saved["params"]) == {"sp", "somup"}
    assert all(len(pv["regret"]) == 2 for pv in saved["params"].values())  # judged at 128 and 256 from its runs
    assert "verdict:" in done.stdout and "adjust_lr_fn=none" in done.stdout  # muso params showed the model


def test_the_same_script_runs_each_trial_as_a_two_process_ddp_job(tmp_path):
    done = run_example(tmp_path, "study.lr=[0.03]", "study.params=[somup]", "study.seeds=[0]", DDP="2",
                       TRANSFER="transfer.widths=[128] transfer.verify=1")
    assert done.returncode == 0, done.stderr[-3000:]
    study = Study(tmp_path / "chargpt-muon")
    for t in study.trials():
        rows = track.read_json_lines(study.trial_dir(t) / track.METRICS)
        assert study.status(t) == "ok" and {r["processes"] for r in rows} == {2}
        assert [r["step"] for r in rows] == [0, 30]  # rank 0 alone wrote them
        assert "torch.distributed.run --standalone --nproc_per_node=2" in study.result(t)["command"]
