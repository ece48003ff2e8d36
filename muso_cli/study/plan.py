"""Planning: the trials of a sweep, of a refinement round and of a transfer, and the choice of the best setting at
the base width (what ``muso transfer`` carries). Plans are lists of :class:`~.trials.Trial`; the store merges them
into the index.
"""
from __future__ import annotations

import math
from .. import cells, track, verdict
from ..models import depth_key
from .results import points
from .spec import METRICS, Grid
from .store import Study
from .trials import Trial, make_trial, with_runtime, with_values


def at_scale(config: dict, scale: str, value: int) -> dict:
    """A copy of a resolved config at ``value`` of a study's axis: model.width (``scale`` width) or the model's depth
    key (model.depth; model.layers for the GPT)."""
    if scale == "width":
        return with_values(config, width=value)
    out = with_values(config)
    out["model"][depth_key(out["model"])] = int(value)
    return out


def plan_sweep(grid: Grid, param_configs: dict[str, dict]) -> list[Trial]:
    """The sweep's trials: params × widths (or depths) × lr × damping × seeds (``param_configs``: resolved config per
    param)."""
    return [make_trial(with_values(at_scale(param_configs[param], grid.scale, value), lr=lr, damping=damping,
                                   seed=seed), "sweep")
            for param in grid.params for value in grid.scales for lr in grid.lrs for damping in grid.dampings
            for seed in grid.seeds]


def select_best(study: Study, metric: str, base_width: int, settings: verdict.Settings,
                scale: str = "width") -> dict[str, dict]:
    """Per parameterization with trials at the base width (the base depth, ``scale`` depth): the setting to transfer (muso_cli.cells.choose: the
    fitted optimum of its base-width cell where its valley is bracketed, else the grid optimum; a setting with a
    diverged seed is never chosen).

    Returns {param: choice}. A choice with an optimum: {lr, damping, source (fitted optimum or grid optimum),
    axes (the swept axes), value (the grid optimum's score, in the metric's own units), metric, trials (ids at the
    grid optimum: the source of the transfer's config), finished, planned (counts of the parameterization's
    base-width trials), edge ({axis: low | high} where the grid optimum is at the grid edge), stability_bound
    ([axes])}. Without one (no setting finished finite): {lr: None, problem: UsageError naming the key and the
    fix, finished, planned}.
    """
    rows = [r for r in points(study, metric) if r[scale] == base_width]
    grid = cells.cells(rows, scale=scale)
    cells.fit_cells(grid, settings, base_width)
    best: dict[str, dict] = {}
    for (param, _), cell in grid.items():
        mine = [r for r in rows if r["param"] == param]
        counts = {"finished": sum(r["status"] in track.FINAL_STATUSES for r in mine), "planned": len(mine)}
        if cell.best is None:
            best[param] = {"lr": None, "problem": cell.problem(), **counts}
            continue
        opt = cell.summary()["optimum"]
        at = [r for r in mine if math.isclose(r["lr"], opt["lr"], rel_tol=1e-9)
              and (opt["damping"] is None or math.isclose(r["damping"], opt["damping"], rel_tol=1e-9))]
        axes = opt["axes"]
        best[param] = {**cells.choose(cell), "axes": list(cell.swept),
                       "value": -opt["objective"] if METRICS[metric] == "max" else opt["objective"],
                       "metric": metric, "trials": [r["trial_id"] for r in at],
                       "edge": {a: info["edge"] for a, info in axes.items() if info["edge"]},
                       "stability_bound": [a for a, info in axes.items() if info["stability_bound"]], **counts}
    return best


def verify_offsets(k: int, step: float) -> list[float]:
    """The octave offsets of ``k`` points around a transferred value: 0, −step, +step, −2·step, … (k of them)."""
    offsets = [0.0]
    n = 1
    while len(offsets) < k:
        offsets += [-n * step, n * step]
        n += 1
    return sorted(offsets[:k])


def plan_transfer(study: Study, best: dict[str, dict], widths: list[int], seeds: list[int],
                  runtime: dict | None = None, verify: int = 1, step: float = 0.5, scale: str = "width") -> list[Trial]:
    """Trials of each parameterization's chosen setting at ``widths`` (the config of the grid optimum's sweep
    trial, with the new width, lr and damping), and ``verify`` − 1 verification points around it along every swept
    axis (``step`` octaves apart, the other axis held: phase verify), every seed.

    A choice's ``lr_by_width`` ({width: lr}, transfer.lr=fit) gives the lr at each width; else its ``lr``. The
    source is looked up by (id, param): at the base width one run serves every parameterization, and each entry
    keeps its own parameterization's config. ``runtime``: a config whose non-semantic sections (launcher, logger,
    device, …) the new trials take. ``scale`` depth: ``widths`` are depths (a study over depth), set in model.depth.
    """
    by_key = {(t.id, t.param): t for t in study.trials()}
    trials = []
    for param, choice in best.items():
        source = by_key[choice["trials"][0], param].config
        for width in widths:
            lr = float((choice.get("lr_by_width") or {}).get(str(width), choice["lr"]))
            points = [(lr, choice["damping"], "transfer")]
            for axis in choice.get("axes") or ["lr"]:
                for off in verify_offsets(verify, step):
                    if off:
                        value = (lr if axis == "lr" else choice["damping"]) * 2.0 ** off
                        value = float(f"{value:.12g}")
                        points.append((value, choice["damping"], "verify") if axis == "lr"
                                      else (lr, value, "verify"))
            for lr_value, damping, phase in points:
                for seed in seeds:
                    config = with_values(at_scale(source, scale, width), lr=lr_value, damping=damping, seed=seed)
                    trials.append(make_trial(with_runtime(config, runtime) if runtime else config, phase))
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


def plan_refine(study: Study, metric: str, judged: dict, refine_to: float, seeds: list[int],
                runtime: dict | None = None, verify: int = 5, step: float = 0.5,
                scale: str = "width") -> tuple[list[Trial], list[str]]:
    """One refinement round: the trials to plan, and notes on what a round cannot do.

    For every parameterization whose verdict in ``judged`` (muso_cli.verdict.judge) is undecided:

    - the points its verdict asks for, where it names them: past the tried end of an open valley (where the loss
      still falls), and verification points (the transferred setting and ``verify`` − 1 points ``step`` octaves
      around it) at a width where the transferred setting's regret is unknown;
    - else, for every cell of it with a grid and an optimum, along each swept axis, the new values of
      :func:`refine_values` (half the step near the optimum, until ``refine_to`` octaves: more points tighten the
      fitted valleys); with lr and damping both swept, every combination of the optimum's lr and the new lrs with
      its damping and the new dampings.

    And for every parameterization, decided or not, whose base-width optimum lies at the grid's edge (which
    ``muso transfer`` refuses to carry), the point one step beyond it.

    Each setting, old and new, is planned for every seed in ``seeds``: finished trials keep their ids and are not
    rerun. What a round cannot do (more seeds; a cell without an optimum) becomes a note saying what to change.
    At the base width every parameterization is the same run: a point planned there for one is planned for every
    parameterization whose trial it is (the same id, no extra run), so their base cells stay the same grid.
    ``scale`` depth: the cells are (param, depth) of a study over depth.
    """
    rows = points(study, metric)
    by_key = {(t.id, t.param): t for t in study.trials()}
    grid = cells.cells(rows, scale=scale)
    open_params = {p for p, pv in judged["params"].items() if pv["verdict"] not in verdict.DECIDED}
    notes: list[str] = []
    planned: dict[tuple[str, int], set] = {}  # refined cell → its settings (lr, damping), old and new

    def existing(param: str, width: int) -> set:
        return {(r["lr"], None if math.isnan(r["damping"]) else r["damping"]) for r in rows
                if r["param"] == param and r[scale] == width}

    # where the verdict names the points that would decide it, those; else (more seeds, a cell to mend) a finer
    # grid near the optima, which tightens the fitted valleys
    targeted = {p for p in open_params for row in judged["params"][p]["regret"] if row["verdict"] == "undecided"
                for need in row.get("needs", []) if need["kind"] in ("point", "verify")}
    base = judged.get("base_width")
    for (param, width), cell in grid.items():
        at_edge = (width == base and cell.best is not None
                   and any(cell.axis(a)["edge"] for a in cell.swept))  # muso transfer refuses an edge optimum
        if not at_edge and (param not in open_params or param in targeted or cell.n_settings < 2):
            continue
        if cell.best is None:
            e = cell.problem()
            notes.append(f"{param} {scale} {width}: {e.problem}: not refined. Fix: {e.fix}.")
            continue
        opt = cell.summary()["optimum"]
        lrs = [opt["lr"], *(refine_values(opt["axes"]["lr"], refine_to) if "lr" in opt["axes"] else [])]
        dampings = [opt["damping"], *(refine_values(opt["axes"]["damping"], refine_to)
                                      if "damping" in opt["axes"] else [])]
        planned[param, width] = existing(param, width) | {(lr, d) for lr in lrs for d in dampings
                                                          if cell.find(lr, d) is None}
    for param in sorted(open_params):
        pv = judged["params"][param]
        chosen = pv.get("transferred") or {}
        for row in pv["regret"]:
            if row["verdict"] != "undecided":
                continue
            width = row["width"]
            for need in row.get("needs", []):
                new = set()
                if need["kind"] == "point":
                    value = float(f"{2.0 ** need['log2']:.12g}")
                    new = {(value, chosen.get("damping")) if need["axis"] == "lr" else (chosen["lr"], value)}
                elif need["kind"] == "verify":
                    new = {(float(f"{chosen['lr'] * 2.0 ** off:.12g}"), chosen.get("damping"))
                           for off in verify_offsets(verify, step)}
                elif need["kind"] == "seeds":
                    notes.append(f"{param} {scale} {width}: {row['why']}: " + "; ".join(row["decide"])
                                 + " (muso sweep with the study's settings and more study.seeds adds them).")
                if new:
                    planned[param, width] = planned.get((param, width), existing(param, width)) | new

    def source_config(param: str, width: int) -> dict:
        here = [r for r in rows if r["param"] == param and r[scale] == width]
        if here:
            return by_key[here[0]["trial_id"], param].config
        return at_scale(by_key[next(r["trial_id"] for r in rows if r["param"] == param), param].config, scale, width)

    def plan(param: str, width: int, settings: set) -> list[Trial]:
        source = source_config(param, width)
        configs = [with_values(source, lr=lr, damping=damping, seed=seed)
                   for lr, damping in sorted(settings, key=lambda s: (s[0], s[1] or 0.0)) for seed in seeds]
        return [make_trial(with_runtime(c, runtime) if runtime else c, "refine") for c in configs]

    trials = {(t.id, t.param): t for (param, width), settings in planned.items() for t in plan(param, width, settings)}
    ids = {i for i, _ in trials}
    for param, width in grid:  # the same runs, listed for the other parameterizations they serve
        for (other, w), settings in planned.items():
            if w == width and other != param:
                trials.update({(t.id, t.param): t for t in plan(param, width, settings) if t.id in ids})
    return list(trials.values()), list(dict.fromkeys(notes))
