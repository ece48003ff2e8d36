"""Batched trials (muso_cli.batched): a stack of N members gives every member the metrics of its trial run alone.

Tolerance: every number of every metrics row within 1e-4 relative (+1e-6 absolute) of the single run's; the
members differ from their single runs by float rounding only (batched matmuls, the single trial's exact
factored K-FAC / Shampoo form), and these short stable runs keep that at ~1e-6. Near a stability edge rounding
differences grow like any perturbation (Shampoo at lr 0.5 here: 0.6% by step 30), so the settings below either
train stably or diverge outright. The optimizers run with their default configs (K-FAC's trust region kl_clip
and warm start, both statistics' ema_warmup): under the trust region K-FAC's step no longer grows with lr, and
the member that diverges does so through an ill-conditioned inverse (ρ = 1e-12), whose blown-up batch loss
differs from the single run's in value (2.2e5 against 1.6e5 at step 8) but not in the step or the rule that stops it.
"""
from __future__ import annotations

import math
import re
import signal

import pytest
import yaml

from muso_cli import batched, stop, track, train
from muso_cli.cli import main
from muso_cli.config import compose
from muso_cli.study import Study

BASE = ["data=synthetic", "data.n_train=512", "data.n_test=256", "model.width=32", "model.base_width=16",
        "train.steps=30", "train.eval_every=10", "train.progress=false", "logger.mode=disabled", "device=cpu"]
# (lr, damping, seed) per member; the last one diverges mid-run
SETTINGS = {"sgd": [(0.05, None, 0), (0.5, None, 1), (12.0, None, 2)],
            "adam": [(0.003, None, 0), (0.05, None, 1), (0.5, None, 2)],
            "kfac": [(0.05, 0.1, 0), (0.5, 0.1, 1), (1.0, 1e-12, 2)],
            "shampoo": [(0.05, 0.01, 0), (0.2, 0.1, 1), (3.0, 0.01, 2)]}


def member_cfgs(opt: str, settings, *extra: str):
    return [compose([*BASE, f"optimizer={opt}", f"optimizer.lr={lr}", f"seed={seed}", *extra,
                     *([f"optimizer.damping={d}"] if d is not None else [])]) for lr, d, seed in settings]


def assert_same_rows(single: list[dict], batch: list[dict], loss_at_divergence: bool = True) -> None:
    """Equal metrics rows; ``loss_at_divergence=False``: the divergence row's batch_loss may differ."""
    assert [r["step"] for r in single] == [r["step"] for r in batch]
    for a, b in zip(single, batch):
        assert a.keys() == b.keys()
        for key in a.keys() - {"seconds", *(() if loss_at_divergence else ("batch_loss",))}:
            if a[key] is None or b[key] is None:
                assert a[key] == b[key], key
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), (key, a["step"])


def assert_same_result(single: dict, batch: dict, loss_at_divergence: bool = True) -> None:
    """Equal results; ``loss_at_divergence=False``: the diverged reason's blown-up batch loss may differ."""
    for key in ("status", "steps", "planned_steps", "diverged_reason", "data_source"):
        a, b = single.get(key), batch.get(key)
        if key == "diverged_reason" and a and b and not loss_at_divergence:
            a, b = (re.sub(r"batch loss \S+", "batch loss _", r) for r in (a, b))
        assert a == b, key
    for part in ("final", "best"):
        for key, value in single[part].items():
            other = batch[part][key]
            assert (value is None and other is None) or other == pytest.approx(value, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("opt", ["sgd", *(pytest.param(o, marks=pytest.mark.slow) for o in ("adam", "kfac", "shampoo"))])
def test_every_member_equals_its_single_run_including_one_that_diverges(opt, tmp_path):
    cfgs = member_cfgs(opt, SETTINGS[opt])
    singles = [train.run(c, tmp_path / f"single{k}", quiet=True) for k, c in enumerate(cfgs)]
    results = batched.run([batched.Member(c, tmp_path / f"member{k}") for k, c in enumerate(cfgs)])
    assert [r["status"] for r in singles] == ["ok", "ok", "diverged"]
    assert 1 < singles[-1]["steps"] < 30  # mid-run
    for k, (single, result) in enumerate(zip(singles, results)):
        assert_same_result(single, result, loss_at_divergence=opt != "kfac")
        assert result["batch"] == 3
        assert_same_rows(track.read_json_lines(tmp_path / f"single{k}" / track.METRICS),
                         track.read_json_lines(tmp_path / f"member{k}" / track.METRICS), opt != "kfac")
        assert track.read_json(tmp_path / f"member{k}" / "result.json")["status"] == result["status"]
        assert not (tmp_path / f"member{k}" / track.CHECKPOINT).exists()


def test_momentum_nesterov_weight_decay_and_a_schedule_batch_too(tmp_path):
    extra = ["optimizer.momentum=0.9", "optimizer.nesterov=true", "optimizer.weight_decay=0.01",
             "train.lr_schedule=cosine", "train.warmup_steps=5", "param=mup"]
    cfgs = member_cfgs("sgd", SETTINGS["sgd"][:2], *extra)
    singles = [train.run(c, tmp_path / f"single{k}", quiet=True) for k, c in enumerate(cfgs)]
    results = batched.run([batched.Member(c, tmp_path / f"member{k}") for k, c in enumerate(cfgs)])
    for k in range(2):
        assert_same_result(singles[k], results[k])
        assert_same_rows(track.read_json_lines(tmp_path / f"single{k}" / track.METRICS),
                         track.read_json_lines(tmp_path / f"member{k}" / track.METRICS))


@pytest.mark.parametrize("opt", ["sgd", "adam", "kfac", "shampoo"])
def test_the_default_config_of_every_batched_optimizer_batches(opt):
    assert batched.supports(_dict(compose([*BASE, f"optimizer={opt}"]))) is None


def test_supports_names_what_runs_alone():
    assert "fisher" in batched.supports(_dict(compose([*BASE, "optimizer=kfac", "optimizer.fisher=mc"])))
    assert "trace" in batched.supports(_dict(compose([*BASE, "optimizer=kfac", "optimizer.damping_rule=trace"])))
    assert "grafting" in batched.supports(_dict(compose([*BASE, "optimizer=shampoo", "optimizer.grafting=sgd"])))
    assert "Conv2d" in batched.supports(_dict(compose(["model=cnn", "data=digits"])))
    assert "optimizer.foo" in batched.supports(_dict(compose([*BASE, "optimizer=kfac", "+optimizer.foo=0.1"])))
    late = ["optimizer=shampoo", "optimizer.grafting=adam", "optimizer.start_preconditioning_step=5"]
    assert "start_preconditioning_step" in batched.supports(_dict(compose([*BASE, *late])))


def _dict(cfg):
    from muso_cli.config import to_container
    return to_container(cfg)


def test_grouping_batches_what_differs_in_lr_damping_seed_only():
    from muso_cli.study import make_trial
    cfgs = [*member_cfgs("kfac", SETTINGS["kfac"]), *member_cfgs("kfac", SETTINGS["kfac"][:1], "model.width=64"),
            *member_cfgs("kfac", SETTINGS["kfac"][:1], "optimizer.fisher=mc")]
    trials = [make_trial(_dict(c), "sweep") for c in cfgs]
    units = batched.make_batches(trials, 2)
    assert [[trials.index(t) for t in u] for u in units] == [[0, 1], [2], [3], [4]]
    assert batched.make_batches(trials, 1) == [[t] for t in trials]


FAST = [*BASE[:-3], "study.params=[sp]", "study.lr=[0.05,0.2,0.5]", "study.seeds=[0,1]", "optimizer=kfac",
        "study.damping=[0.1,1.0]", "model.width=16"]


@pytest.mark.slow
@pytest.mark.parametrize("launcher, sizes", [(["launcher.batch=8"], (8, 4)),  # 12 trials: a batch of 8 and one of 4
                                             (["launcher=pool", "launcher.workers=2", "launcher.batch=4"], (4,))])
def test_a_batched_sweep_writes_the_trial_folders_of_a_local_one(launcher, sizes, tmp_path, capsys):
    root = tmp_path / "studies"
    assert main(["sweep", *FAST, f"study.root={root}", "study.name=alone"]) == 0
    assert main(["sweep", *FAST, f"study.root={root}", "study.name=batched", *launcher]) == 0
    alone, stacked = Study(root / "alone"), Study(root / "batched")
    a, b = alone.trials(), stacked.trials()
    assert [t.id for t in a] == [t.id for t in b] and len(a) == 12
    for ta, tb in zip(a, b):
        assert_same_result(alone.result(ta), stacked.result(tb))
        assert stacked.result(tb)["batch"] in sizes
        assert_same_rows(track.read_json_lines(alone.trial_dir(ta) / track.METRICS),
                         track.read_json_lines(stacked.trial_dir(tb) / track.METRICS))
        configs = [yaml.safe_load((s.trial_dir(t) / "config.yaml").read_text()) for s, t in ((alone, ta), (stacked, tb))]
        same = [{k: v for k, v in c.items() if k not in ("launcher", "study")} for c in configs]
        assert same[0] == same[1]
        assert configs[1]["launcher"]["batch"] == sizes[0]
    capsys.readouterr()
    assert main(["status", str(root / "batched")]) == 0
    assert "12" in capsys.readouterr().out
    assert main(["report", str(root / "batched")]) == 0


def test_bad_batch_is_a_usage_error_naming_the_key(tmp_path, capsys):
    assert main(["sweep", *FAST, f"study.root={tmp_path}", "launcher.batch=0"]) == 2
    assert "launcher.batch" in capsys.readouterr().err


@pytest.mark.slow
def test_an_interrupted_batch_checkpoints_every_member_and_resumes(tmp_path, monkeypatch):
    cfgs = member_cfgs("shampoo", SETTINGS["shampoo"][:2])
    singles = [train.run(c, tmp_path / f"single{k}", quiet=True) for k, c in enumerate(cfgs)]
    members = lambda: [batched.Member(c, tmp_path / f"member{k}") for k, c in enumerate(cfgs)]  # noqa: E731
    calls = {"n": 0}
    real = batched.stack.Stack.losses

    def stop_at_step_12(self, *args, **kw):  # a signal arriving during step 12
        calls["n"] += 1
        if calls["n"] == 12:
            stop.request_stop(signal.SIGTERM)
        return real(self, *args, **kw)

    monkeypatch.setattr(batched.stack.Stack, "losses", stop_at_step_12)
    with pytest.raises(stop.Interrupted):
        batched.run(members())
    stop.STOP.signum = None
    monkeypatch.setattr(batched.stack.Stack, "losses", real)
    for k in range(2):
        assert (tmp_path / f"member{k}" / track.CHECKPOINT).exists()
        assert not (tmp_path / f"member{k}" / "result.json").exists()
        assert len(track.read_json_lines(tmp_path / f"member{k}" / track.METRICS)) == 2  # steps 0 and 10
    results = batched.run(members())
    for k in range(2):
        assert_same_result(singles[k], results[k])
        assert_same_rows(track.read_json_lines(tmp_path / f"single{k}" / track.METRICS),
                         track.read_json_lines(tmp_path / f"member{k}" / track.METRICS))
        assert math.isfinite(results[k]["final"]["train_loss"])
