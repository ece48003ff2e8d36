"""Launching a study's trials: one after another in this process (``launcher=local``).

Every launcher runs :func:`run_trial`, which skips a finished trial, so a trial list can be launched again and
again (after an interruption, a crash, or from several Slurm array tasks) without rerunning finished work.
Progress (trials done / total, ETA) is printed here; the runs themselves stay quiet.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from . import track, train
from .study import Study, Trial


def run_trial(study: Study, trial: Trial, *, quiet: bool = True) -> dict:
    """Run ``trial`` into its folder unless it is finished; return its result."""
    result = study.result(trial)
    if result and result.get("status") in track.FINAL_STATUSES:
        return result
    cfg = OmegaConf.create(trial.config)
    tags = [f"param:{trial.param}", f"optimizer:{cfg.optimizer.name}", f"width:{trial.width}"]
    return train.run(cfg, study.trial_dir(trial), quiet=quiet, run_id=trial.id, group=study.name,
                     job_type=trial.phase, tags=tags)


class Progress:
    """Prints one line per finished trial: counts, the trial, its outcome and an ETA from the mean trial time."""

    def __init__(self, total: int, already_done: int, stream=None):
        self.total, self.done, self.todo_start = total, already_done, total - already_done
        self.started, self.stream = time.time(), stream
        self.counts: Counter = Counter()

    def update(self, trial: Trial, result: dict) -> None:
        self.done += 1
        self.counts[result.get("status", "failed")] += 1
        finished_here = sum(self.counts.values())
        remaining = self.total - self.done
        eta = (time.time() - self.started) / finished_here * remaining
        final = result.get("final") or {}
        loss = final.get("train_loss")
        outcome = result.get("status", "?") + (f" train_loss {loss:.4f}" if isinstance(loss, float) else "")
        if result.get("status") == "failed":
            outcome += f" ({result.get('error', '')[:80]})"
        print(f"[{self.done}/{self.total}] {trial.label()}: {outcome}  ETA {_duration(eta)}",
              file=self.stream or sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def pending(study: Study, trials: list[Trial]) -> list[Trial]:
    """Runs to do, one per trial id: not finished (failed ones are retried), not being run by another process."""
    todo: dict[str, Trial] = {}
    for t in trials:
        if t.id not in todo and study.status(t) in ("pending", "failed"):
            todo[t.id] = t
    return list(todo.values())


def _local(study: Study, trials: list[Trial], lcfg: DictConfig, progress: Progress) -> None:
    with train.graceful_stop():
        for trial in trials:
            progress.update(trial, run_trial(study, trial))


LAUNCHERS: dict[str, Callable[[Study, list[Trial], DictConfig, Progress], None]] = {"local": _local}


def launch(study: Study, trials: list[Trial], lcfg: DictConfig) -> Counter:
    """Run the unfinished ``trials`` with the launcher ``lcfg.name``; return counts of their statuses.

    Raises train.Interrupted when stopped (finished results are kept; the rest resume on the next launch).
    """
    todo = pending(study, trials)
    runs = len({t.id for t in trials})
    progress = Progress(runs, runs - len(todo))
    if todo:
        LAUNCHERS[lcfg.name](study, todo, lcfg, progress)
    return Counter(study.status(t) for t in trials)
