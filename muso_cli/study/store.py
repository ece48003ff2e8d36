"""The study folder: study.yaml, the shared index (trials.jsonl) under a lock, transfer.json, and the folder's
place on disk (see the package docstring for the layout).
"""
from __future__ import annotations

import fcntl
import json
import os
import re
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import yaml
from omegaconf import DictConfig

from .. import track
from ..config import to_container
from ..errors import UsageError, raise_all
from ..parametrize import PARAMS
from . import claims, trust
from .trials import Trial, base_config, digest, with_runtime

SPEC, TRIALS, TRANSFER, LOCK = "study.yaml", "trials.jsonl", "transfer.json", ".index.lock"
_NAME = re.compile(r"[\w.+=@,-]{1,128}")  # one folder name: no separators, spaces or control characters


_ID = re.compile(r"[0-9a-f]{12}")


class Study:
    """A study folder (see the module docstring). Planners write study.yaml, trials.jsonl and transfer.json;
    trials write only their own folders.

    The index (trials.jsonl) is shared by every planner of the study, possibly several at once (Slurm users plan
    from several shells; the tests run six at a time). A planner reads it, merges its trials and writes it back
    under an exclusive ``flock`` on ``.index.lock`` in the study folder, with an atomic rename, so concurrent
    planners serialise and never lose each other's entries, and a reader never sees half a file. (An append-only
    log would need no lock, but entries must also be refreshed and their indices stay stable, which a
    read-modify-write does simply; per-trial plan files would leave the array index without an owner.) The lock
    is taken only while planning, never while training: trials need no lock at all. An index that cannot be read
    is refused (UsageError), never silently rewritten.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    def trial_dir(self, trial: Trial) -> Path:
        return self.path / "trials" / trial.id

    def folder_problem(self, trial: Trial) -> str | None:
        """Why ``trial``'s folder must not be written (trials/ or trials/<id> is a symbolic link, or resolves
        outside the study: its files would land elsewhere), or None."""
        folder = self.trial_dir(trial)
        for path in (folder.parent, folder):
            if path.is_symlink():
                return (f"{path} is a symbolic link (to {os.readlink(path)}): muso writes trial files only inside "
                        f"the study folder; replace the link with a real folder")
        root = self.path.resolve()
        if folder.exists() and root not in folder.resolve().parents:
            return f"{folder} resolves outside the study folder {root}"
        return None

    # --- reading --------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "Study":
        """An existing study, or UsageError naming the path and the fix."""
        study = cls(Path(path))
        if not (study.path / SPEC).is_file() or not (study.path / TRIALS).is_file():
            raise UsageError("study", f"{path} is not a study folder (no {SPEC} and {TRIALS}).",
                             "pass the folder `muso sweep` printed, e.g. studies/<name>.")
        if study.manifest() is None:
            raise UsageError("study", f"{path}: {SPEC} cannot be read.",
                             "check the folder's permissions; if the file was edited by hand, restore it.")
        study.trials()  # refuses an unreadable index
        return study

    def manifest(self) -> dict | None:
        """study.yaml as a dict, or None when it is missing or cannot be read."""
        try:
            spec = yaml.safe_load((self.path / SPEC).read_text())
        except (OSError, yaml.YAMLError):
            return None
        return spec if isinstance(spec, dict) else None

    def trials(self) -> list[Trial]:
        """The index, in index order ([] for a study not planned yet); UsageError when it cannot be trusted."""
        path = self.path / TRIALS
        if not path.exists():
            return []
        rows = track.read_json_lines(path)
        try:
            trials = [Trial(**row) for row in rows]
            bad = next((t for i, t in enumerate(trials) if t.index != i or not isinstance(t.id, str)
                        or not _ID.fullmatch(t.id) or t.param not in PARAMS), None)
        except TypeError:  # rows None (malformed JSON) or rows that are not trial entries
            bad = True
        if bad is not None:
            what = f"entry {bad.index} ({bad.id!r})" if isinstance(bad, Trial) else "a line"
            raise UsageError("study", f"{path} cannot be read: {what} is not a valid trial entry.",
                             "restore trials.jsonl from a copy, or plan the study again in a new folder "
                             "(study.name=<new name>); finished results in trials/ are reused by id.")
        return trials

    def trial(self, index: int) -> Trial:
        trials = self.trials()
        if not 0 <= index < len(trials):
            raise UsageError("index", f"study {self.name} has trials 0–{len(trials) - 1}, not {index}.",
                             "use an index from `muso status <study> --list`.")
        return trials[index]

    def result(self, trial: Trial) -> dict | None:
        return track.read_json(self.trial_dir(trial) / track.RESULT)

    def status(self, trial: Trial) -> str:
        """ok | diverged | failed (from result.json) | running (a live heartbeat) | pending."""
        result = self.result(trial)
        if result and result.get("status") in track.RESULT_STATUSES:
            return result["status"]
        return track.RUNNING if claims.is_running(self.trial_dir(trial)) else track.PENDING

    def transfers(self) -> dict:
        return track.read_json(self.path / TRANSFER) or {}

    # --- writing (the planning process only) -----------------------------------------------------------
    def write_manifest(self, manifest: dict) -> None:
        track.write_atomic(self.path / SPEC, yaml.safe_dump(manifest, sort_keys=False))

    def widen(self, params: list[str], seeds: list[int]) -> list[str]:
        """A sweep into this study that adds parameterizations or seeds: record the union in study.yaml (its
        ``grid`` and its overrides), from which refine and transfer take the study's parameterizations and seeds
        (without this a parameterization added by a second sweep would be trained but never refined or
        transferred). The lr and damping grids need no record: refinement and transfer place their points from
        the trials. Runs under the planning lock, so two sweeps widening the study at once both land. Returns the
        overrides written, [] when nothing was added."""
        with self._planning():
            manifest = self.manifest() or {}
            grid = manifest.get("grid") or {}
            old_params, old_seeds = list(grid.get("params", [])), list(grid.get("seeds", []))
            new_params = old_params + [p for p in params if p not in old_params]
            new_seeds = old_seeds + [s for s in seeds if s not in old_seeds]
            if new_params == old_params and new_seeds == old_seeds:
                return []
            added = [f"study.params=[{','.join(new_params)}]", f"study.seeds=[{','.join(map(str, new_seeds))}]"]
            kept = [o for o in manifest.get("overrides", [])
                    if o.split("=", 1)[0].lstrip("+") not in ("study.params", "study.seeds")]
            self.write_manifest({**manifest, "grid": {"params": new_params, "seeds": new_seeds},
                                 "overrides": [*kept, *added]})
        return added

    @contextmanager
    def _planning(self):
        """Exclusive access to the index and transfer.json for one planner (see the class docstring)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, planned: Iterable[Trial]) -> list[Trial]:
        """Merge planned trials into the index and return them with their indices.

        Entries are keyed by (id, param). One already listed keeps its index and phase; its runtime sections
        (launcher, logger, device…) are refreshed from the plan, so array jobs started later run with the latest
        settings. New entries are numbered after the last.
        """
        with self._planning():
            trials = self.trials()
            by_key = {(t.id, t.param): t for t in trials}
            out = []
            for t in planned:
                key = (t.id, t.param)
                if key in by_key:
                    by_key[key].config = with_runtime(by_key[key].config, t.config)
                else:
                    t.index = len(trials)
                    trials.append(t)
                    by_key[key] = t
                out.append(by_key[key])
            lines = [json.dumps(asdict(t), sort_keys=True) for t in trials]
            track.write_atomic(self.path / TRIALS, "".join(line + "\n" for line in lines))
        return out

    def record_transfers(self, best: dict[str, dict], trials: list[Trial], widths: list[int]) -> None:
        """Write transfer.json: per parameterization the chosen setting, the widths and the transfer trials.

        A choice that did not change keeps the widths and trials recorded before; a changed one starts afresh.
        """
        with self._planning():
            self._record_transfers(best, trials, widths)

    def _record_transfers(self, best: dict[str, dict], trials: list[Trial], widths: list[int]) -> None:
        transfers = self.transfers()
        for param, b in best.items():
            ids = [t.id for t in trials if t.param == param]
            old = transfers.get(param, {})
            if (old.get("lr"), old.get("damping"), old.get("lr_by_width")) != (b["lr"], b["damping"],
                                                                                  b.get("lr_by_width")):
                old = {}
            transfers[param] = {**b, "widths": sorted(set(old.get("widths", [])) | set(widths)),
                                "transfer_trials": list(dict.fromkeys(old.get("transfer_trials", []) + ids))}
        track.write_json(self.path / TRANSFER, transfers)


def study_name(cfg: DictConfig) -> str:
    """study.name, or <model>-<data>-<optimizer>-<hash of the base config>: rerunning a sweep finds its study."""
    if cfg.study.name is not None:
        return str(cfg.study.name)
    return f"{cfg.model.name}-{cfg.data.name}-{cfg.optimizer.name}-{digest(base_config(to_container(cfg)), 6)}"


def parse_folder(cfg: DictConfig) -> Path:
    """The study folder for ``cfg``: study.name one folder name (letters, digits and ``._+=@,-``, at most 128
    characters), study.root a folder that can be written (or created). UsageError otherwise; nothing is created
    here."""
    root, name = cfg.study.root, study_name(cfg)
    if not isinstance(root, str) or not root.strip() or "\0" in root:
        raise UsageError("study.root", f"must be a folder, got {root!r}.", "e.g. study.root=studies.")
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError("study.name", f"must be one folder name inside study.root, got {name!r}.",
                         "use letters, digits, '-', '_' or '.', e.g. study.name=mlp-kfac (and study.root for the "
                         "parent folder).")
    path = Path(root).expanduser()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError("study.root", f"{existing} is a file, not a folder.", "point study.root at a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError("study.root", f"{existing} cannot be written.", "choose a folder you can write to, e.g. "
                         "study.root=$HOME/studies, or fix its permissions.")
    folder = path / name
    if folder.exists() and not folder.is_dir():
        raise UsageError("study.name", f"{folder} is a file, not a study folder.", "choose another study.name.")
    return folder


def open_or_create(cfg: DictConfig, overrides: list[str], params: list[str], seeds: list[int]) -> Study:
    """The study folder for ``cfg`` (created when new, with this user's trust token: :mod:`.trust`). A named study
    made with other settings is refused; a folder that cannot be created is a UsageError naming study.root."""
    study = Study(parse_folder(cfg))
    raise_all(check_same_base(study, cfg))
    if not (study.path / SPEC).exists():
        base = base_config(to_container(cfg))
        try:
            study.path.mkdir(parents=True, exist_ok=True)
            study.write_manifest({"name": study.name, "base_hash": digest(base), "overrides": list(overrides),
                                  "grid": {"params": list(params), "seeds": list(seeds)},
                                  "study": to_container(cfg)["study"], "token": trust.new_token(),
                                  "base_config": base})
        except OSError as e:
            raise UsageError("study.root", f"the study folder {study.path} cannot be created: {e.strerror or e}.",
                             "choose a folder you can write to (study.root=...), with room on its disk.") from None
    return study


def check_same_base(study: Study, cfg: DictConfig) -> list[UsageError]:
    """[the UsageError] when ``cfg`` changes a setting the study's trials share (anything but the grid values),
    else []."""
    manifest = study.manifest() if (study.path / SPEC).exists() else None
    if manifest is None:
        return []
    base = base_config(to_container(cfg))
    if manifest.get("base_hash") == digest(base):
        return []
    changed = sorted(_diff(manifest.get("base_config", {}), base))
    return [UsageError(changed[0] if changed else "study.name",
                       f"study {study.name} was made with other settings (changed: {', '.join(changed)}; "
                       f"made with: {' '.join(manifest.get('overrides', [])) or 'the defaults'}).",
                       "use the study's settings, or start a new study with study.name=<new name>.")]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in set(a) | set(b) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]

