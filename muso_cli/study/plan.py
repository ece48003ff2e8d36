"""Planning: the trials of a sweep, of a refinement round and of a transfer, and the choice of the best setting at
the base width (what ``muso transfer`` carries). Plans are lists of :class:`~.trials.Trial`; the store merges them
into the index.
"""
from __future__ import annotations

import math
from typing import Iterable

from .. import track, verdict
from .results import points
from .spec import METRICS, Grid
from .store import Study
from .trials import Trial, make_trial, with_runtime, with_values


def plan_sweep(grid: Grid, param_configs: dict[str, dict]) -> list[Trial]:
    """The sweep's trials: params × widths × lr × damping × seeds (``param_configs``: resolved config per param)."""
    return [make_trial(with_values(param_configs[param], width=width, lr=lr, damping=damping, seed=seed), "sweep")
            for param in grid.params for width in grid.widths for lr in grid.lrs for damping in grid.dampings
            for seed in grid.seeds]


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
