"""Hand-made studies: a real study folder (study.yaml, trials.jsonl, trial configs from real Hydra composition)
whose result files are written by the test instead of by training, so that a report's numbers are known."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from muso_cli import track
from muso_cli.study import plan
from muso_cli.study.spec import parse_spec
from muso_cli.study.store import Study, open_or_create
from muso_cli.config import compose, to_container

FAST = ["data=synthetic", "data.n_train=512", "data.n_test=256", "model.base_width=16", "train.steps=30",
        "train.eval_every=10", "train.progress=false"]
Outcome = Callable[..., "float | str | None"]


def result(outcome: float | str | None) -> dict | None:
    """A result.json for an outcome: a final train loss, "diverged", "failed", or None (no result: pending)."""
    if outcome is None:
        return None
    if outcome == "diverged":
        return {"status": "diverged", "final": {"train_loss": None, "test_acc": 0.1}}
    if outcome == "failed":
        return {"status": "failed", "error": "RuntimeError: made by the test"}
    return {"status": "ok", "final": {"train_loss": float(outcome), "test_acc": 0.9 - float(outcome) / 10}}


def write_results(study: Study, outcome: Outcome, trials=None) -> None:
    """Write result.json for every trial entry (``outcome(param, width, lr, damping, seed)``). Trials shared by
    several parameterizations (the base width) get the outcome of the first entry."""
    done = set()
    for t in trials if trials is not None else study.trials():
        if t.id in done:
            continue
        done.add(t.id)
        r = result(outcome(t.param, t.width, t.lr, t.damping, t.seed))
        if r is not None:
            study.trial_dir(t).mkdir(parents=True, exist_ok=True)
            track.write_json(study.trial_dir(t) / track.RESULT, r)


def make(root: Path, outcome: Outcome, *overrides: str, name: str = "h") -> Study:
    """The study that ``muso sweep <FAST> <overrides>`` would plan, with results from ``outcome``."""
    args = [*FAST, f"study.root={root}", f"study.name={name}", *overrides]
    cfg = compose(args)
    grid = parse_spec(cfg).grid
    configs = {p: to_container(compose([*args, f"param={p}"])) for p in grid.params}
    study = open_or_create(cfg, args, grid.params, grid.seeds)
    study.add(plan.plan_sweep(grid, configs))
    write_results(study, outcome)
    return study


def parabola(centre: float, floor: float = 0.1, curvature: float = 0.05) -> Callable[[float], float]:
    """Loss as a parabola in log2 lr with its minimum ``floor`` at log2 lr = ``centre``."""
    return lambda lr: floor + curvature * (math.log2(lr) - centre) ** 2
