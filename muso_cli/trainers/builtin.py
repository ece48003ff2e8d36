"""The built-in trainer: muso's own training loop (:mod:`muso_cli.train`) behind the trainer seam."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from .. import train
from ..errors import UsageError


def check(cfg: DictConfig) -> list[UsageError | None]:
    """The built-in trainer has no keys of its own: its loop reads ``train.*``, checked with the run set-up."""
    extra = sorted(set(cfg.trainer) - {"name"}) if "trainer" in cfg else []
    return [UsageError(f"trainer.{key}", "is not a key of trainer=builtin.",
                       "remove it (trainer=command and trainer=python have their own keys).") for key in extra]


def run(cfg: DictConfig, folder: Path, identity, *, quiet: bool = True) -> dict:
    return train.run(cfg, folder, quiet=quiet, run_id=identity.run_id, name=identity.name, group=identity.group,
                     job_type=identity.job_type, tags=list(identity.tags))
