"""The trainer seam: how one trial (or one `muso run`) is trained.

A trainer takes the trial's resolved config and its folder and returns the trial's result (the dict it wrote to
``result.json``: status ok | diverged | failed, final and best metrics); it never raises for a failing run (a
failure is a result) and raises :class:`muso_cli.stop.Interrupted` when a stop was requested (it checkpoints first,
and the same call in the same folder resumes). Launchers (muso_cli.launch) and ``muso run`` call
:func:`run`; which trainer runs is ``trainer.name`` (the ``trainer`` config group):

- ``builtin``: muso's own training loop (muso_cli.train);
- ``command``: your own training script, run per trial (muso_cli.trainers.command: the contract);
- ``python``: your own training function, called per trial in a subprocess (muso_cli.trainers.python).

Adding a trainer means: its module here with ``run`` (and ``check`` for its ``trainer.*`` keys), its entry in
:data:`REGISTRY`, its YAML under conf/trainer/, and its tests.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig

from ..errors import UsageError, check_one_of


@dataclass(frozen=True)
class RunIdentity:
    """How a run is named where it is mirrored (W&B): its id (a trial's id, so that a resumed trial continues its
    W&B run), a name a person can read, the group (the study), the job type (the trial's phase: sweep | refine | transfer | verify) and tags."""

    run_id: str | None = None
    name: str | None = None
    group: str | None = None
    job_type: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Entry:
    """One trainer: the module that holds ``run(cfg, folder, identity, quiet) -> result`` and
    ``check(cfg) -> [UsageError | None]`` (its ``trainer.*`` keys; cfg: the whole config)."""

    module: str

    def load(self):
        return importlib.import_module(self.module)


REGISTRY: dict[str, Entry] = {
    "builtin": Entry("muso_cli.trainers.builtin"),
    "command": Entry("muso_cli.trainers.command"),
    "python": Entry("muso_cli.trainers.python"),
}


def check(cfg: DictConfig) -> list[UsageError | None]:
    """Problems with the ``trainer.*`` keys (the trainer's name, then its own checks)."""
    name = cfg.trainer.get("name") if "trainer" in cfg else "builtin"
    bad = check_one_of("trainer.name", name, REGISTRY)
    if bad:
        return [bad]
    return list(REGISTRY[name].load().check(cfg))


def run(cfg: DictConfig, folder: Path, identity: RunIdentity = RunIdentity(), *, quiet: bool = True) -> dict:
    """Train ``cfg`` into ``folder`` with the trainer ``cfg.trainer.name``; return its result (see the module
    docstring)."""
    name = cfg.trainer.name if "trainer" in cfg else "builtin"
    trainer: Callable[..., dict] = REGISTRY[name].load().run
    return trainer(cfg, Path(folder), identity, quiet=quiet)


__all__ = ["REGISTRY", "RunIdentity", "check", "run"]
