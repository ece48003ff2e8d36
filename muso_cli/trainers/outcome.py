"""What a run's metrics mean, for every trainer: the divergence rule, the result's summary of its metrics, and
what a result records about where it ran. The built-in loop (muso_cli.train) and the trainers that run your own
code (muso_cli.trainers.command) share it, so a trial's status means the same whoever trained it.
"""
from __future__ import annotations

import math
import os
import platform
from datetime import datetime, timezone

from .. import __version__, track

LOSS_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_info(device) -> dict:
    """What a result records about where and with what it ran (versions, device, host, start, Slurm task)."""
    import torch

    info = {"muso_version": __version__, "torch_version": torch.__version__, "device": str(device),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "host": platform.node(),
            "started_at": now()}
    if "SLURM_JOB_ID" in os.environ:
        info["slurm"] = {"job_id": os.environ["SLURM_JOB_ID"], "array_task": os.environ.get("SLURM_ARRAY_TASK_ID"),
                         "restarts": int(os.environ.get("SLURM_RESTART_COUNT", "0"))}
    return info


def batch_divergence(batch_loss: float, initial_loss: float, factor: float, step: int) -> str | None:
    """Why the loss of the batch of ``step`` ends the run as diverged (non-finite, or above ``factor`` × the
    initial loss), or None."""
    if math.isfinite(batch_loss) and batch_loss <= factor * initial_loss:
        return None
    return f"batch loss {batch_loss:.4g} at step {step} (initial {initial_loss:.4g})"


def eval_divergence(train_loss: float, initial_loss: float, factor: float, step: int) -> str | None:
    """Why an evaluation's train_loss at ``step`` ends the run as diverged (same rule as a batch's), or None."""
    if math.isfinite(train_loss) and train_loss <= factor * initial_loss:
        return None
    return f"train loss {train_loss:.4g} at step {step}"


def summarise(status: str, reason: str | None, metrics: list[dict], step: int, steps: int | None,
              source: str | None) -> dict:
    """The result of a run from its metrics rows: its status, steps, final metrics (the last evaluation's; a
    diverged run's train_loss is +inf, so that it is never selected), the best of each, and why it diverged."""
    evals = [r for r in metrics if any(k in r for k in LOSS_KEYS)]
    last = evals[-1] if evals else metrics[-1]
    final = {k: last.get(k) for k in LOSS_KEYS}
    if status == track.DIVERGED:
        final["train_loss"] = math.inf  # for selection: a diverged setting is never the best
    finite = lambda key: [r[key] for r in evals if r.get(key) is not None and math.isfinite(r[key])]  # noqa: E731
    best = {"test_acc": max(finite("test_acc"), default=None), "test_loss": min(finite("test_loss"), default=None),
            "train_loss": min(finite("train_loss"), default=None)}
    out = {"status": status, "steps": step, "planned_steps": steps, "final": final, "best": best,
           "data_source": source}
    if reason:
        out["diverged_reason"] = reason
    return out
