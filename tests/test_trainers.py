"""Your own training loop: trainer=command runs a script per trial (the contract of muso_cli.trainers.command:
its environment, metrics.jsonl, the result's rules, stops, timeouts, resume) and trainer=python calls a
function; sweep, transfer and report work on their runs as on muso's own."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from handmade import FAST
from muso_cli import track
from muso_cli.cli import main
from muso_cli.study.store import Study

# A training script as people write them, minus the training: it reads the trial muso gives it and reports a
# loss valley in log2 lr (minimum at 2^-3 at every width) and a test accuracy, or misbehaves when asked to.
SCRIPT = textwrap.dedent('''
    import json, math, os, sys, time
    from pathlib import Path
    lr, width, mode = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    folder = Path(os.environ["MUSO_TRIAL_DIR"])
    assert "optimizer:" in Path(os.environ["MUSO_TRIAL_CONFIG"]).read_text()
    if mode == "crash":
        print("something broke in the user's code", file=sys.stderr)
        sys.exit(3)
    if mode == "quiet":
        sys.exit(0)
    start = 0
    if os.environ.get("MUSO_RESUME") == "1":
        start = len((folder / "metrics.jsonl").read_text().splitlines())
        (folder / "resumed").write_text("yes")
    with open(folder / "metrics.jsonl", "a") as f:
        for step in range(start, 4):
            loss = 0.3 + 0.05 * (math.log2(lr) + 3) ** 2 + 0.1 / (step + 1)
            if mode == "nan" and step == 2:
                loss = float("nan")
            if mode == "garbage" and step == 2:
                f.write("not json\\n")
            f.write(json.dumps({"step": step * 10, "train_loss": loss, "test_acc": 0.9 - loss / 10}) + "\\n")
            f.flush()
            if mode == "slow" or (mode == "pausable" and (folder.parents[2] / "pause").exists()):
                time.sleep(30)
''')


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


def command(script: Path, mode: str = "ok") -> str:
    return f"trainer.command='{sys.executable} {script} ${{optimizer.lr}} ${{model.width}} {mode}'"


def sweep(tmp_path, *extra) -> Study:
    assert main(["sweep", *FAST, "trainer=command", f"study.root={tmp_path}", "study.name=s", "study.params=[sp]",
                 *extra]) in (0, 1)
    return Study(tmp_path / "s")


def test_a_command_trains_every_trial_with_its_own_values_and_muso_judges_its_runs(tmp_path, script, capsys):
    study = sweep(tmp_path, command(script), "study.lr=log2:-5:-1", "study.seeds=[0,1]", "study.params=[sp,somup]")
    trials = study.trials()
    assert {study.status(t) for t in trials} == {"ok"}
    for t in trials:
        folder = study.trial_dir(t)
        result = study.result(t)
        metrics = track.read_json_lines(folder / track.METRICS)
        assert result["final"]["train_loss"] == metrics[-1]["train_loss"] and result["steps"] == 30
        assert result["trainer"] == "command" and result["exit_status"] == 0
        # the command line was resolved with this trial's lr and width
        assert result["command"].split()[-3:] == [str(t.lr), str(t.width), "ok"]
        assert (folder / track.CONFIG).exists() and (folder / "stdout.log").exists()
    capsys.readouterr()
    assert main(["transfer", str(study.path), "transfer.widths=[32]"]) == 0
    assert main(["report", str(study.path)]) == 0
    out = capsys.readouterr().out
    assert "sp: transfers" in out and "somup: transfers" in out  # the valley does not move: the script's own
    saved = json.loads((study.path / "report" / "report.json").read_text())
    assert saved["params"]["sp"]["transferred"]["lr"] == pytest.approx(2 ** -3, rel=0.05)


@pytest.mark.parametrize("mode, status, reason", [
    ("crash", "failed", "exited with status 3; stderr ends: something broke in the user's code"),
    ("quiet", "failed", "the command wrote no metrics"),
    ("garbage", "failed", "metrics.jsonl line 3 is not JSON"),
    ("nan", "diverged", "train loss nan at step 20"),
])
def test_a_command_that_misbehaves_is_one_trial_with_the_reason(tmp_path, script, mode, status, reason):
    study = sweep(tmp_path, command(script, mode), "study.lr=[0.125]")
    (trial,) = study.trials()
    result = study.result(trial)
    assert result["status"] == status
    assert reason in (result.get("error") or result.get("diverged_reason") or "")
    if mode == "crash":
        assert "something broke" in (study.trial_dir(trial) / "stderr.log").read_text()


def test_a_command_that_does_not_exist_or_never_finishes_is_a_failed_trial(tmp_path, script):
    study = sweep(tmp_path, "trainer.command=no-such-program-here", "study.lr=[0.125,0.25]")
    for t in study.trials():
        assert study.status(t) == "failed" and "exited with status 127" in study.result(t)["error"]
    slow = sweep(tmp_path, command(script, "slow"), "trainer.timeout_min=0.02", "trainer.stop_grace_s=1",
                 "study.name=slow", "study.lr=[0.125]")
    (trial,) = Study(tmp_path / "slow").trials()
    result = Study(tmp_path / "slow").result(trial)
    assert result["status"] == "failed" and "timed out after trainer.timeout_min=0.02 min" in result["error"]
    assert slow is not None


@pytest.mark.parametrize("extra, key", [
    (["trainer=command"], "trainer.command"),                                       # ??? : the command is missing
    (["trainer=command", "trainer.command=''"], "trainer.command"),
    (["trainer=command", "trainer.command='x ${nope.key}'"], "trainer.command"),
    (["trainer=command", "trainer.command=x", "trainer.timeout_min=-1"], "trainer.timeout_min"),
    (["trainer=command", "trainer.command=x", "trainer.stop_grace_s=0"], "trainer.stop_grace_s"),
    (["trainer=python"], "trainer._target_"),
    (["trainer=python", "trainer._target_=no.such.module.fit"], "trainer._target_"),
    (["trainer=builtin", "+trainer.command=x"], "trainer.command"),
])
def test_bad_trainer_keys_exit_2_before_any_work(tmp_path, capsys, extra, key):
    assert main(["sweep", *FAST, f"study.root={tmp_path}", *extra]) == 2
    err = capsys.readouterr().err
    assert f"error: {key}" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def fit(cfg, folder):
    """A training function for trainer=python: reports its lr's valley, and crashes at lr 1."""
    from muso_cli.api import Metrics

    if cfg.optimizer.lr == 1.0:
        raise RuntimeError("the user's function crashed")
    metrics = Metrics(folder)
    for step in range(3):
        metrics.log(step, train_loss=0.5 + abs(cfg.optimizer.lr - 0.25) + 0.1 / (step + 1), test_acc=0.8)


def test_trainer_python_calls_a_function_in_a_process_of_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", f"{Path(__file__).parent}:{os.environ.get('PYTHONPATH', '')}")
    study = sweep(tmp_path, "trainer=python", "trainer._target_=test_trainers.fit", "study.lr=[0.25,1.0]")
    by_lr = {t.lr: study.result(t) for t in study.trials()}
    assert by_lr[0.25]["status"] == "ok" and by_lr[0.25]["final"]["train_loss"] == pytest.approx(0.5 + 0.1 / 3)
    assert by_lr[1.0]["status"] == "failed" and "exited with status 1" in by_lr[1.0]["error"]
    assert "the user's function crashed" in by_lr[1.0]["stderr_tail"]


def test_a_stopped_command_is_interrupted_and_resumes_where_it_left_off(tmp_path, script):
    """SIGTERM the sweep while its command runs: the command's process group is stopped, nothing is failed, and
    the same command again starts the trial with MUSO_RESUME=1 (the script appends from where it was)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-m", "muso_cli", "sweep", *FAST, "trainer=command", f"study.root={tmp_path}",
            "study.name=s", "study.params=[sp]", "study.lr=[0.125]", "trainer.stop_grace_s=2",
            command(script, "pausable").replace("'", "")]
    (tmp_path / "pause").write_text("")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = None
    deadline = time.time() + 60
    while time.time() < deadline:
        found = list(tmp_path.glob("s/trials/*/metrics.jsonl"))
        if found and found[0].read_text().strip():
            metrics = found[0]
            break
        time.sleep(0.2)
    assert metrics is not None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    folder = metrics.parent
    assert not (folder / track.RESULT).exists() and not (folder / "resumed").exists()
    (tmp_path / "pause").unlink()
    assert subprocess.run(args, env=env, capture_output=True).returncode == 0
    assert (folder / "resumed").read_text() == "yes"
    assert track.read_json(folder / track.RESULT)["status"] == "ok"
    assert [r["step"] for r in track.read_json_lines(metrics)] == [0, 10, 20, 30]
