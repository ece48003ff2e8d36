"""A study's keys (``study.*``), parsed once per command into a :class:`StudySpec`: the grid a sweep varies, the
selection metric, the verdict's settings and refine's target and budget. Every problem is a UsageError naming
the key; several are reported together.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from .. import verdict
from ..errors import UsageError, check_positive, is_int, parse_widths, raise_all
from ..models import parse_depths
from ..parametrize import PARAMS, damped_optimizers, is_damped

METRICS = {"train_loss": "min", "test_loss": "min", "test_acc": "max"}
MAX_GRID_POINTS = 1000  # per axis: a typo such as log2:-10:10:0.001 is refused before it fills memory
MAX_EXPONENT = {2: 1000, 10: 300}  # |lo|, |hi| of a log grid: its values stay finite, positive floats

_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_LOG_GRID = re.compile(rf"log(2|10):({_NUMBER}):({_NUMBER})(?::({_NUMBER}))?")


def parse_grid(key: str, spec: Any) -> list[float]:
    """A grid of positive values from a list, a number, or ``logB:lo:hi[:step]`` (B^lo … B^hi, step in exponents).

    >>> parse_grid("study.lr", "log2:-3:0")
    [0.125, 0.25, 0.5, 1.0]
    """
    example = f"write a list ({key}=[0.1,0.3]) or a log range ({key}=log2:-8:0 or log10:-4:-1:0.5)."
    if OmegaConf.is_list(spec) or isinstance(spec, (list, tuple)):
        values = list(spec)
    elif isinstance(spec, str):
        m = _LOG_GRID.fullmatch(spec.strip())
        if not m:
            raise UsageError(key, f"cannot read the grid {spec!r}.", example)
        base, lo, hi, step = int(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4) or 1)
        limit = MAX_EXPONENT[base]
        if abs(lo) > limit or abs(hi) > limit:
            raise UsageError(key, f"the range {spec!r} has exponents beyond ±{limit}.", example)
        if hi < lo or step <= 0:
            raise UsageError(key, f"the range {spec!r} is empty.", "use lo ≤ hi and a positive step.")
        n = int(math.floor((hi - lo) / step + 1e-9)) + 1
        if n > MAX_GRID_POINTS:
            raise UsageError(key, f"the range {spec!r} has {n} points.",
                             f"use a coarser step or a narrower range (at most {MAX_GRID_POINTS} points).")
        values = [float(base) ** round(lo + i * step, 10) for i in range(n)]
    else:
        values = [spec]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
                              for v in values):
        raise UsageError(key, f"must hold positive numbers, got {spec!r}.", f"e.g. {key}=log2:-8:0.")
    return [float(v) for v in values]


@dataclass(frozen=True)
class Grid:
    """What a sweep varies: parameterizations × widths (or depths) × base learning rates × base dampings × seeds.

    dampings is [None] for optimizers without damping. depths: a study over depth (study.depths) at the one width of
    ``widths``; None for a study over width.
    """

    params: list[str]
    lrs: list[float]
    dampings: list[float | None]
    seeds: list[int]
    widths: list[int]
    depths: list[int] | None = None

    @property
    def scale(self) -> str:
        """The axis the study varies: width or depth."""
        return "width" if self.depths is None else "depth"

    @property
    def scales(self) -> list[int]:
        """The values of that axis in the grid."""
        return self.widths if self.depths is None else self.depths

    def __len__(self) -> int:
        return len(self.params) * len(self.scales) * len(self.lrs) * len(self.dampings) * len(self.seeds)


@dataclass(frozen=True)
class StudySpec:
    """A study's keys, parsed: the grid, the selection metric, the verdict's settings, refine's target (octaves)
    and budget (trials), and the most trials a sweep may plan without --yes."""

    grid: Grid
    metric: str
    settings: verdict.Settings
    refine_to: float
    refine_budget: int
    max_trials: int


def parse_spec(cfg: DictConfig) -> StudySpec:
    """The ``study.*`` keys of a composed config as a StudySpec; UsageError(s) naming every bad key."""
    s, problems = cfg.study, []

    def attempt(parse, *args):
        try:
            return parse(*args)
        except UsageError as e:
            problems.append(e)
            return None

    params = _names_list(s.params)
    bad = [p for p in params if p not in PARAMS]
    if not params or bad:
        problems.append(UsageError("study.params", f"unknown parameterization(s) {bad or params}.",
                                   f"use a list of {', '.join(PARAMS)}, e.g. study.params=[sp,somup]."))
    elif len(set(params)) < len(params):
        problems.append(UsageError("study.params", f"lists a parameterization twice: {params}.",
                                   f"list each once, e.g. study.params=[{','.join(dict.fromkeys(params))}]."))
    lrs = attempt(parse_grid, "study.lr", s.lr)
    optimizer = cfg.optimizer.name
    dampings: list | None = [None]
    if s.damping is not None and not is_damped(optimizer):
        problems.append(UsageError("study.damping", f"optimizer={optimizer} has no damping.",
                                   f"leave study.damping=null, or use one of the damped optimizers "
                                   f"({', '.join(f'optimizer={o}' for o in damped_optimizers())})."))
    elif is_damped(optimizer):
        dampings = attempt(parse_grid, "study.damping", cfg.optimizer.damping if s.damping is None else s.damping)
    seeds = _names_list(s.seeds)
    if not seeds or not all(is_int(x) for x in seeds):
        problems.append(UsageError("study.seeds", f"must be a list of integers, got {s.seeds!r}.",
                                   "e.g. study.seeds=[0,1]."))
    elif len(set(seeds)) < len(seeds):
        problems.append(UsageError("study.seeds", f"lists a seed twice: {seeds} (a seed is the same run twice).",
                                   f"list each once, e.g. study.seeds=[{','.join(map(str, dict.fromkeys(seeds)))}]."))
    depths = None
    if s.get("depths") is not None:
        if s.widths is not None:
            problems.append(UsageError("study.depths", f"and study.widths are both set ({list(s.depths)}, "
                                       f"{list(s.widths)}): a study varies one scale axis.",
                                       "study the depth at one width (study.widths=null, model.width=<it>), or the "
                                       "width at one depth (study.depths=null, model.depth=<it>)."))
        depths = attempt(parse_depths, "study.depths", s.depths, cfg.model)
        widths = [int(cfg.model.width)]
    else:
        widths = attempt(parse_widths, "study.widths", s.widths if s.widths is not None else [cfg.model.base_width],
                         cfg.model.base_width)
    metric = attempt(parse_metric, s.metric)
    settings = attempt(verdict.parse_settings, s)
    refine = attempt(parse_refine, s)
    problems.append(check_positive("study.max_trials", s.max_trials, integer=True))
    raise_all(problems)
    return StudySpec(Grid(params, lrs, dampings, seeds, widths, depths), metric, settings, *refine, int(s.max_trials))


def _names_list(value: Any) -> list:
    return list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else [value]


def parse_metric(metric: Any) -> str:
    """study.metric, or UsageError."""
    if metric not in METRICS:
        raise UsageError("study.metric", f"must be one of {', '.join(METRICS)}, got {metric!r}.",
                         "e.g. study.metric=train_loss.")
    return metric


def parse_refine(study_cfg: Any) -> tuple[float, int]:
    """(study.refine_to in octaves, study.refine_budget in trials), or UsageError naming the key."""
    to, budget = study_cfg.get("refine_to", 0.25), study_cfg.get("refine_budget", 200)
    raise_all([check_positive("study.refine_to", to), check_positive("study.refine_budget", budget, integer=True)])
    return float(to), int(budget)
