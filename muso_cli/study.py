"""Studies: a grid of trials at the base width (sweep), refined near each optimum (refine), its best setting
carried to larger widths (transfer).

A study is a folder::

    study.yaml      what the study is: name, the overrides it was made with, the hash of its base config
    trials.jsonl    the numbered trial list, append-only: index, id, phase (sweep | refine | transfer), param,
                    width, lr, damping, seed and the trial's full resolved config (self-contained:
                    `muso run-trial <study> <i>` and a plain `sbatch --array` need nothing else)
    trials/<id>/    one folder per trial: config.yaml, metrics.jsonl, result.json (track.py)
    transfer.json   the settings chosen for transfer, per parameterization, with the trials they came from

A trial's id is a hash of its resolved config (launcher, logger and other keys that do not change the numbers
left out), so planning the same sweep again finds the same trials: finished ones (ok, diverged) are skipped,
failed ones retried, and a finished result is never overwritten. At the base width the parameterizations
coincide, so their trials share one id and one run; the list keeps an entry per parameterization.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml
from omegaconf import DictConfig, OmegaConf

from . import claims, track, verdict
from .config import to_container
from .errors import UsageError, check_positive, is_int, is_number, raise_all, widths as check_widths
from .parametrize import PARAMS, identity, is_damped

SPEC, TRIALS, TRANSFER, LOCK = "study.yaml", "trials.jsonl", "transfer.json", ".index.lock"
# Config sections and keys that do not change a trial's numbers: left out of its id.
NON_SEMANTIC = ("launcher", "logger", "study", "transfer", "coord", "device", "hydra")
NON_SEMANTIC_TRAIN = ("progress", "threads", "checkpoint_every", "eval_batch_size")
METRICS = {"train_loss": "min", "test_loss": "min", "test_acc": "max"}
MAX_GRID_POINTS = 1000  # per axis: a typo such as log2:-10:10:0.001 is refused before it fills memory


# ------------------------------------------------------------------------------------------------------
# Grids

_LOG_GRID = re.compile(r"log(2|10):(-?[\d.]+):(-?[\d.]+)(?::([\d.]+))?$")


def parse_grid(key: str, spec: Any) -> list[float]:
    """A grid of positive values from a list, a number, or ``logB:lo:hi[:step]`` (B^lo … B^hi, step in exponents).

    >>> parse_grid("study.lr", "log2:-3:0")
    [0.125, 0.25, 0.5, 1.0]
    """
    if OmegaConf.is_list(spec) or isinstance(spec, (list, tuple)):
        values = list(spec)
    elif isinstance(spec, str):
        m = _LOG_GRID.match(spec.strip())
        if not m:
            raise UsageError(key, f"cannot read the grid {spec!r}.",
                             f"write a list ({key}=[0.1,0.3]) or a log range ({key}=log2:-8:0 or log10:-4:-1:0.5).")
        base, lo, hi, step = int(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4) or 1)
        if hi < lo or step <= 0:
            raise UsageError(key, f"the range {spec!r} is empty.", "use lo ≤ hi and a positive step.")
        n = int(math.floor((hi - lo) / step + 1e-9)) + 1
        if n > MAX_GRID_POINTS:
            raise UsageError(key, f"the range {spec!r} has {n} points.",
                             f"use a coarser step or a narrower range (at most {MAX_GRID_POINTS} points).")
        try:
            values = [float(base) ** round(lo + i * step, 10) for i in range(n)]
        except OverflowError:
            values = [math.inf]  # refused below: a grid value must be a finite number
    else:
        values = [spec]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                              for v in values):
        raise UsageError(key, f"must hold positive numbers, got {spec!r}.", f"e.g. {key}=log2:-8:0.")
    return [float(v) for v in values]


# ------------------------------------------------------------------------------------------------------
# Trials

def semantic_config(config: dict) -> dict:
    """The part of a resolved config that decides a trial's numbers.

    Sections that do not change the numbers (launcher, logger, …) are left out, and the parameterization's
    choices are replaced by what the table says identifies the run (:func:`muso_cli.parametrize.identity`): at
    the base width every parameterization is the same run, so one trial serves all of them.
    """
    out = {k: v for k, v in config.items() if k not in NON_SEMANTIC}
    out["train"] = {k: v for k, v in config["train"].items() if k not in NON_SEMANTIC_TRAIN}
    param, opt = config["param"], config["optimizer"]
    ident = identity(opt["name"], param["name"], damping_rule=opt.get("damping_rule", "auto"),
                     weight_decay_rule=param["weight_decay_rule"],
                     at_base_width=config["model"]["width"] == config["model"]["base_width"])
    out["param"] = {**param, "name": ident["param"], "weight_decay_rule": ident["weight_decay_rule"]}
    out["optimizer"] = {**opt, "damping_rule": ident["damping_rule"]}
    return out


def _digest(obj: dict, n: int = 12) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:n]


def trial_id(config: dict) -> str:
    """12 hex digits of the SHA-256 of the semantic config (canonical JSON)."""
    return _digest(semantic_config(config))


def base_config(config: dict) -> dict:
    """The semantic config without the values a study varies (param, width, lr, damping, seed)."""
    base = semantic_config(config)
    base["param"] = {k: v for k, v in base["param"].items() if k not in ("name", "weight_decay_rule")}
    base["optimizer"].pop("damping_rule")
    base.pop("seed")
    base["model"] = {k: v for k, v in base["model"].items() if k != "width"}
    base["optimizer"] = {k: v for k, v in base["optimizer"].items() if k not in ("lr", "damping")}
    return base


def with_runtime(config: dict, runtime: dict) -> dict:
    """``config`` with the non-semantic sections (launcher, logger, device, progress…) taken from ``runtime``."""
    out = {**config, **{k: runtime[k] for k in NON_SEMANTIC if k in runtime}}
    out["train"] = {**config["train"], **{k: runtime["train"][k] for k in NON_SEMANTIC_TRAIN}}
    return out


@dataclass
class Trial:
    """One training run of a study. lr and damping are base values (at base width); width is model.width."""

    index: int
    id: str
    phase: str           # sweep | refine | transfer
    param: str
    width: int
    lr: float
    damping: float | None
    seed: int
    config: dict = field(repr=False)

    def label(self) -> str:
        damping = "" if self.damping is None else f" damping={self.damping:.3g}"
        return f"{self.param} w={self.width} lr={self.lr:.3g}{damping} seed={self.seed}"


def make_trial(config: dict, phase: str) -> Trial:
    opt = config["optimizer"]
    return Trial(index=-1, id=trial_id(config), phase=phase, param=config["param"]["name"],
                 width=int(config["model"]["width"]), lr=float(opt["lr"]),
                 damping=float(opt["damping"]) if "damping" in opt else None, seed=int(config["seed"]),
                 config=config)


def with_values(config: dict, *, width: int | None = None, lr: float | None = None, damping: float | None = None,
                seed: int | None = None) -> dict:
    """A copy of a resolved config with the grid values set."""
    out = json.loads(json.dumps(config))
    if width is not None:
        out["model"]["width"] = int(width)
    if lr is not None:
        out["optimizer"]["lr"] = float(lr)
    if damping is not None:
        out["optimizer"]["damping"] = float(damping)
    if seed is not None:
        out["seed"] = int(seed)
    return out


# ------------------------------------------------------------------------------------------------------
# The study folder

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

    # --- reading --------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path) -> "Study":
        """An existing study, or UsageError naming the path and the fix."""
        study = cls(Path(path))
        if not (study.path / SPEC).is_file() or not (study.path / TRIALS).is_file():
            raise UsageError("study", f"{path} is not a study folder (no {SPEC} and {TRIALS}).",
                             "pass the folder `muso sweep` printed, e.g. studies/<name>.")
        if study.spec() is None:
            raise UsageError("study", f"{path}: {SPEC} cannot be read.",
                             "check the folder's permissions; if the file was edited by hand, restore it.")
        study.trials()  # refuses an unreadable index
        return study

    def spec(self) -> dict | None:
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
    def write_spec(self, spec: dict) -> None:
        track.write_atomic(self.path / SPEC, yaml.safe_dump(spec, sort_keys=False))

    def widen(self, grid: "Grid", grid_of: Callable[[list[str]], "Grid"]) -> list[str]:
        """A sweep into this study that adds parameterizations or seeds to its recorded grid: record the union in
        study.yaml, whose overrides refine and transfer compose the study's grid from (without this a
        parameterization added by a second sweep would be trained but never refined or transferred). The other
        grid keys need no record: refinement and transfer place their points from the trials. ``grid_of`` composes
        recorded overrides into their Grid; it runs under the planning lock, so two sweeps widening the study at
        once both land. Returns the overrides written, [] when nothing was added."""
        with self._planning():
            spec = self.spec() or {}
            recorded = grid_of(spec.get("overrides", []))
            params = recorded.params + [p for p in grid.params if p not in recorded.params]
            seeds = recorded.seeds + [s for s in grid.seeds if s not in recorded.seeds]
            if params == recorded.params and seeds == recorded.seeds:
                return []
            added = [f"study.params=[{','.join(params)}]", f"study.seeds=[{','.join(map(str, seeds))}]"]
            kept = [o for o in spec.get("overrides", [])
                    if o.split("=", 1)[0].lstrip("+") not in ("study.params", "study.seeds")]
            self.write_spec({**spec, "overrides": [*kept, *added]})
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
            if (old.get("lr"), old.get("damping")) != (b["lr"], b["damping"]):
                old = {}
            transfers[param] = {**b, "widths": sorted(set(old.get("widths", [])) | set(widths)),
                                "transfer_trials": list(dict.fromkeys(old.get("transfer_trials", []) + ids))}
        track.write_json(self.path / TRANSFER, transfers)


# ------------------------------------------------------------------------------------------------------
# Planning a sweep

def study_name(cfg: DictConfig) -> str:
    """study.name, or <model>-<data>-<optimizer>-<hash of the base config>: rerunning a sweep finds its study."""
    if cfg.study.name is not None:
        return str(cfg.study.name)
    return f"{cfg.model.name}-{cfg.data.name}-{cfg.optimizer.name}-{_digest(base_config(to_container(cfg)), 6)}"


def check_folder(cfg: DictConfig) -> Path:
    """The study folder for ``cfg``: study.name one path component, study.root a folder that can be written (or
    created). UsageError otherwise; nothing is created here."""
    root, name = cfg.study.root, study_name(cfg)
    if not isinstance(root, str) or not root.strip():
        raise UsageError("study.root", f"must be a folder, got {root!r}.", "e.g. study.root=studies.")
    if (not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~")
            or name != name.strip()):
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


@dataclass(frozen=True)
class Grid:
    """What a sweep varies: parameterizations × widths × base learning rates × base dampings × seeds.

    dampings is [None] for optimizers without damping.
    """

    params: list[str]
    lrs: list[float]
    dampings: list[float | None]
    seeds: list[int]
    widths: list[int]

    def __len__(self) -> int:
        return len(self.params) * len(self.widths) * len(self.lrs) * len(self.dampings) * len(self.seeds)


def check(cfg: DictConfig) -> Grid:
    """The study keys as a Grid, or UsageError naming the key."""
    s = cfg.study
    params = list(s.params) if OmegaConf.is_list(s.params) else [s.params]
    bad = [p for p in params if p not in PARAMS]
    if not params or bad:
        raise UsageError("study.params", f"unknown parameterization(s) {bad or params}.",
                         f"use a list of {', '.join(PARAMS)}, e.g. study.params=[sp,somup].")
    lrs = parse_grid("study.lr", s.lr)
    if s.damping is not None and not is_damped(cfg.optimizer.name):
        raise UsageError("study.damping", f"optimizer={cfg.optimizer.name} has no damping.",
                         "leave study.damping=null, or use optimizer=kfac / optimizer=shampoo.")
    if is_damped(cfg.optimizer.name):
        dampings: list[float | None] = parse_grid("study.damping",
                                                  cfg.optimizer.damping if s.damping is None else s.damping)
    else:
        dampings = [None]
    seeds = list(s.seeds) if OmegaConf.is_list(s.seeds) else [s.seeds]
    if not seeds or not all(is_int(x) for x in seeds):
        raise UsageError("study.seeds", f"must be a list of integers, got {s.seeds!r}.", "e.g. study.seeds=[0,1].")
    widths = check_widths("study.widths", s.widths if s.widths is not None else [cfg.model.base_width],
                          minimum=cfg.model.base_width)
    check_metric(s.metric)
    verdict.check(s)
    check_refine(s)
    if not (is_int(s.max_trials) and s.max_trials > 0):
        raise UsageError("study.max_trials", f"must be a positive integer, got {s.max_trials!r}.",
                         "e.g. study.max_trials=10000.")
    return Grid(params, lrs, dampings, seeds, widths)


def check_metric(metric: Any) -> str:
    """study.metric, or UsageError."""
    if metric not in METRICS:
        raise UsageError("study.metric", f"must be one of {', '.join(METRICS)}, got {metric!r}.",
                         "e.g. study.metric=train_loss.")
    return metric


def plan_sweep(cfg: DictConfig, param_configs: dict[str, dict]) -> list[Trial]:
    """The sweep's trials: params × widths × lr × damping × seeds (``param_configs``: resolved config per param)."""
    grid = check(cfg)
    return [make_trial(with_values(param_configs[param], width=width, lr=lr, damping=damping, seed=seed), "sweep")
            for param in grid.params for width in grid.widths for lr in grid.lrs for damping in grid.dampings
            for seed in grid.seeds]


def open_or_create(cfg: DictConfig, overrides: list[str]) -> Study:
    """The study folder for ``cfg`` (created when new). A named study made with other settings is refused."""
    study = Study(check_folder(cfg))
    check_same_base(study, cfg)
    if not (study.path / SPEC).exists():
        base = base_config(to_container(cfg))
        study.write_spec({"name": study.name, "base_hash": _digest(base), "overrides": list(overrides),
                          "base_config": base})
    return study


def check_same_base(study: Study, cfg: DictConfig) -> None:
    """UsageError when ``cfg`` changes a setting the study's trials share (anything but the grid values)."""
    spec = study.spec() if (study.path / SPEC).exists() else None
    if spec is None:
        return
    base = base_config(to_container(cfg))
    if spec.get("base_hash") != _digest(base):
        changed = sorted(_diff(spec.get("base_config", {}), base))
        raise UsageError(changed[0] if changed else "study.name",
                         f"study {study.name} was made with other settings (changed: {', '.join(changed)}; "
                         f"made with: {' '.join(spec.get('overrides', [])) or 'the defaults'}).",
                         "use the study's settings, or start a new study with study.name=<new name>.")


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in set(a) | set(b) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


# ------------------------------------------------------------------------------------------------------
# Selecting the best setting at the base width

UNREADABLE = "unreadable"   # a result.json that cannot be read (counted and skipped by the report)


def objective(result: dict | None, metric: str) -> float | None:
    """The selection value of a result, as a loss (lower is better): diverged → +inf; failed/missing → None."""
    if not result or result.get("status") not in track.FINAL_STATUSES:
        return None
    if result["status"] == track.DIVERGED:
        return math.inf
    value = (result.get("final") or {}).get(metric)
    if not is_number(value):  # None (JSON's inf) or a non-finite number; a non-number never gets here: _trusted
        return math.inf
    return -value if METRICS[metric] == "max" else value


def _trusted(result: dict, folder: Path) -> bool:
    """Whether a result can be believed: a known status, numbers (or null) where metrics are, and a whole
    metrics.jsonl beside a finished one when there is one (a torn or hand-edited file is counted unreadable, never
    half-read)."""
    if result.get("status") not in track.RESULT_STATUSES:
        return False
    if result["status"] == track.FAILED:
        return True
    final = result.get("final")
    if not isinstance(final, dict) or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                              for v in final.values()):
        return False
    metrics = folder / track.METRICS  # absent is no contradiction (a result written by hand or by an older muso)
    return not metrics.exists() or track.read_json_lines(metrics) is not None


def points(study: Study, metric: str) -> list[dict]:
    """One row per trial entry, what the verdict (muso_cli.verdict) reads: index, trial_id, phase, param, width,
    lr, damping (NaN without damping), seed, status (ok | diverged | failed | running | pending | unreadable),
    objective (:func:`objective`; NaN when unfinished), the result itself (None when there is none) and the
    trial's config."""
    rows = []
    for t in study.trials():
        folder = study.trial_dir(t)
        result = track.read_json(folder / track.RESULT)
        if result is not None and _trusted(result, folder):
            status = result["status"]
        elif (folder / track.RESULT).exists():
            status, result = UNREADABLE, None
        else:
            status = track.RUNNING if claims.is_running(folder) else track.PENDING
        value = objective(result, metric)
        rows.append({"index": t.index, "trial_id": t.id, "phase": t.phase, "param": t.param, "width": t.width,
                     "lr": t.lr, "damping": math.nan if t.damping is None else t.damping, "seed": t.seed,
                     "status": status, "objective": math.nan if value is None else value, "result": result,
                     "config": t.config})
    return rows


def select_best(study: Study, metric: str, base_width: int) -> dict[str, dict]:
    """Per parameterization with trials at the base width: the optimum of its base-width cell (muso_cli.verdict:
    the setting with the lowest mean objective over seeds; a setting with a diverged seed is never chosen).

    Returns {param: choice}. A choice with an optimum: {lr, damping, value (in the metric's own units), metric,
    trials (ids at the optimum), finished, planned (counts of the parameterization's base-width trials), edge
    ({axis: low | high} where the optimum is at the grid edge), stability_bound ([axes])}. Without one (no setting
    finished finite): {lr: None, problem: UsageError naming the key and the fix, finished, planned}.
    """
    rows = [r for r in points(study, metric) if r["width"] == base_width]
    best: dict[str, dict] = {}
    for (param, _), cell in verdict.cells(rows).items():
        mine = [r for r in rows if r["param"] == param]
        counts = {"finished": sum(r["status"] in track.FINAL_STATUSES for r in mine), "planned": len(mine)}
        if cell.best is None:
            best[param] = {"lr": None, "problem": cell.problem(), **counts}
            continue
        opt = cell.summary()["optimum"]
        at = [r for r in mine if math.isclose(r["lr"], opt["lr"], rel_tol=1e-9)
              and (opt["damping"] is None or math.isclose(r["damping"], opt["damping"], rel_tol=1e-9))]
        axes = opt["axes"]
        best[param] = {"lr": opt["lr"], "damping": opt["damping"],
                       "value": -opt["objective"] if METRICS[metric] == "max" else opt["objective"],
                       "metric": metric, "trials": [r["trial_id"] for r in at],
                       "edge": {a: info["edge"] for a, info in axes.items() if info["edge"]},
                       "stability_bound": [a for a, info in axes.items() if info["stability_bound"]], **counts}
    return best


def plan_transfer(study: Study, best: dict[str, dict], widths: list[int], seeds: list[int],
                  runtime: dict | None = None) -> list[Trial]:
    """Trials of each parameterization's best setting at ``widths`` (config of the best sweep trial, new width).

    The source is looked up by (id, param): at the base width one run serves every parameterization, and each
    entry keeps its own parameterization's config. ``runtime``: a config whose non-semantic sections (launcher,
    logger, device, …) the new trials take.
    """
    by_key = {(t.id, t.param): t for t in study.trials()}
    trials = []
    for param, choice in best.items():
        source = by_key[choice["trials"][0], param].config
        for width in widths:
            for seed in seeds:
                config = with_values(source, width=width, seed=seed)
                trials.append(make_trial(with_runtime(config, runtime) if runtime else config, "transfer"))
    return trials


# ------------------------------------------------------------------------------------------------------
# Refining a sweep near each optimum

def check_refine(study_cfg: Any) -> tuple[float, int]:
    """(study.refine_to in octaves, study.refine_budget in trials), or UsageError naming the key."""
    to, budget = study_cfg.get("refine_to", 0.25), study_cfg.get("refine_budget", 200)
    raise_all([check_positive("study.refine_to", to), check_positive("study.refine_budget", budget, integer=True)])
    return float(to), int(budget)


def refine_values(axis: dict, refine_to: float) -> list[float]:
    """New values of one axis around a cell's optimum (``axis``: :meth:`muso_cli.verdict.Cell.axis`): half the
    step to each neighbour wider than ``refine_to`` octaves, and one step beyond a grid edge (the step of the other
    side). Geometric midpoints and reflections, to 12 significant digits (the same values on every replanning)."""
    v, below, above = axis["value"], axis["step_below"], axis["step_above"]
    coarse = refine_to * (1 + 1e-6)  # grid values carry 12 digits: a step of 0.25 may read 0.2500000001
    new = []
    if axis["edge"] == "low":
        new.append(v / 2 ** above)
    elif below > coarse:
        new.append(v / 2 ** (below / 2))
    if axis["edge"] == "high":
        new.append(v * 2 ** below)
    elif above > coarse:
        new.append(v * 2 ** (above / 2))
    return [float(f"{x:.12g}") for x in new]


def plan_refine(study: Study, metric: str, params: Iterable[str], refine_to: float, seeds: list[int],
                runtime: dict | None = None) -> tuple[list[Trial], list[str]]:
    """One refinement round: the trials to plan, and notes on the cells left as they are.

    For every cell (parameterization × width with a grid) of ``params`` that has an optimum: along each swept
    axis, the new values of :func:`refine_values`; with lr and damping both swept, every combination of the
    optimum's lr and the new lrs with its damping and the new dampings (so that a new optimum has neighbours on
    both axes). Each setting of the cell, old and new, is planned for every seed in ``seeds``: finished trials
    keep their ids and are not rerun, and a new seed list fills in the whole cell. A cell without an optimum is
    not refined (there is nothing to refine around); its note says why and what to change. At the base width
    every parameterization is the same run: a point planned there for one is planned for every parameterization
    whose trial it is (the same id, no extra run), so their base cells stay the same grid.
    """
    rows = points(study, metric)
    by_key = {(t.id, t.param): t for t in study.trials()}
    grid = verdict.cells(rows)
    wanted, notes = set(params), []
    planned: dict[tuple[str, int], set] = {}  # refined cell → its settings (lr, damping), old and new
    for (param, width), cell in grid.items():
        if param not in wanted or cell.n_settings < 2:
            continue
        if cell.best is None:
            e = cell.problem()
            notes.append(f"{param} width {width}: {e.problem}: not refined. Fix: {e.fix}.")
            continue
        opt = cell.summary()["optimum"]
        lrs = [opt["lr"], *(refine_values(opt["axes"]["lr"], refine_to) if "lr" in opt["axes"] else [])]
        dampings = [opt["damping"], *(refine_values(opt["axes"]["damping"], refine_to)
                                      if "damping" in opt["axes"] else [])]
        planned[param, width] = {(r["lr"], None if math.isnan(r["damping"]) else r["damping"]) for r in rows
                                 if r["param"] == param and r["width"] == width}
        planned[param, width] |= {(lr, d) for lr in lrs for d in dampings if cell.find(lr, d) is None}

    def plan(param: str, width: int, settings: set) -> list[Trial]:
        source = by_key[next(r["trial_id"] for r in rows if r["param"] == param and r["width"] == width), param]
        configs = [with_values(source.config, lr=lr, damping=damping, seed=seed)
                   for lr, damping in sorted(settings, key=lambda s: (s[0], s[1] or 0.0)) for seed in seeds]
        return [make_trial(with_runtime(c, runtime) if runtime else c, "refine") for c in configs]

    trials = {(t.id, t.param): t for (param, width), settings in planned.items() for t in plan(param, width, settings)}
    ids = {i for i, _ in trials}
    for param, width in grid:  # the same runs, listed for the other parameterizations they serve
        for (other, w), settings in planned.items():
            if w == width and other != param:
                trials.update({(t.id, t.param): t for t in plan(param, width, settings) if t.id in ids})
    return list(trials.values()), notes
