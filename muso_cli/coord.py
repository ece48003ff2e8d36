"""Coordinate check: does each layer's feature update stay Θ(1) as the width (or the depth) grows?

For each width, from the same seed, take ``steps`` optimizer steps on one fixed batch and record, per Linear /
Conv2d layer, embedding and forward multiplier (attention logits: role ``attention``), the RMS over all
coordinates of its output h (a layer's pre-activation) and of its change Δh = h_t − h_0 from initialisation,
both measured on that batch. The readout's output is the network output f,
so its Δh is Δf. Fit the slope of log2(RMS) against log2(width): a parameterization is right when every hidden
Δh and the output Δf are flat (|slope| ≲ 0.15), docs/parameterization.md. Widths near the base width
suffer finite-size effects, so slopes are fitted from ``fit_from`` (default 4 × base width) upward, over at least
MIN_FIT_WIDTHS widths (a slope through two points has no residual to tell noise from trend: with one seed, two
widths an octave apart read a flat layer as shrinking by −0.25 … −0.40), and the slope from the base width is
reported beside them. Parameters with a role whose output the check cannot hook (a tensor read directly, such as a
position embedding (1, T, d), or a layer whose forward never runs, such as nn.MultiheadAttention's out_proj) are
listed as not observed (:func:`unobserved`), never silently dropped.

Over depth (``coord.depths``, a model with residual blocks, at the width model.width): the same steps at each
depth, and per layer the mean over the blocks of its RMS (a layer inside the blocks is named by its block pattern,
``blocks.*.fc1``), plus each block's contribution to the residual stream, the output of its branch multipliers
(role ``branch``), and the residual stream (embedding + Σ branches, role ``stream``). Slopes against log2 depth:
under the depth rules every layer, the stream and Δf are flat, and a block's contribution shrinks as L^-α (its
``expected`` slope, :func:`expected_slopes`; its own update's part is Θ(1/L) whatever α: L blocks of it, coherent,
move the stream by Θ(1)).

``coord.blocks_only`` (over depth): the embedding, the readout and the final norm are not trained (lr 0), so that the
stream and Δf carry the blocks' updates alone — what the depth rules govern; as the independent prototype did
(../shared/PARAMETERIZATION.md §7). Otherwise their own, depth-free updates add a Θ(1) part to both, behind which a
block update that shrinks with depth (SGD without its rule) does not show.

``coord.fresh_batches``: each step on a new batch (steps t = 1, 2, … on batches 0, 1, …), Δh still measured on the
first: what training sees, where the fixed batch shows the first steps on one set of gradients (SOAP's steady
state, docs/parameterization.md).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from . import data as data_mod
from . import optim
from .models import at_depth, depth_of, parse_depths
from .parametrize import LAYER_TYPES, DepthMultiplier, Plan, WidthMultiplier
from .plots import pyplot, save
from .errors import UsageError, check_bool, check_positive, parse_widths, raise_all
from .losses import LOSSES
from .setup import build_model_and_plan, check_size, resolve_device

COLUMNS = ["width", "depth", "layer", "role", "step", "metric", "value"]
# Over depth, the residual stream h_L = embedding + Σ_l branch_l (layer STREAM, role ``stream``): the outputs of the
# input-role layers of the branches' shape plus every branch (exactly h_L in a pre-norm model such as the residual MLP
# and the GPT). Θ(1) under the rules: the blocks' own updates add up coherently (L × L⁻¹), while what the embedding's
# change does to each block (a random Jacobian per block) averages out as L^-½. Δf also carries the readout's own
# update, which depth leaves alone.
STREAM = "stream"
MIN_FIT_WIDTHS = 3
NOT_OBSERVED = "not observed"


def _roles(model: nn.Module, plan: Plan) -> dict[str, str]:
    """{module name: role} of the modules measured: Linear/Conv2d layers (their weight's role), embeddings (input:
    their output is the first features, also when the weight is a tied readout's) and forward multipliers (their
    kind)."""
    specs = {id(p): plan.specs[n] for n, p in model.named_parameters() if n in plan.specs}
    roles = {name: "input" if isinstance(m, nn.Embedding) else specs[id(m.weight)].role
             for name, m in model.named_modules()
             if isinstance(m, (*LAYER_TYPES, nn.Embedding)) and id(m.weight) in specs}
    roles.update({name: m.kind for name, m in model.named_modules() if isinstance(m, (WidthMultiplier, DepthMultiplier))})
    return roles


def _layer_outputs(model: nn.Module, x: torch.Tensor, names) -> dict[str, torch.Tensor]:
    """Outputs of the modules ``names`` of ``model`` on ``x`` (no grad)."""
    captured: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda mod, inp, out, name=name: captured.__setitem__(name, out.detach()))
               for name, m in model.named_modules() if name in names]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return captured


def unobserved(model: nn.Module, plan: Plan, fired: set[str]) -> list[dict]:
    """Rows (layer: the parameter, role, why) for each matrix with a role (input, hidden, output: ≥ 2 dimensions)
    whose output the check does not see: no hooked module holds it, or the module's forward never ran (``fired``:
    the modules whose hooks fired on a forward pass)."""
    roles = _roles(model, plan)
    holders: dict[int, list[tuple[str, nn.Module]]] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            holders.setdefault(id(p), []).append((name, module))
    out = []
    for name, p in model.named_parameters():
        spec = plan.specs.get(name)
        if spec is None or len(spec.shape) < 2 or spec.role == "fixed":
            continue
        held = holders.get(id(p), [])
        if any(n in fired for n, _ in held):
            continue
        hooked = [n for n, _ in held if n in roles]
        why = (f"the forward of {hooked[0]} never ran (its weight is read directly by the module around it)" if hooked
               else f"held by {', '.join(sorted({type(m).__name__ for _, m in held}))}, read directly (the check "
                    "hooks the outputs of Linear, Conv2d and Embedding layers)")
        out.append(dict(layer=name, role=spec.role, why=why))
    return out


def _rms(t: torch.Tensor) -> float:
    return t.double().pow(2).mean().sqrt().item()


def measure_width(cfg: DictConfig, width: int, steps: int, batches: list[tuple[torch.Tensor, torch.Tensor]],
                  input_shape, num_classes: int, device, depth: int | None = None) -> list[dict]:
    """Rows (width, depth, layer, role, step, metric ∈ {h, dh}, value) for one width (and depth: None for the model's
    own) and the seed in cfg. Step t trains on batches[(t − 1) mod len(batches)]; h and Δh are measured on
    batches[0]. Over depth, a layer inside the blocks is one row per block pattern (``blocks.*.fc1``), the mean over
    its blocks."""
    torch.manual_seed(int(cfg.seed))
    if depth is not None:
        cfg = OmegaConf.merge(cfg, {"model": at_depth(cfg.model, depth)})
    model, plan = build_model_and_plan(cfg, input_shape, num_classes, width, device)
    roles = _roles(model, plan)
    pattern = _block_patterns(roles, plan) if depth is not None else {n: n for n in roles}
    branches = [n for n, r in roles.items() if r == DepthMultiplier.kind] if depth is not None else []
    optimizer = optim.build(cfg.optimizer, model, plan, cfg.train.loss)
    if depth is not None and cfg.coord.get("blocks_only", False):
        _freeze_outside_blocks(optimizer, plan)
    loss_fn = LOSSES[cfg.train.loss].value
    model.train()
    x0 = batches[0][0]

    def outputs() -> dict[str, torch.Tensor]:
        out = _layer_outputs(model, x0, roles)
        if branches:
            shape = out[branches[0]].shape
            embedded = [out[n] for n, r in roles.items() if r == "input" and n in out
                        and torch.broadcast_shapes(out[n].shape, shape) == shape]
            out[STREAM] = sum(embedded, torch.stack([out[n] for n in branches]).sum(0))
        return out

    h0 = outputs()
    measured: list[dict] = [dict(layer=n, step=0, metric="h", value=_rms(h)) for n, h in h0.items()]
    for step in range(1, steps + 1):
        x, y = batches[(step - 1) % len(batches)]
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, h in outputs().items():
            measured.append(dict(layer=name, step=step, metric="h", value=_rms(h)))
            measured.append(dict(layer=name, step=step, metric="dh", value=_rms(h - h0[name])))
    roles, pattern = {**roles, STREAM: "stream"}, {**pattern, STREAM: STREAM}
    rows = pd.DataFrame(measured).assign(role=lambda d: d.layer.map(roles), layer=lambda d: d.layer.map(pattern))
    rows = rows.groupby(["layer", "role", "step", "metric"], as_index=False, sort=False)["value"].mean()
    return rows.assign(width=width, depth=depth if depth is not None else depth_of(cfg.model)).to_dict("records")


def _freeze_outside_blocks(optimizer, plan: Plan) -> None:
    """coord.blocks_only: lr 0 for every param group outside the residual blocks (embedding, readout, final norm),
    so that the stream and Δf move by the blocks' updates alone, which the depth rules govern; the embedding's and
    the readout's own updates do not depend on depth and would otherwise dominate them (a block's shrinking update
    hides behind them)."""
    for group in optimizer.param_groups:
        if all(plan.depth.block_of(name) is None for name in group.get("param_names", [])):
            group["lr"] = 0.0


def _block_patterns(roles: dict[str, str], plan: Plan) -> dict[str, str]:
    """{module name: its name with the block index as ``*``} (``blocks.3.fc1`` → ``blocks.*.fc1``; unchanged outside
    the blocks)."""
    out = {}
    for name in roles:
        where = plan.depth.block_of(name) if plan.depth is not None else None
        if where is None:
            out[name] = name
        else:
            container, index = where
            prefix = f"{container}." if container else ""
            out[name] = prefix + "*" + name[len(prefix) + len(str(index)):]
    return out


def measure(cfg: DictConfig, widths=None, steps: int | None = None, depths=None) -> pd.DataFrame:
    """Long table (width, depth, layer, role, step, metric, value) over ``widths`` (default cfg.coord.widths) or,
    with ``depths`` (default cfg.coord.depths when set), over depths at the width model.width.

    With coord.seeds > 1 each value is the mean over seeds seed, seed+1, ... (same batches).
    """
    depths = cfg.coord.get("depths") if depths is None else depths
    if depths is not None:
        points = [(int(cfg.model.width), int(d)) for d in depths]
    else:
        points = [(int(w), None) for w in (cfg.coord.widths if widths is None else widths)]
    steps = int(cfg.coord.steps if steps is None else steps)
    device = resolve_device(cfg.device)
    data = data_mod.load(cfg.data, device)
    batches = _batches(data, int(cfg.coord.batch_size), steps if cfg.coord.get("fresh_batches", False) else 1)
    rows = []
    for seed in range(int(cfg.seed), int(cfg.seed) + int(cfg.coord.seeds)):
        seeded = OmegaConf.merge(cfg, {"seed": seed})
        for width, depth in points:
            rows += measure_width(seeded, width, steps, batches, data.input_shape, data.num_classes, device, depth)
    df = pd.DataFrame(rows, columns=COLUMNS)
    keys = ["width", "depth", "layer", "role", "step", "metric"]
    return df.groupby(keys, as_index=False, sort=False, dropna=False)["value"].mean()


def _batches(data, size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` consecutive batches of ``size`` from the training set (fewer when it runs out)."""
    n = min(count, max(1, len(data.x_train) // size))
    return [(data.x_train[i * size:(i + 1) * size], data.y_train[i * size:(i + 1) * size]) for i in range(n)]


def scale_of(df: pd.DataFrame) -> str:
    """The axis a measurement varies: ``depth`` when it holds several depths, else ``width`` (also for a frame with
    no depth column, as measurements made before depth existed)."""
    return "depth" if "depth" in df and df["depth"].nunique(dropna=True) > 1 else "width"


def _slope(widths: np.ndarray, values: np.ndarray) -> float:
    ok = values > 0
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log2(widths[ok]), np.log2(values[ok]), 1)[0])


def expected_slopes(cfg: DictConfig) -> dict[str, float]:
    """{role: the slope of its Δh the rules predict} where it is not 0: over depth, a block's contribution to the
    residual stream (its branch multiplier's output) moves by Θ(L^-α) — its own update's Θ(1/L) plus what the changed
    stream does through the block, a·Θ(1) — while the stream, Δf and every layer stay flat."""
    if cfg.coord.get("depths") is None:
        return {}
    return {DepthMultiplier.kind: -float(cfg.param.get("depth_alpha", 0.0))}


def slopes(df: pd.DataFrame, fit_from: float, scale: str | None = None,
           expected: dict[str, float] | None = None) -> pd.DataFrame:
    """Per (layer, role, metric, step): slope of log2(value) vs log2(``scale``) (width, or depth: default the axis
    ``df`` varies) over values ≥ fit_from (``slope``) and over all (``slope_all``), and the slope of Δh the rules
    predict (``expected``: ``expected[role]``, default 0; :func:`expected_slopes`)."""
    scale = scale or scale_of(df)
    out = []
    for (layer, role, metric, step), g in df.groupby(["layer", "role", "metric", "step"], sort=False):
        g = g.sort_values(scale)
        w, v = g[scale].to_numpy(float), g["value"].to_numpy(float)
        fit = w >= fit_from
        expected_slope = (expected or {}).get(role, 0.0) if metric == "dh" else 0.0
        out.append(dict(layer=layer, role=role, metric=metric, step=step, slope=_slope(w[fit], v[fit]),
                        slope_all=_slope(w, v), expected=expected_slope))
    return pd.DataFrame(out)


def verdicts(slope_df: pd.DataFrame, tolerance: float, step: int | None = None) -> pd.DataFrame:
    """Verdict per layer on Δh at ``step`` (default: the last), on the slope less its expected value (a column where
    some layer expects a slope other than 0, as a block's contribution over depth): flat (as the
    rules predict) | grows | shrinks."""
    dh = slope_df[slope_df.metric == "dh"]
    step = int(dh.step.max()) if step is None else step
    dh = dh[dh.step == step].copy()
    off = dh.slope - dh.get("expected", 0.0)
    dh["verdict"] = np.select([off.abs() <= tolerance, off > 0], ["flat", "grows"], "shrinks")
    shown = "expected" in dh and (dh["expected"] != 0).any()  # a check over width expects 0 everywhere: not shown
    columns = ["layer", "role", "step", "slope", "slope_all", *(["expected"] if shown else []), "verdict"]
    return dh[columns].reset_index(drop=True)


def plot(df: pd.DataFrame, path: Path, title: str, fit_from: float | None = None) -> None:
    """One panel per step: RMS Δh (Δf for the readout) against width (or depth), log–log, a line per layer."""
    plt = pyplot()
    scale = scale_of(df)
    dh = df[df.metric == "dh"]
    steps = sorted(dh.step.unique())
    fig, axes = plt.subplots(1, len(steps), figsize=(3.6 * len(steps), 3.3), squeeze=False, sharey=True)
    for ax, step in zip(axes[0], steps):
        for layer, g in dh[dh.step == step].groupby("layer", sort=False):
            g = g.sort_values(scale)
            label = f"{layer} ({g.role.iloc[0]})"
            ax.plot(g[scale], g.value, marker="o", ms=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        if fit_from:
            ax.axvline(fit_from, color="grey", lw=0.8, ls=":")
        ax.set_title(f"step {step}")
        ax.set_xlabel(scale)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("RMS Δh (readout: Δf)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def parse_coord(cfg: DictConfig, *, yes: bool = False) -> list[int]:
    """The coordinate check's keys (``coord.*``); returns the widths (the depths, with coord.depths), or raises
    UsageError naming the key: widths (depths) from the base width (depth) up, MIN_FIT_WIDTHS of them from
    coord.fit_from, and the widest (deepest) within the size limit (muso_cli.setup.check_size) unless ``yes``."""
    c = cfg.coord
    depths = c.get("depths")
    if depths is not None:
        values = parse_depths("coord.depths", depths, cfg.model)
        if len(set(values)) < 2:
            raise UsageError("coord.depths", f"needs at least 2 different depths, got {values}.",
                             "e.g. coord.depths=[2,4,8,16,32].")
    else:
        values = parse_widths("coord.widths", c.widths, cfg.model.base_width, at_least=2)
    raise_all([*(check_positive(f"coord.{key}", c[key], integer=True) for key in ("steps", "batch_size", "seeds")),
               check_positive("coord.tolerance", c.tolerance),
               check_positive("coord.fit_from", c.fit_from, optional=True),
               check_bool("coord.fresh_batches", c.get("fresh_batches", False)),
               check_bool("coord.blocks_only", c.get("blocks_only", False))])
    if c.get("blocks_only", False) and depths is None:
        raise UsageError("coord.blocks_only", "trains the residual blocks alone, which only a check over depth "
                         "measures.", "add coord.depths=[...] (a model with depth), or leave coord.blocks_only=false.")
    fit_from = fit_from_width(cfg)
    fitted = sorted({w for w in values if w >= fit_from})
    what = "depth" if depths is not None else "width"
    if len(fitted) < MIN_FIT_WIDTHS:
        key = f"coord.{what}s"
        wider = [max(values) * 2 ** k for k in range(1, MIN_FIT_WIDTHS - len(fitted) + 1)]
        raise UsageError("coord.fit_from", f"leaves {len(fitted)} {what}(s) ≥ {fit_from:g} to fit slopes ({what}s "
                         f"{values}); a slope needs {MIN_FIT_WIDTHS} (through two it cannot tell noise from a trend).",
                         f"add larger {what}s (e.g. {key}=[{','.join(map(str, sorted(set(values)) + wider))}]), "
                         f"or set coord.fit_from to a smaller {what}.")
    if depths is not None:
        deep = OmegaConf.merge(cfg, {"model": at_depth(cfg.model, max(values))})
        raise_all([check_size(deep, int(cfg.model.width), "coord.depths", yes=yes)])
    else:
        raise_all([check_size(cfg, max(values), "coord.widths", yes=yes)])
    return values


def fit_from_width(cfg: DictConfig) -> float:
    """The smallest width (depth, over coord.depths) in the slope fit: coord.fit_from, by default 4 × the base width
    (4 × the base depth: below it the embedding's change, passed through each block's random Jacobian, still adds
    to the stream a part that averages out as L^-½)."""
    if cfg.coord.fit_from:
        return float(cfg.coord.fit_from)
    return float(4 * (cfg.model.base_depth if cfg.coord.get("depths") is not None else cfg.model.base_width))


def unobserved_layers(cfg: DictConfig) -> list[dict]:
    """:func:`unobserved` for the model at the smallest width of coord.widths, on one batch of the data."""
    device = resolve_device(cfg.device)
    data = data_mod.load(cfg.data, device)
    depths = cfg.coord.get("depths")
    if depths is not None:
        cfg = OmegaConf.merge(cfg, {"model": at_depth(cfg.model, min(depths))})
    width = int(cfg.model.width) if depths is not None else min(cfg.coord.widths)
    model, plan = build_model_and_plan(cfg, data.input_shape, data.num_classes, width, device)
    fired = _layer_outputs(model, data.x_train[:cfg.coord.batch_size], _roles(model, plan))
    return unobserved(model, plan, set(fired))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Measure, fit, plot and write coord.csv, slopes.csv, verdict.csv (one row per observed layer, then one of
    verdict "not observed" per parameter it cannot observe) and coord.png into ``out_dir``. An output that cannot be
    written is a UsageError naming coord.out."""
    out_dir = Path(out_dir)
    df = measure(cfg)
    fit_from = fit_from_width(cfg)
    slope_df = slopes(df, fit_from, expected=expected_slopes(cfg))
    verdict_df = verdicts(slope_df, cfg.coord.tolerance)
    missed = unobserved_layers(cfg)
    if missed:
        step = int(verdict_df.step.max()) if len(verdict_df) else int(cfg.coord.steps)
        verdict_df = pd.concat([verdict_df, pd.DataFrame([dict(layer=r["layer"], role=r["role"], step=step,
                                                                slope=math.nan, slope_all=math.nan,
                                                                verdict=NOT_OBSERVED) for r in missed])],
                               ignore_index=True)
    base = (f"width {cfg.model.width}, α={cfg.param.get('depth_alpha', 0):g}, base depth {cfg.model.base_depth}"
            if cfg.coord.get("depths") is not None else f"base width {cfg.model.base_width}")
    title = f"{cfg.model.name} · {cfg.optimizer.name} lr={cfg.optimizer.lr} · param={cfg.param.name} · {base}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        df.to_csv(out_dir / "coord.csv", index=False)
        slope_df.to_csv(out_dir / "slopes.csv", index=False)
        verdict_df.to_csv(out_dir / "verdict.csv", index=False)
        plot(df, out_dir / "coord.png", title, fit_from)
        with open_dict(cfg):
            cfg.coord.out = str(out_dir)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    except OSError as e:
        raise UsageError("coord.out", f"{e.filename or out_dir} cannot be written: {e.strerror or e}.",
                         "free space on its disk, or give coord.out a folder you can write to.") from None
    return {"measurements": df, "slopes": slope_df, "verdicts": verdict_df, "fit_from": fit_from, "out": out_dir,
            "unobserved": missed}
