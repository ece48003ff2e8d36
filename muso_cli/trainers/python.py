"""``trainer=python``: your own training function, ``trainer._target_`` (``mypkg.train.fit``), called as
``fit(cfg, folder)`` with the trial's config (an OmegaConf DictConfig) and its folder, in a subprocess of its own
(:mod:`muso_cli.trainers.entry`), so that a crash of your code is one failed trial and never takes a launcher
down. Everything else (metrics.jsonl, the result's rules, stops, timeouts, resume, W&B) is trainer=command's
(:mod:`muso_cli.trainers.command`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from .. import targets
from ..errors import UsageError, check_positive
from . import command


def check(cfg: DictConfig) -> list[UsageError | None]:
    """``trainer._target_`` names an importable function, and the stop and timeout keys are numbers."""
    t = cfg.trainer
    problems: list[UsageError | None] = [check_positive("trainer.timeout_min", t.get("timeout_min"), optional=True),
                                         check_positive("trainer.stop_grace_s", t.get("stop_grace_s", 60))]
    if not isinstance(t.get("_target_"), str) or not t.get("_target_"):
        return [*problems, UsageError("trainer._target_", "names no function: trainer=python calls your training "
                                      "function with the trial's config and folder.",
                                      "e.g. trainer._target_=mypkg.train.fit (a function fit(cfg, folder)).")]
    _, error = targets.locate("trainer", t)
    return [*problems, error]


def run(cfg: DictConfig, folder: Path, identity, *, quiet: bool = True) -> dict:
    return command.run(cfg, folder, identity, quiet=quiet, argv=[sys.executable, "-m", "muso_cli.trainers.entry"])
