"""Coordinate check: does each layer's feature update stay Θ(1) as the width grows?

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
from .parametrize import LAYER_TYPES, Plan, WidthMultiplier
from .plots import pyplot, save
from .errors import UsageError, check_positive, parse_widths, raise_all
from .losses import LOSSES
from .setup import build_model_and_plan, check_size, resolve_device

COLUMNS = ["width", "layer", "role", "step", "metric", "value"]
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
    roles.update({name: m.kind for name, m in model.named_modules() if isinstance(m, WidthMultiplier)})
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


def measure_width(cfg: DictConfig, width: int, steps: int, x: torch.Tensor, y: torch.Tensor,
                  input_shape, num_classes: int, device) -> list[dict]:
    """Rows (width, layer, role, step, metric ∈ {h, dh}, value) for one width and the seed in cfg."""
    torch.manual_seed(int(cfg.seed))
    model, plan = build_model_and_plan(cfg, input_shape, num_classes, width, device)
    roles = _roles(model, plan)
    optimizer = optim.build(cfg.optimizer, model, plan, cfg.train.loss)
    loss_fn = LOSSES[cfg.train.loss].value
    model.train()
    h0 = _layer_outputs(model, x, roles)
    rows = [dict(width=width, layer=n, role=roles[n], step=0, metric="h", value=_rms(h)) for n, h in h0.items()]
    for step in range(1, steps + 1):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for name, h in _layer_outputs(model, x, roles).items():
            rows.append(dict(width=width, layer=name, role=roles[name], step=step, metric="h", value=_rms(h)))
            rows.append(dict(width=width, layer=name, role=roles[name], step=step, metric="dh",
                             value=_rms(h - h0[name])))
    return rows


def measure(cfg: DictConfig, widths=None, steps: int | None = None) -> pd.DataFrame:
    """Long table (width, layer, role, step, metric, value) over ``widths`` (default cfg.coord.widths).

    With coord.seeds > 1 each value is the mean over seeds seed, seed+1, ... (same batch).
    """
    widths = list(cfg.coord.widths if widths is None else widths)
    steps = int(cfg.coord.steps if steps is None else steps)
    device = resolve_device(cfg.device)
    data = data_mod.load(cfg.data, device)
    x, y = data.x_train[:cfg.coord.batch_size], data.y_train[:cfg.coord.batch_size]
    rows = []
    for seed in range(int(cfg.seed), int(cfg.seed) + int(cfg.coord.seeds)):
        seeded = OmegaConf.merge(cfg, {"seed": seed})
        for width in widths:
            rows += measure_width(seeded, int(width), steps, x, y, data.input_shape, data.num_classes, device)
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.groupby(["width", "layer", "role", "step", "metric"], as_index=False, sort=False)["value"].mean()


def _slope(widths: np.ndarray, values: np.ndarray) -> float:
    ok = values > 0
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log2(widths[ok]), np.log2(values[ok]), 1)[0])


def slopes(df: pd.DataFrame, fit_from: float) -> pd.DataFrame:
    """Per (layer, role, metric, step): slope of log2(value) vs log2(width) over widths ≥ fit_from (``slope``)
    and over all widths (``slope_all``)."""
    out = []
    for (layer, role, metric, step), g in df.groupby(["layer", "role", "metric", "step"], sort=False):
        g = g.sort_values("width")
        w, v = g["width"].to_numpy(float), g["value"].to_numpy(float)
        fit = w >= fit_from
        out.append(dict(layer=layer, role=role, metric=metric, step=step, slope=_slope(w[fit], v[fit]),
                        slope_all=_slope(w, v)))
    return pd.DataFrame(out)


def verdicts(slope_df: pd.DataFrame, tolerance: float, step: int | None = None) -> pd.DataFrame:
    """Verdict per layer on Δh at ``step`` (default: the last): flat | grows | shrinks."""
    dh = slope_df[slope_df.metric == "dh"]
    step = int(dh.step.max()) if step is None else step
    dh = dh[dh.step == step].copy()
    dh["verdict"] = np.select([dh.slope.abs() <= tolerance, dh.slope > 0], ["flat", "grows"], "shrinks")
    return dh[["layer", "role", "step", "slope", "slope_all", "verdict"]].reset_index(drop=True)


def plot(df: pd.DataFrame, path: Path, title: str, fit_from: float | None = None) -> None:
    """One panel per step: RMS Δh (Δf for the readout) against width, log–log, a line per layer."""
    plt = pyplot()
    dh = df[df.metric == "dh"]
    steps = sorted(dh.step.unique())
    fig, axes = plt.subplots(1, len(steps), figsize=(3.6 * len(steps), 3.3), squeeze=False, sharey=True)
    for ax, step in zip(axes[0], steps):
        for layer, g in dh[dh.step == step].groupby("layer", sort=False):
            g = g.sort_values("width")
            label = f"{layer} ({g.role.iloc[0]})"
            ax.plot(g.width, g.value, marker="o", ms=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        if fit_from:
            ax.axvline(fit_from, color="grey", lw=0.8, ls=":")
        ax.set_title(f"step {step}")
        ax.set_xlabel("width")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("RMS Δh (readout: Δf)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    save(fig, path)


def parse_coord(cfg: DictConfig, *, yes: bool = False) -> list[int]:
    """The coordinate check's keys (``coord.*``); returns the widths, or raises UsageError naming the key: widths
    from the base width up, MIN_FIT_WIDTHS of them from coord.fit_from, and the widest within the size limit
    (muso_cli.setup.check_size) unless ``yes``."""
    c = cfg.coord
    widths = parse_widths("coord.widths", c.widths, cfg.model.base_width, at_least=2)
    raise_all([*(check_positive(f"coord.{key}", c[key], integer=True) for key in ("steps", "batch_size", "seeds")),
               check_positive("coord.tolerance", c.tolerance),
               check_positive("coord.fit_from", c.fit_from, optional=True)])
    fit_from = fit_from_width(cfg)
    fitted = sorted({w for w in widths if w >= fit_from})
    if len(fitted) < MIN_FIT_WIDTHS:
        wider = [max(widths) * 2 ** k for k in range(1, MIN_FIT_WIDTHS - len(fitted) + 1)]
        raise UsageError("coord.fit_from", f"leaves {len(fitted)} width(s) ≥ {fit_from:g} to fit slopes (widths "
                         f"{widths}); a slope needs {MIN_FIT_WIDTHS} (through two it cannot tell noise from a trend).",
                         f"add wider widths (e.g. coord.widths=[{','.join(map(str, sorted(set(widths)) + wider))}]), "
                         f"or set coord.fit_from to a smaller width.")
    raise_all([check_size(cfg, max(widths), "coord.widths", yes=yes)])
    return widths


def fit_from_width(cfg: DictConfig) -> float:
    return float(cfg.coord.fit_from or 4 * cfg.model.base_width)


def unobserved_layers(cfg: DictConfig) -> list[dict]:
    """:func:`unobserved` for the model at the smallest width of coord.widths, on one batch of the data."""
    device = resolve_device(cfg.device)
    data = data_mod.load(cfg.data, device)
    model, plan = build_model_and_plan(cfg, data.input_shape, data.num_classes, min(cfg.coord.widths), device)
    fired = _layer_outputs(model, data.x_train[:cfg.coord.batch_size], _roles(model, plan))
    return unobserved(model, plan, set(fired))


def run(cfg: DictConfig, out_dir: Path) -> dict:
    """Measure, fit, plot and write coord.csv, slopes.csv, verdict.csv (one row per observed layer, then one of
    verdict "not observed" per parameter it cannot observe) and coord.png into ``out_dir``. An output that cannot be
    written is a UsageError naming coord.out."""
    out_dir = Path(out_dir)
    df = measure(cfg)
    fit_from = fit_from_width(cfg)
    slope_df = slopes(df, fit_from)
    verdict_df = verdicts(slope_df, cfg.coord.tolerance)
    missed = unobserved_layers(cfg)
    if missed:
        step = int(verdict_df.step.max()) if len(verdict_df) else int(cfg.coord.steps)
        verdict_df = pd.concat([verdict_df, pd.DataFrame([dict(layer=r["layer"], role=r["role"], step=step,
                                                                slope=math.nan, slope_all=math.nan,
                                                                verdict=NOT_OBSERVED) for r in missed])],
                               ignore_index=True)
    title = (f"{cfg.model.name} · {cfg.optimizer.name} lr={cfg.optimizer.lr} · param={cfg.param.name} · "
             f"base width {cfg.model.base_width}")
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
