"""Bad input exits 2 before any work, naming the key and the fix; nothing is written.

The battery of scripts/bad_inputs.py (every config section, grids, study names and roots, outputs, --config-dir
files, models of your own, crafted shared studies, edited trials.jsonl entries, faults) is asserted case by case:
a bad input exits 2, names its key, says the fix, shows no traceback, writes nothing and runs no code of a study
someone else made; a case that should go through does what it says. The faults (a subprocess each) and the cases
that train are slow.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from muso_cli.study import claims
from muso_cli.cli import main
from muso_cli.study.store import Study

_spec = importlib.util.spec_from_file_location("bad_inputs", Path(__file__).resolve().parents[1] / "scripts" /
                                               "bad_inputs.py")
battery = sys.modules["bad_inputs"] = importlib.util.module_from_spec(_spec)  # registered first: dataclasses
_spec.loader.exec_module(battery)

FAST = ["data=synthetic", "data.n_train=512", "data.n_test=256", "model.base_width=16", "train.steps=30",
        "train.eval_every=10", "train.progress=false"]


@pytest.mark.parametrize("extra, key", [
    (["launcher=pool", "launcher.workers=abc"], "launcher.workers"),
    (["launcher=pool", "launcher.workers=-1"], "launcher.workers"),
    (["launcher=pool", "launcher.workers=0"], "launcher.workers"),
    (["launcher=pool", "launcher.per_gpu=0"], "launcher.per_gpu"),
    (["study.lr=log10:300:400"], "study.lr"),
    (["study.lr=log2:-10:10:0.001"], "study.lr"),
    (["data.dim=0"], "data.dim"),
    (["study.widths=[8,16]"], "study.widths"),        # below the base width 16
    (["model.bias=maybe"], "model.bias"),
    (["+model.dropout=0.1"], "model.dropout"),          # ignored, yet it would change every trial id
    (["+foo=1"], "foo"),
    (["study.root="], "study.root"),
    (["study.name=../x"], "study.name"),
    (["study.name=/abs/x"], "study.name"),
    (["data.n_train=64", "train.batch_size=128"], "data.n_train"),
    (["study.lr=0.1,0.2", "optimizer.lr=0.1"], "optimizer.lr"),  # two grids for one key
    (["model.width=256"], "model.width"),              # a sweep trains at study.widths (here [16])
    (["seed=3"], "seed"),
    (["hydra/launcher=joblib"], "hydra/launcher"),
    (["hydra.run.dir=/tmp/x"], "hydra.run.dir"),
    (["model.depth=2,3"], "model.depth"),              # a comma list outside the study keys
    (["study.seeds=[0,1]", "study.max_trials=3"], "study.max_trials"),  # 2 params × 10 lr × 2 seeds > 3
    (["launcher.batch=4"], "launcher.batch"),          # the batched engine was retired: says so
    (["+launcher.batch=4"], "launcher.batch"),
])
def test_bad_sweep_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, key):
    root = tmp_path / "studies"
    code = main(["sweep", *FAST, f"study.root={root}", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: {key}" in err and "Fix:" in err and "Traceback" not in err
    assert not root.exists() and not (tmp_path / "x").exists()


def test_a_study_root_that_is_a_file_or_unwritable_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["sweep", *FAST, f"study.root={tmp_path / 'file'}"]) == 2
    assert "error: study.root" in capsys.readouterr().err


def test_launcher_slurm_without_slurm_is_refused_before_the_study_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert main(["sweep", *FAST, f"study.root={tmp_path / 'studies'}", "launcher=slurm"]) == 2
    err = capsys.readouterr().err
    assert "error: launcher" in err and "sbatch" in err
    assert not (tmp_path / "studies").exists()


def test_comma_lists_are_grid_values_and_optimizer_lr_alone_is_a_one_point_grid(tmp_path, capsys):
    assert main(["sweep", *FAST, f"study.root={tmp_path / 's'}", "study.lr=0.1,0.2", "study.params=[sp]",
                 "--dry-run"]) == 0
    assert "2 lr [0.1, 0.2]" in capsys.readouterr().out
    assert main(["sweep", *FAST, f"study.root={tmp_path / 's'}", "optimizer.lr=0.05", "study.params=[sp]",
                 "--dry-run"]) == 0
    assert "1 lr [0.05]" in capsys.readouterr().out


def test_a_large_grid_needs_yes(tmp_path, capsys):
    args = ["sweep", *FAST, f"study.root={tmp_path / 's'}", "study.params=[sp]", "study.lr=[0.1,0.2]",
            "study.max_trials=1", "--dry-run"]
    assert main(args) == 2 and "--yes" in capsys.readouterr().err
    assert main([*args, "--yes"]) == 0


def test_run_refuses_a_study_launcher(tmp_path, capsys):
    assert main(["run", *FAST, "launcher=slurm", f"hydra.run.dir={tmp_path / 'r'}"]) == 2
    assert "error: launcher" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_unicode_study_name_gets_the_quoting_hint(tmp_path, capsys):
    assert main(["sweep", *FAST, f"study.root={tmp_path}", "study.name=étude", "--dry-run"]) == 2
    assert "quote the value" in capsys.readouterr().err
    assert main(["sweep", *FAST, f"study.root={tmp_path}", "study.name='étude'", "--dry-run"]) == 0


def test_status_refuses_overrides_and_survives_a_closed_pipe(tmp_path, capsys):
    assert main(["sweep", *FAST, f"study.root={tmp_path}", "study.name=s", "study.params=[sp]",
                 "study.lr=[0.1]", "--no-launch"]) == 0
    capsys.readouterr()
    assert main(["status", str(tmp_path / "s"), "extra=1"]) == 2
    assert "takes no overrides" in capsys.readouterr().err
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    piped = subprocess.run(f"{sys.executable} -m muso_cli status {tmp_path / 's'} --list | head -c 1",
                           shell=True, capture_output=True, text=True, env=env)
    assert "Traceback" not in piped.stderr and "BrokenPipe" not in piped.stderr


def test_run_trial_without_an_index_says_what_is_missing(capsys):
    assert main(["run-trial"]) == 2
    err = capsys.readouterr().err
    assert "error: study: is missing" in err and "usage:" in err


def test_bash_completion_completes_subcommands_and_overrides(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = subprocess.run([sys.executable, "-m", "muso_cli", "run", "--shell-completion", "install=bash"],
                            capture_output=True, text=True, env=env, check=True).stdout
    assert "complete -o nospace -o default -F _muso_complete muso" in script and "muso-run" not in script
    query = subprocess.run([sys.executable, "-m", "muso_cli", "--shell-completion", "query=bash"],
                           capture_output=True, text=True, env={**env, "COMP_LINE": "muso sweep optimizer=k"})
    assert query.stdout.split() == ["optimizer=kfac"]


@pytest.mark.slow
def test_pool_workers_exit_when_their_launcher_is_killed(tmp_path):
    """SIGKILL the sweep's process: its pool workers notice, checkpoint the trial in progress and exit."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    root = tmp_path / "studies"
    proc = subprocess.Popen([sys.executable, "-m", "muso_cli", "sweep", *FAST, "train.steps=20000",
                             "train.eval_every=200", f"study.root={root}", "study.name=s", "study.params=[sp]",
                             "study.lr=[0.01,0.02]", "launcher=pool", "launcher.workers=2"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    pids = []
    while time.time() < deadline and len(pids) < 2:
        pids = [claims.holder(p.parent)["pid"] for p in root.glob("s/trials/*/claim.json")
                if claims.holder(p.parent)]
        time.sleep(0.5)
    assert len(pids) == 2
    time.sleep(2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while time.time() < deadline and any(claims._pid_alive(p) for p in pids):
        time.sleep(0.5)
    assert not any(claims._pid_alive(p) for p in pids)
    study = Study(root / "s")
    assert all((study.trial_dir(t) / "checkpoint.pt").exists() for t in study.trials())
    assert not any(claims.is_running(study.trial_dir(t)) for t in study.trials())  # claims released


def _case_id(case) -> str:
    return case.id.encode("unicode_escape").decode()[:120]


@pytest.mark.parametrize("case", [pytest.param(c, id=_case_id(c), marks=[pytest.mark.slow] if c.slow else [])
                                  for c in battery.CASES])
def test_the_battery(case, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    outcome = battery.run_case(case, ws)
    shown = f"{battery.argv_of(case, ws, None)}\n{outcome.output[-3000:]}"
    assert "Traceback" not in outcome.output and outcome.code is not None, shown
    if case.key is not None:  # a bad input: refused, the key named, the fix said, nothing written, no code run
        assert outcome.code == 2, shown
        assert battery.names_key(case, outcome, ws), shown
        assert "Fix:" in outcome.output, shown
        assert case.may_write or not outcome.written, (outcome.written, shown)
        assert not outcome.marker, shown
    else:  # valid input near the edge, or a shared study read as data: as the case says
        assert outcome.code == case.expect, shown
        assert case.words in outcome.output and not (case.absent and case.absent in outcome.output), shown
        assert outcome.marker == case.marker, shown
    assert battery.judge(case, outcome, ws)[0] in (battery.CLEAN, battery.GOOD), shown


def test_the_battery_covers_every_part_of_issue_27():
    groups = {c.group for c in battery.CASES}
    assert groups >= {"train", "model", "data", "optimizer", "param", "study", "launcher", "overrides",
                      "config-dir", "outputs", "coord", "transfer", "own-model", "shared-study", "edited", "faults"}
    assert sum(c.key is not None for c in battery.CASES) >= 250
    assert {c.fault.split(":")[0] for c in battery.CASES if c.fault} == {"readonly", "fsize"}


# Depth (issue 29): each bad depth input exits 2 naming its key, before any work.
DEPTH = ["model=resmlp", "data=synthetic", "data.n_train=512", "data.n_test=256"]


@pytest.mark.parametrize("command, extra, key", [
    ("params", ["model.depth=0"], "model.depth"),                                 # a depth below 1
    ("params", ["model.depth=2", "model.base_depth=4"], "model.base_depth"),     # the base above the depth
    ("params", ["model=gpt", "data=pystdlib", "model.base_depth=3"], "model.base_depth"),  # GPT: model.layers = 2
    ("params", ["model=gpt", "data=pystdlib", "model.layers=0"], "model.layers"),
    ("params", ["param=somup", "param.depth_alpha=0.75"], "param.depth_alpha"),  # α outside 0, ½, 1
    ("params", ["param=somup", "param.depth_alpha=abc"], "param.depth_alpha"),
    ("coord-check", ["coord.depths=[0,2,4]"], "coord.depths"),
    ("coord-check", ["coord.depths=[2]"], "coord.depths"),                       # one depth has no slope
    ("coord-check", ["model.base_depth=4", "model.depth=4", "coord.depths=[2,4,8,16]"], "coord.depths"),  # below base
    ("coord-check", ["model=mlp", "coord.depths=[2,4,8]"], "coord.depths"),      # no residual blocks to vary
    ("coord-check", ["coord.depths=[2,4,8]"], "coord.fit_from"),                 # fitted from 8: one depth left
    ("coord-check", ["coord.fresh_batches=maybe", "coord.depths=[2,8,16,32]"], "coord.fresh_batches"),
    ("sweep", ["study.depths=[2,4]", "study.widths=[128,256]"], "study.depths"),  # one scale axis at a time
    ("sweep", ["study.depths=[1,2]"], "study.depths"),                           # below the base depth 2
    ("sweep", ["model=mlp", "study.depths=[3,4]"], "study.depths"),
    ("sweep", ["study.depths=[2,4]", "model.depth=8"], "model.depth"),            # set per trial by the study
    ("sweep", ["model=custom", "model._target_=muso_cli.models.mlp.MLP", "model.width_arg=width",
               "model.input_shape_arg=input_shape", "model.num_classes_arg=num_classes", "study.depths=[2,4]"],
     "model.depth_arg"),                                                         # your model: no depth argument named
])
def test_bad_depth_input_exits_2_naming_the_key(tmp_path, capsys, command, extra, key):
    root = tmp_path / "studies"
    study = [f"study.root={root}"] if command == "sweep" else []
    out = [f"coord.out={tmp_path / 'coord'}"] if command == "coord-check" else []
    code = main([command, *DEPTH, *extra, *study, *out])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: {key}" in err and "Fix:" in err and "Traceback" not in err
    assert not root.exists() and not (tmp_path / "coord").exists()
