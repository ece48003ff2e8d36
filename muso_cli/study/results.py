"""The results reader: every trial entry of a study with its result, as far as the result can be trusted (what
the verdict and the report read). It reads files only: nothing in a study folder is imported or run.
"""
from __future__ import annotations

import math
from pathlib import Path

from .. import track
from ..models import depth_of
from ..errors import is_number
from . import claims
from .spec import METRICS
from .store import Study

UNREADABLE = "unreadable"   # a result.json that cannot be read (counted and skipped by the report)


def objective(result: dict | None, metric: str) -> float | None:
    """The selection value of a result, as a loss (lower is better): diverged → +inf; failed/missing → None."""
    if not result or result.get("status") not in track.FINAL_STATUSES:
        return None
    if result["status"] == track.DIVERGED:
        return math.inf
    value = (result.get("final") or {}).get(metric)
    if not is_number(value):  # None (JSON's inf) or a non-finite number; a non-number never gets here: trusted
        return math.inf
    return -value if METRICS[metric] == "max" else value


def plausible(key: str, value) -> bool:
    """Whether a final metric's value can be what it says: a number (or null: a non-finite value); a loss ≥ 0
    (cross-entropy and squared error are), an accuracy in [0, 1]. A hand-edited train_loss of −1e308 or a test_acc
    of 7 is not."""
    if value is None:
        return True
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    if key.endswith("_loss"):
        return value >= 0
    if key.endswith("_acc"):
        return 0 <= value <= 1
    return True


def trusted(result: dict, folder: Path) -> bool:
    """Whether a result can be believed: a known status, plausible numbers (or null) where metrics are
    (:func:`plausible`), and a whole metrics.jsonl beside a finished one when there is one (a torn or hand-edited
    file is counted unreadable, never half-read)."""
    if result.get("status") not in track.RESULT_STATUSES:
        return False
    if result["status"] == track.FAILED:
        return True
    final = result.get("final")
    if not isinstance(final, dict) or not all(plausible(k, v) for k, v in final.items()):
        return False
    metrics = folder / track.METRICS  # absent is no contradiction (a result written by hand or by an older muso)
    return not metrics.exists() or track.read_json_lines(metrics) is not None


def points(study: Study, metric: str) -> list[dict]:
    """One row per trial entry, what the verdict (muso_cli.verdict) reads: index, trial_id, phase, param, width,
    depth (model.depth: a study over depth judges on it; None for a model without one), lr, damping (NaN without
    damping), seed, status (ok | diverged | failed | running | pending | unreadable),
    objective (:func:`objective`; NaN when unfinished), the result itself (None when there is none) and the
    trial's config."""
    rows = []
    for t in study.trials():
        folder = study.trial_dir(t)
        result = track.read_json(folder / track.RESULT)
        if result is not None and trusted(result, folder):
            status = result["status"]
        elif (folder / track.RESULT).exists():
            status, result = UNREADABLE, None
        else:
            status = track.RUNNING if claims.is_running(folder) else track.PENDING
        value = objective(result, metric)
        rows.append({"index": t.index, "trial_id": t.id, "phase": t.phase, "param": t.param, "width": t.width,
                     "depth": depth_of(t.config.get("model") or {}), "lr": t.lr, "damping": math.nan if t.damping is None else t.damping, "seed": t.seed,
                     "status": status, "objective": math.nan if value is None else value, "result": result,
                     "config": t.config})
    return rows
