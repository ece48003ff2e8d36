"""Trust: a study folder travels between people, and a study made by someone else is data, never code.

What in a study's config would run code when muso uses it: a ``_target_`` anywhere (your own model, data or
trainer: Hydra imports and calls it), a config search path (``hydra.searchpath``: a ``pkg://`` entry imports a
package), the Slurm launcher's ``setup`` shell lines, and a trainer's command line. :func:`code_in` lists them.

Whose study is it? When muso creates a study it draws a random token, writes it into study.yaml and appends it
to this user's list of own studies (``$MUSO_STATE_DIR``, default ``$XDG_STATE_HOME/muso`` or
``~/.local/state/muso``, file ``own-studies``). A study whose token is on the list was made by this user's muso
(wherever the folder has been moved since); any other study (a copy from a colleague, a download, a study.yaml
written by hand) is someone else's. The token proves nothing to anyone else, and need not: a crafted study.yaml
can copy a token only from a study of yours it has seen. The file owner cannot tell (extracting an archive makes
the reader the owner).

``muso report`` never composes or instantiates a study's config, so it needs no trust; ``muso transfer``,
``muso refine`` and ``muso run-trial`` refuse to run what :func:`code_in` finds in someone else's study unless
``--trust`` is given. ``muso sweep`` into an existing folder needs none: it composes your own command line and
runs only the trials that composition plans (a trial already in the folder under the same id has the same config).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

OWN = "own-studies"


def state_dir() -> Path:
    """Where this user's muso keeps its own state (the list of own studies)."""
    explicit = os.environ.get("MUSO_STATE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "state") / "muso"


def new_token() -> str:
    """A fresh token for a study this user's muso creates, added to the list of own studies."""
    token = uuid.uuid4().hex
    folder = state_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / OWN, "a") as f:  # one line per study; appends of one short line do not interleave
        f.write(token + "\n")
    return token


def is_own(manifest: dict | None) -> bool:
    """Whether the study whose study.yaml is ``manifest`` was made by this user's muso."""
    token = (manifest or {}).get("token")
    if not isinstance(token, str) or len(token) != 32:
        return False
    try:
        return token in (state_dir() / OWN).read_text().split()
    except OSError:
        return False


def code_in(config: dict, overrides: list[str] = ()) -> list[str]:
    """What in a (resolved) ``config`` and its ``overrides`` would run code, in words: ``_target_`` nodes, the
    config search path, Slurm ``setup`` lines and a trainer's command."""
    found = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if "_target_" in node:
                found.append(f"{path or 'the config'}._target_={node['_target_']}")
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for value in node:
                walk(value, path)

    walk(config, "")
    setup = (config.get("launcher") or {}).get("setup") or []
    if setup:
        found.append(f"launcher.setup={list(setup)}")
    trainer = config.get("trainer") or {}
    if trainer.get("command"):
        found.append(f"trainer.command={trainer['command']!r}")
    found += [o for o in overrides if o.partition("=")[0].lstrip("+~") == "hydra.searchpath"]
    return found
