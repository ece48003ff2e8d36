"""`muso run`: a plain Hydra app on real data, results as files, clean errors with exit status 2."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import yaml

from conftest import needs_fmnist
from muso_cli.cli import main
from muso_cli.track import read_json, read_json_lines

FAST = ["data=synthetic", "train.steps=30", "train.eval_every=10", "train.progress=false"]


def run_ok(tmp_path, *overrides, name="run"):
    out = tmp_path / name
    assert main(["run", *overrides, f"hydra.run.dir={out}"]) == 0
    return out


def test_run_writes_config_metrics_and_result(tmp_path):
    out = run_ok(tmp_path, *FAST, "model.width=32")
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"]["width"] == 32 and config["data"]["name"] == "synthetic"
    assert "hydra" not in config  # the resolved run config, without Hydra's own node
    rows = read_json_lines(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 10, 20, 30]
    assert set(rows[0]) >= {"step", "train_loss", "test_loss", "test_acc", "seconds"}
    result = read_json(out / "result.json")
    assert result["status"] == "ok" and result["steps"] == 30
    assert result["final"]["test_acc"] == rows[-1]["test_acc"]
    assert result["final"]["train_loss"] < rows[0]["train_loss"]  # it learned something
    assert result["device"] == "cpu" and result["muso_version"] and result["wall_seconds"] > 0
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_same_seed_same_numbers_other_seed_other_numbers(tmp_path):
    a = read_json_lines(run_ok(tmp_path, *FAST, name="a") / "metrics.jsonl")
    b = read_json_lines(run_ok(tmp_path, *FAST, name="b") / "metrics.jsonl")
    c = read_json_lines(run_ok(tmp_path, *FAST, "seed=1", name="c") / "metrics.jsonl")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_divergence_is_a_result_not_a_crash(tmp_path):
    out = run_ok(tmp_path, "data=synthetic", "optimizer.lr=300", "train.steps=50", "train.progress=false")
    result = read_json(out / "result.json")
    assert result["status"] == "diverged"
    assert result["steps"] < 50  # stopped early
    assert result["final"]["train_loss"] is None  # +inf in memory; JSON stores null and the status says why


def test_a_failing_run_writes_a_failed_result_and_exits_1(tmp_path, monkeypatch):
    import muso_cli.train as train

    def boom(*a, **k):
        raise RuntimeError("out of cheese")

    monkeypatch.setattr(train, "evaluate", boom)  # inside the training loop (validation builds the optimizer too)
    out = tmp_path / "f"
    assert main(["run", *FAST, f"hydra.run.dir={out}"]) == 1
    result = read_json(out / "result.json")
    assert result["status"] == "failed" and "out of cheese" in result["error"]
    assert "Traceback" in result["traceback"]


def test_multirun_two_jobs(tmp_path):
    sweep = tmp_path / "multi"
    assert main(["run", "-m", *FAST, "optimizer.lr=0.05,0.2", f"hydra.sweep.dir={sweep}"]) == 0
    lrs = sorted(yaml.safe_load((sweep / d / "config.yaml").read_text())["optimizer"]["lr"] for d in ("0", "1"))
    assert lrs == [0.05, 0.2]
    assert all(read_json(sweep / d / "result.json")["status"] == "ok" for d in ("0", "1"))


@pytest.mark.parametrize("overrides, key, needle", [
    (["optimizer.lr=-1"], "optimizer.lr", "> 0"),
    (["data=nope"], "data", "digits, fashion_mnist"),
    (["model.width=abc"], "model.width", "integer"),
    (["optimizer.lrr=1"], "optimizer.lrr", "+optimizer.lrr"),
    (["train.loss=hinge"], "train.loss", "xent, mse"),
    (["model.depth=1"], "model.depth", "≥ 2"),
    (["data.root=/nonexistent", "data.download=false"], "data.root", "apt-get install dataset-fashion-mnist"),
    (["-m", "optimizer.lr=0.1,-2"], "optimizer.lr", "got -2"),  # every job of a multirun is checked first
    (["optimizer.lr=1,2"], "optimizer.lr", "use -m"),
    (["optimizer.lr=("], "optimizer.lr", "syntax"),  # the key as written, not a generic "override"
])
def test_bad_input_exits_2_naming_the_key(tmp_path, capsys, overrides, key, needle):
    assert main(["run", *overrides, f"hydra.run.dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert f"error: {key}" in err and needle in err and "Fix:" in err
    assert "Traceback" not in err
    assert not (tmp_path / "x").exists()  # nothing started


def test_console_script_exit_status_and_debug_traceback(tmp_path):
    env = {"PATH": "", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "muso_cli", "run", "optimizer.lr=-1"]
    quiet = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert quiet.returncode == 2 and "optimizer.lr" in quiet.stderr and "Traceback" not in quiet.stderr
    debug = subprocess.run(cmd, capture_output=True, text=True, env={**env, "MUSO_DEBUG": "1"}, cwd=tmp_path)
    assert debug.returncode == 2 and "Traceback" in debug.stderr


@needs_fmnist
def test_fashion_mnist_one_epoch_reaches_80_percent(tmp_path):
    """The README's first experience: an MLP of width 256 with SGD learns Fashion-MNIST in an epoch."""
    out = run_ok(tmp_path, "model.width=256", "optimizer.lr=0.1", "train.epochs=1", "train.progress=false")
    result = read_json(out / "result.json")
    assert result["data_source"] == "/usr/share/datasets/fashion-mnist"
    assert result["steps"] == 60000 // 128
    assert result["final"]["test_acc"] >= 0.80
    assert math.isfinite(result["final"]["train_loss"])
    json.dumps(result)  # valid JSON throughout


def test_a_stop_right_after_the_first_evaluation_resumes_without_a_duplicate_row(tmp_path, monkeypatch):
    """A signal that lands during the step-0 evaluation checkpoints at step 0 with that row recorded; the resumed
    run must not evaluate step 0 again, and ends with the numbers of an uninterrupted run."""
    from muso_cli import stop, train
    from muso_cli.config import compose

    cfg = compose(["data=synthetic", "train.steps=40", "train.eval_every=20", "train.progress=false",
                   "train.threads=1", "model.width=16"])
    evaluate = train.evaluate
    calls = []

    def evaluate_then_stop(*args, **kwargs):  # the signal arrives while step 0 is being evaluated
        calls.append(1)
        if len(calls) == 2:  # train and test loss of step 0
            stop.STOP.signum = 15
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", evaluate_then_stop)
    out = tmp_path / "run"
    with pytest.raises(stop.Interrupted, match="step 0"):
        train.run(cfg, out, quiet=True)
    stop.STOP.signum = None
    assert (out / "checkpoint.pt").exists() and [r["step"] for r in read_json_lines(out / "metrics.jsonl")] == [0]
    monkeypatch.setattr(train, "evaluate", evaluate)
    resumed = train.run(cfg, out, quiet=True)
    assert [r["step"] for r in read_json_lines(out / "metrics.jsonl")] == [0, 20, 40]
    fresh = train.run(cfg, tmp_path / "fresh", quiet=True)
    assert resumed["status"] == fresh["status"] == "ok" and resumed["final"] == fresh["final"]


class _Payload:
    """Pickled into a crafted checkpoint: unpickling it would run code (create the file named by ``path``)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_crafted_checkpoint_runs_no_code_and_the_run_trains_from_scratch(tmp_path, capsys):
    """A study folder travels between people: loading its checkpoint must never execute a pickle."""
    import torch

    from muso_cli import train
    from muso_cli.config import compose

    cfg = compose(["data=synthetic", "train.steps=20", "train.eval_every=10", "train.progress=false",
                   "model.width=16"])
    out, witness = tmp_path / "run", tmp_path / "pwned"
    out.mkdir()
    torch.save({"step": 5, "model": _Payload(str(witness))}, out / "checkpoint.pt")
    result = train.run(cfg, out, quiet=True)
    assert not witness.exists()  # the payload never ran
    assert "cannot be read safely" in capsys.readouterr().err
    assert result["status"] == "ok" and [r["step"] for r in read_json_lines(out / "metrics.jsonl")] == [0, 10, 20]
    fresh = train.run(cfg, tmp_path / "fresh", quiet=True)
    assert result["final"] == fresh["final"]


@pytest.mark.parametrize("damage", ["missing key", "wrong shapes", "garbage"])
def test_a_damaged_checkpoint_retrains_from_scratch_with_a_warning(tmp_path, capsys, damage):
    import torch

    from muso_cli import stop, train
    from muso_cli.config import compose

    cfg = compose(["data=synthetic", "train.steps=40", "train.eval_every=20", "train.progress=false",
                   "model.width=16", "train.checkpoint_every=10"])
    out = tmp_path / "run"
    stop.STOP.signum = None
    calls = []
    evaluate = train.evaluate

    def stop_after_step_20(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # the train and test loss of step 20 are measured: stop at the next step boundary
            stop.STOP.signum = 15
        return evaluate(*args, **kwargs)

    train.evaluate = stop_after_step_20
    try:
        with pytest.raises(stop.Interrupted):
            train.run(cfg, out, quiet=True)
    finally:
        train.evaluate = evaluate
        stop.STOP.signum = None
    path = out / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    if damage == "missing key":
        del checkpoint["optimizer"]
        torch.save(checkpoint, path)
    elif damage == "wrong shapes":
        checkpoint["model"] = {k: torch.zeros(3) for k in checkpoint["model"]}
        torch.save(checkpoint, path)
    else:
        path.write_bytes(b"not a checkpoint")
    result = train.run(cfg, out, quiet=True)
    assert "training from scratch" in capsys.readouterr().err
    assert result["status"] == "ok" and [r["step"] for r in read_json_lines(out / "metrics.jsonl")] == [0, 20, 40]
    assert result["final"] == train.run(cfg, tmp_path / "fresh", quiet=True)["final"]
