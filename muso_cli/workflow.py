"""The study steps: what ``muso sweep``, ``refine``, ``transfer`` and ``report`` do, between the command line (cli.py
parses and prints) and the launchers (launch.py runs trials).

Each step composes and checks its config, plans its trials, writes them to the study and returns what the command
prints; nothing here prints. The data flow is one way: config → plan → trials (launched by the caller) → result
files → verdict → report.

The override policy (:func:`study_overrides`): a study decides the parameterization and, per trial, width, lr,
damping and seed, so those keys are refused with the key to use, and nothing given on the command line is
silently ignored. A study made by someone else is data: :func:`open_for_planning` refuses to compose its config
search path or run what its config names as code without ``--trust`` (muso_cli.study.trust), and
:func:`report` reads names and results only.
"""
from __future__ import annotations

import time
import warnings
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import launch, track, verdict
from .config import compose, to_container
from .errors import UsageError, check_one_of, check_positive, parse_widths, raise_all
from .models import at_depth, depth_key, depth_of, parse_depths
from .setup import check_size
from .study import plan, trust
from .study.results import points
from .study.spec import StudySpec, parse_metric, parse_spec
from .study.store import Study, check_same_base, open_or_create, parse_folder
from .study.trials import Trial
from .validate import check_added_keys, compose_valid, validate

# Keys a study sets itself, per trial: key → the fix to print when a user sets it.
GRID_KEYS = {"model.width": "study.widths=[...] (a sweep's widths) or transfer.widths=[...] (a transfer's)",
             "model.depth": "study.depths=[...] (a sweep's depths) or transfer.depths=[...] (a transfer's)",
             "seed": "study.seeds=[...]", "optimizer.lr": "study.lr=[...]", "optimizer.damping": "study.damping=[...]"}


# The depth choices a study over depth keeps from its sweep (a trial id leaves them out at the base depth).
DEPTH_CHOICES = ("param.depth_alpha", "model.base_depth")


def study_overrides(overrides: list[str], command: str | None = None) -> list[str]:
    """The overrides of a study command, with nothing silently ignored.

    A study decides the parameterization (study.params) and, per trial, width, lr, damping and seed: those keys
    are refused with the key to use, except that in a sweep ``optimizer.lr`` / ``optimizer.damping`` given
    alone are the one-point grids study.lr / study.damping. ``hydra.*`` and ``hydra/…`` only apply to `muso run`.
    Hydra's comma lists (a multirun sweep elsewhere) are grid lists for study.* keys and refused for others.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException:
        return list(overrides)  # compose() reports the syntax error, with its hint
    keys = {o.key_or_group for o in parsed}
    out = []
    for o in parsed:
        key, line = o.key_or_group, o.input_line
        if command in ("transfer", "refine", "report") and key in ("study.widths", "study.depths"):
            axis = key.split(".")[1]
            raise UsageError(key, f"is the sweep's grid of {axis}; muso {command} does not take it.",
                             f"the target {axis} of a transfer are transfer.{axis}=[...]."
                             if command == "transfer" else f"sweep other {axis} with muso sweep study.{axis}=[...].")
        if command in ("transfer", "refine") and key in DEPTH_CHOICES:  # left out of the base config at the base depth
            raise UsageError(key, f"is the study's depth parameterization, set by its sweep; muso {command} carries "
                             "it to every depth (a base-depth run serves every α, so the study would not see it "
                             "change).", f"start a new study with muso sweep ... {key}=<value> study.name=<new name>.")
        if command == "report" and not key.startswith(("study.", "transfer.", "logger.")):
            raise UsageError(key, "muso report reads the study's results; this key would change nothing.",
                             "only study.* keys change a report (study.metric, study.delta, study.bootstrap.*), "
                             "and logger.* where it is mirrored.")
        if key == "param":
            raise UsageError("param", "a study compares the parameterizations in study.params.",
                             f"write study.params=[{line.split('=', 1)[1]}] instead of {line}.")
        if key.startswith("hydra") and key != "hydra.searchpath":  # the search path finds your own configs
            raise UsageError(key, f"`muso {command or 'study'}` is not a Hydra multirun: hydra.* and hydra/... "
                             "overrides only apply to `muso run`.",
                             "choose how trials run with launcher=local|pool|slurm (launcher.* keys).")
        if o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            if not key.startswith(("study.", "transfer.")) and not (command == "sweep" and key in GRID_KEYS):
                raise UsageError(key, f"has a comma list ({line}), which is a sweep, but {key} takes one value "
                                 "in a study.", "grid values go in study.lr / study.damping / study.seeds / "
                                 "study.widths, e.g. study.lr=[0.1,0.3].")
            line = f"{key}=[{','.join(values)}]"
        if key in GRID_KEYS and not (command == "sweep" and key in ("model.width", "model.depth")):  # plan_sweep
            grid = f"study.{key.split('.')[-1]}" if key.startswith("optimizer.") else None
            if command == "sweep" and grid and grid not in keys:
                value = line.split("=", 1)[1]
                if not value.startswith("["):  # a single value: validated as given, and the one-point grid
                    out.append(line)
                line = f"{grid}={value if value.startswith('[') else f'[{value}]'}"
            else:
                raise UsageError(key, f"is set by the study for each trial, so {line} would be ignored.",
                                 f"use {GRID_KEYS[key] if not grid or command != 'sweep' else grid + '=[...] only'}.")
        out.append(line)
    return out


# ------------------------------------------------------------------------------------------------------
# Opening a study someone may have made elsewhere

def open_for_planning(path: str, overrides: list[str], command: str, *, trust_it: bool = False
                      ) -> tuple[Study, DictConfig, StudySpec]:
    """(the study, its config: its recorded overrides then ``overrides``, validated, and its spec) for a command
    that plans and runs trials in it (refine, transfer).

    A study made by someone else's muso (muso_cli.study.trust) is refused, before its config search path is read
    or anything it names is imported, when it would run code (``_target_``, a config search path, launcher.setup,
    a trainer's command) and ``trust_it`` (``--trust``) is not given."""
    study = Study.open(path)
    manifest = study.manifest()
    recorded = list(manifest.get("overrides", []))
    mine = study_overrides(overrides, command)
    guarded = not trust_it and not trust.is_own(manifest)
    if guarded:
        searchpath = [o for o in recorded if o.partition("=")[0].lstrip("+~") == "hydra.searchpath"]
        if searchpath:
            raise _untrusted(study, command, searchpath)
    cfg = compose([*recorded, *mine])
    if guarded:
        found = trust.code_in(to_container(cfg))
        if found:
            raise _untrusted(study, command, found)
    check_added_keys(cfg, mine)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        validate(cfg)
    raise_all(check_same_base(study, cfg))
    return study, cfg, parse_spec(cfg)


def _untrusted(study: Study, command: str, found: list[str]) -> UsageError:
    return UsageError("--trust", f"study {study.path} was not made by your muso (its study.yaml holds no token of "
                      f"yours), and {command} would run what its config names: {'; '.join(found)}.",
                      f"read {study.path / 'study.yaml'} and trials.jsonl; if you trust their author, run "
                      f"`muso {command} {study.path} --trust ...`. `muso report` reads such a study without running "
                      "anything.")


def trusted_to_run(study: Study, trial: Trial, trust_it: bool) -> None:
    """UsageError when ``trial`` of someone else's study would run code (``muso run-trial`` without --trust)."""
    if trust_it or trust.is_own(study.manifest()):
        return
    found = trust.code_in(trial.config)
    if found:
        raise _untrusted(study, "run-trial", found)


# ------------------------------------------------------------------------------------------------------
# muso sweep

@dataclass
class SweepPlan:
    """A sweep, planned and not yet written: the config, the spec, the study folder, the trials and the overrides
    the study records."""

    cfg: DictConfig
    spec: StudySpec
    folder: Path
    trials: list[Trial]
    overrides: list[str]

    def finished_runs(self) -> int:
        """Runs of the plan that are finished already (a rerun skips them)."""
        study = Study(self.folder)
        runs = {t.id: t for t in self.trials}
        return sum(1 for t in runs.values() if self.folder.exists() and study.status(t) in track.FINAL_STATUSES)


def plan_sweep(overrides: list[str], *, yes: bool = False) -> SweepPlan:
    """Compose, check and plan a sweep (nothing is written). ``yes`` (--yes): a grid above study.max_trials, and
    widths whose model is above the size limit (muso_cli.setup.check_size), are planned anyway."""
    overrides = study_overrides(overrides, "sweep")
    cfg = compose_valid(overrides)
    spec = parse_spec(cfg)
    grid = spec.grid
    given = {o.split("=", 1)[0].lstrip("+") for o in overrides}
    if "model.width" in given and cfg.model.width not in grid.widths:
        raise UsageError("model.width", f"a sweep trains at study.widths {grid.widths}, so model.width="
                         f"{cfg.model.width} would be ignored.", f"write study.widths=[{cfg.model.width}] (or a list).")
    key = f"model.{depth_key(cfg.model)}"
    if key in given and grid.depths is not None and depth_of(cfg.model) not in grid.depths:
        raise UsageError(key, f"a sweep over depth trains at study.depths {grid.depths}, so {key}="
                         f"{depth_of(cfg.model)} would be ignored.", f"write study.depths=[{depth_of(cfg.model)}] (or a list).")
    folder = parse_folder(cfg)
    raise_all(launch.check(cfg.launcher))
    if len(grid) > spec.max_trials and not yes:
        raise UsageError("study.max_trials", f"the grid has {len(grid)} trials, more than study.max_trials="
                         f"{spec.max_trials}.", "check study.lr / study.damping / study.seeds / study.widths; "
                         "to run it anyway pass --yes (or raise study.max_trials).")
    raise_all([_check_scale_size(cfg, grid.scale, max(grid.scales), f"study.{grid.scale}s", yes)])
    param_configs = {p: to_container(compose_valid([*overrides, f"param={p}"])) for p in grid.params}
    return SweepPlan(cfg, spec, folder, plan.plan_sweep(grid, param_configs), overrides)


def _check_scale_size(cfg: DictConfig, scale: str, largest: int, key: str, yes: bool) -> UsageError | None:
    """check_size at the widest width, or (a study over depth) at the deepest depth and model.width."""
    if scale == "width":
        return check_size(cfg, largest, key, yes=yes)
    deep = OmegaConf.merge(cfg, {"model": at_depth(cfg.model, largest)})
    return check_size(deep, int(cfg.model.width), key, yes=yes)


def study_scale(cfg: DictConfig) -> tuple[str, int]:
    """(the axis a study varies: width | depth, its base value: model.base_width | model.base_depth), from the
    study's config (study.depths set: depth)."""
    if cfg.study.get("depths") is not None:
        return "depth", int(cfg.model.base_depth)
    return "width", int(cfg.model.base_width)


def write_sweep(sweep: SweepPlan) -> tuple[Study, list[Trial], list[str]]:
    """Write a planned sweep into its study (created when new; a second sweep adds to it): (the study, its trials
    with their indices, the overrides the study's record gained: parameterizations or seeds it adds)."""
    existed = Study(sweep.folder).manifest() is not None
    grid = sweep.spec.grid
    study = open_or_create(sweep.cfg, sweep.overrides, grid.params, grid.seeds)
    with _writing(study, "study.root"):
        added = study.widen(grid.params, grid.seeds) if existed else []
        return study, study.add(sweep.trials), added


@contextmanager
def _writing(study: Study, key: str):
    """Planning writes into the study folder: an OSError there (read-only, full) is a UsageError naming ``key``."""
    try:
        yield
    except OSError as e:
        raise UsageError(key, f"the study folder {study.path} cannot be written ({e.filename or 'a file'}: "
                         f"{e.strerror or e}).", "free space on its disk or fix its permissions; or copy the study "
                         "to a folder you can write to and run the command on the copy.") from None


# ------------------------------------------------------------------------------------------------------
# muso transfer

@dataclass
class TransferPlan:
    """A transfer, planned: per parameterization the chosen base-width setting, the target widths, the trials,
    and warnings (an optimum at the grid edge, transferred with --allow-edge)."""

    study: Study
    cfg: DictConfig
    spec: StudySpec
    best: dict[str, dict]
    widths: list[int]
    trials: list[Trial]
    warnings: list[str] = field(default_factory=list)


def plan_transfer(path: str, overrides: list[str], *, allow_edge: bool = False, trust_it: bool = False,
                  yes: bool = False) -> TransferPlan:
    """Choose each parameterization's best base-width setting and plan it at ``transfer.widths``; refuses (one
    UsageError per problem, before anything is written) a parameterization without a finite optimum at the base
    width, an optimum at the grid edge unless ``allow_edge``, and a width whose model is above the size limit
    (muso_cli.setup.check_size) unless ``yes``."""
    study, cfg, spec = open_for_planning(path, overrides, "transfer", trust_it=trust_it)
    widths, rule, verify, step = parse_transfer(cfg)
    scale, base = study_scale(cfg)
    raise_all([_check_scale_size(cfg, scale, max(widths), f"transfer.{scale}s", yes)])
    params = spec.grid.params
    best = plan.select_best(study, spec.metric, base, spec.settings, scale)
    usable = [p for p in params if best.get(p, {}).get("lr") is not None]
    refusals = []
    for param in params:  # a transfer needs a finite optimum at the base width: refuse before launching
        if param not in best:
            refusals.append(UsageError("study.params", f"{param}: no trial at the base {scale} {base}.",
                                       f"sweep it first (muso sweep ... study.params=[{param}])."))
        elif best[param]["lr"] is None:
            e = best[param]["problem"]
            refusals.append(UsageError(e.key, f"{param}: no finite optimum at the base width: {e.problem}.",
                                       e.fix + (f"; or transfer the others only (study.params=[{','.join(usable)}])"
                                                if usable else "") + "."))
    raise_all(refusals)
    best = {param: best[param] for param in params}
    notes = []
    for param, b in best.items():
        for axis, side in b["edge"].items():
            problem = (f"{param}: the best {axis} at the base width, {b[axis]:.4g}, is at the grid edge (the "
                       f"{'lowest' if side == 'low' else 'highest'} {axis} tried): the optimum may lie beyond.")
            if not allow_edge:
                raise UsageError(f"study.{axis}", problem,
                                 f"widen study.{axis} {'below' if side == 'low' else 'above'} {b[axis]:.4g} "
                                 f"(muso refine {study.path} extends it), or pass --allow-edge to transfer it anyway.")
            notes.append(f"{problem} Transferring it anyway (--allow-edge).")
    if rule == "fit":
        _law_choices(study, spec, base, best, widths, scale)
    trials = plan.plan_transfer(study, best, widths, spec.grid.seeds, runtime=to_container(cfg), verify=verify,
                                step=step, scale=scale)
    return TransferPlan(study, cfg, spec, best, widths, trials, notes)


def parse_transfer(cfg: DictConfig) -> tuple[list[int], str, int, float]:
    """(transfer.widths — transfer.depths for a study over depth —, transfer.lr: base | fit, transfer.verify: points
    per target width, transfer.verify_step: octaves between them), or UsageError(s) naming the key."""
    t = cfg.transfer
    if study_scale(cfg)[0] == "depth":
        if t.widths is not None:
            raise UsageError("transfer.widths", "the study varies the depth (its sweep set study.depths), at one width.",
                             "give the target depths: transfer.depths=[...] (and leave transfer.widths=null).")
        if t.get("depths") is None:
            raise UsageError("transfer.depths", "transfer of a study over depth needs the target depths.",
                             "e.g. transfer.depths=[8,32].")
        widths = parse_depths("transfer.depths", t.depths, cfg.model)
    elif t.get("depths") is not None:
        raise UsageError("transfer.depths", "the study varies the width (its sweep did not set study.depths).",
                         "give the target widths: transfer.widths=[...]; a study over depth starts with muso sweep "
                         "study.depths=[...].")
    elif t.widths is None:
        raise UsageError("transfer.widths", "transfer needs the target widths.", "e.g. transfer.widths=[256,1024,2048].")
    else:
        widths = parse_widths("transfer.widths", t.widths, cfg.model.base_width)
    raise_all([check_one_of("transfer.lr", t.get("lr", "base"), ("base", "fit")),
               check_positive("transfer.verify", t.get("verify", 3), integer=True),
               check_positive("transfer.verify_step", t.get("verify_step", 0.5))])
    return widths, t.get("lr", "base"), int(t.get("verify", 3)), float(t.get("verify_step", 0.5))


def _law_choices(study: Study, spec: StudySpec, base: int, best: dict, widths: list[int], scale: str = "width") -> None:
    """transfer.lr=fit: each parameterization's lr at every target width from its width law (muso_cli.law), to
    1/8 octave, into ``best[param]["lr_by_width"]``; UsageError where a parameterization has no law."""
    from . import law

    judged = verdict.judge(points(study, spec.metric), base, spec.settings, study.transfers(), scale=scale)
    problems = []
    for param, choice in best.items():
        fitted = judged["params"].get(param, {}).get("law", {}).get("lr")
        if fitted is None:
            problems.append(UsageError("transfer.lr", f"{param}: transfer.lr=fit needs lr* fitted (a bracketed valley) "
                                       f"at {law.MIN_SCALES} widths or more, and the study has fewer.",
                                       "sweep the lr grid at more widths (muso sweep ... study.widths=[...]) or use "
                                       "transfer.lr=base."))
            continue
        choice["lr_by_width"] = {str(w): float(f"{2.0 ** (round(law.predict(fitted, w, base) * 8) / 8):.12g}")
                                 for w in widths}
        choice["source"] = f"width law (β = {fitted['beta']:+.2f})"
    raise_all(problems)


def write_transfer(transfer: TransferPlan) -> list[Trial]:
    """Add a planned transfer's trials to the study and record the choice (transfer.json)."""
    with _writing(transfer.study, "study"):
        trials = transfer.study.add(transfer.trials)
        transfer.study.record_transfers(transfer.best, trials, transfer.widths)
    return trials


# ------------------------------------------------------------------------------------------------------
# muso refine

@dataclass
class Round:
    """One refinement round: the trials planned (old and new settings of every refined cell) and the ids of those
    that still have to run, for the parameterizations whose verdict is open."""

    planned: list[Trial]
    to_run: set[str]
    params: list[str]


class Refinement:
    """``muso refine``'s rounds: each plans grid points near every open cell's optimum, until the step there is
    study.refine_to octaves or every verdict is decided, within study.refine_budget trials. The caller writes
    and launches each round (:meth:`write`, then muso_cli.launch) and asks for the next."""

    def __init__(self, path: str, overrides: list[str], *, trust_it: bool = False):
        self.study, self.cfg, self.spec = open_for_planning(path, overrides, "refine", trust_it=trust_it)
        self.used, self.rounds, self.started = 0, 0, time.time()
        self.notes: list[str] = []
        self.stopped: str = ""
        self.judged: dict = {}

    def next_round(self) -> Round | None:
        """The next round, or None when refinement is over (:attr:`stopped` says why)."""
        spec, study = self.spec, self.study
        scale, base = study_scale(self.cfg)
        self.judged = verdict.judge(points(study, spec.metric), base, spec.settings, study.transfers(), scale=scale)
        open_params = [p for p in spec.grid.params  # a decided verdict needs no more points
                       if self.judged["params"].get(p, {}).get("verdict") not in verdict.DECIDED]
        judged = {**self.judged, "params": {p: pv for p, pv in self.judged["params"].items() if p in open_params}}
        verify, step = int(self.cfg.transfer.get("verify", 3)), float(self.cfg.transfer.get("verify_step", 0.5))
        planned, self.notes = plan.plan_refine(study, spec.metric, judged, spec.refine_to, spec.grid.seeds,
                                               runtime=to_container(self.cfg), verify=verify, step=step, scale=scale)
        to_run = {t.id for t in planned if study.status(t) not in track.FINAL_STATUSES}
        elapsed = f"{self.used} trials run in {time.time() - self.started:.0f} s"
        if not to_run:
            reason = ("every verdict is decided" if not open_params else
                      f"every optimum is resolved to {spec.refine_to:g} octave and no other point would decide "
                      f"{', '.join(open_params)} (the notes say what would)")
            self.stopped = f"done after {self.rounds} round(s), {elapsed}: {reason}."
            return None
        left = spec.refine_budget - self.used
        if len(to_run) > left:
            self.stopped = (f"round {self.rounds + 1} needs {len(to_run)} trials, {left} left of study.refine_budget="
                            f"{spec.refine_budget}: stopped after {self.rounds} round(s), {elapsed}. Raise "
                            "study.refine_budget to go on.")
            return None
        return Round(planned, to_run, open_params)

    def write(self, rnd: Round) -> list[Trial]:
        """Add a round's trials to the study (the caller launches them, then asks for the next round)."""
        with _writing(self.study, "study"):
            trials = self.study.add(rnd.planned)
        self.used += len(rnd.to_run)
        self.rounds += 1
        return trials


# ------------------------------------------------------------------------------------------------------
# Launching

def run(study: Study, trials: list[Trial], cfg: DictConfig) -> Counter:
    """Launch ``trials`` with the config's launcher (muso_cli.launch.launch): counts of their runs' statuses."""
    return launch.launch(study, trials, cfg.launcher)


# ------------------------------------------------------------------------------------------------------
# muso report: names and results only

def report_settings(study: Study, overrides: list[str]) -> DictConfig:
    """The study's recorded settings for a report, without composing its config or importing anything: the
    ``study`` and ``transfer`` sections recorded in study.yaml (older studies: those of the newest trial in
    trials.jsonl), the names and base width from its recorded base config, then ``overrides`` (study.* and
    transfer.* and logger.* keys, Hydra's grammar) on top. Returns {study, transfer, logger (the trials' W&B mirror,
    where the report goes too), model: {name, base_width}, data: {name}, optimizer: {name}}."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    manifest = study.manifest()
    trials = study.trials()
    newest = trials[-1].config if trials else {}
    base = manifest.get("base_config") or newest
    section = manifest.get("study") or newest.get("study")
    if not isinstance(section, dict) or not isinstance(base, dict):
        raise UsageError("study", f"{study.path / 'study.yaml'} records no study settings to report from.",
                         "report a study made by `muso sweep`, or restore its study.yaml.")
    names = {k: {"name": (base.get(k) or {}).get("name", "?")} for k in ("model", "data", "optimizer")}
    names["model"]["base_width"] = (base.get("model") or {}).get("base_width")
    # a study over depth judges on it (the base config leaves it out at the base depth: from the trials' configs)
    names["model"]["base_depth"] = next((m["base_depth"] for m in (base.get("model") or {}, newest.get("model") or {})
                                         if m.get("base_depth") is not None), None)
    logger = {k: v for k, v in (newest.get("logger") or {"mode": "disabled"}).items()
              if k in ("mode", "project", "entity", "dir", "tags")}
    settings = OmegaConf.create({"study": section, "transfer": newest.get("transfer") or {"widths": None},
                                 "logger": logger, **names})
    try:
        parsed = OverridesParser.create().parse_overrides(study_overrides(overrides, "report"))
    except OverrideParseException as e:
        raise UsageError("overrides", f"cannot read {' '.join(overrides)}: {str(e).splitlines()[0]}.",
                         "write key=value, e.g. study.metric=test_acc.") from None
    for o in parsed:
        key = o.key_or_group
        if OmegaConf.select(settings, key, default="<missing>") == "<missing>" and not o.is_add():
            raise UsageError(key, "is not a key of the study's settings.",
                             "muso report takes study.* keys: study.metric, study.tolerance, study.bootstrap.*.")
        value = o.value()
        OmegaConf.update(settings, key, list(value) if isinstance(value, (list, tuple)) else value, force_add=True)
    if not isinstance(settings.model.base_width, int):
        raise UsageError("study", f"{study.path / 'study.yaml'} records no base width.", "restore its study.yaml.")
    return settings


def report(path: str, overrides: list[str], out: str | None = None) -> tuple[dict, DictConfig, Path]:
    """Write a study's report (muso_cli.report.build) and return (what build returns, the settings, the report
    folder). Reads names and results only: nothing the study names is imported or run."""
    from . import report as report_mod

    study = Study.open(path)
    settings = report_settings(study, overrides)
    metric = parse_metric(settings.study.metric)
    verdict_settings = verdict.parse_settings(settings.study)
    folder = check_report_folder(Path(out) if out else study.path / "report")
    title = f"{study.name}: {settings.optimizer.name}, {settings.model.name} on {settings.data.name}"
    scale, base = study_scale(settings)
    try:
        res = report_mod.build(study, folder, metric, base, verdict_settings, title, scale=scale)
    except OSError as e:
        raise UsageError("--out", f"the report cannot be written to {folder}: {e.strerror or e}.",
                         "free space on its disk, or write the report elsewhere with --out DIR.") from None
    logger = OmegaConf.to_container(settings.logger, resolve=True)
    if logger.get("mode", "disabled") != "disabled" and not logger.get("dir"):
        logger["dir"] = str(study.path)  # beside the trials' runs: <study>/wandb
    res["wandb"] = track.log_report(logger, study.name, folder, res["verdict"])
    return res, settings, folder


def check_report_folder(folder: Path) -> Path:
    """``folder`` when a report can be written there (created when missing); UsageError naming --out otherwise."""
    from .setup import parse_output_folder

    return parse_output_folder("--out", folder, "give --out a folder you can write to (it is created), e.g. "
                               "--out /tmp/report.")


__all__ = ["GRID_KEYS", "Refinement", "Round", "SweepPlan", "TransferPlan", "open_for_planning", "plan_sweep",
           "plan_transfer", "report", "report_settings", "run", "study_overrides", "trusted_to_run", "write_sweep",
           "write_transfer"]
