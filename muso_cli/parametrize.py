"""Parameterizations for width transfer: SP, µP and second-order µP (Ishikawa & Karakida, ICLR 2024).

A pure core: it knows nothing of the CLI, logging or launchers, and works on any model made of
``nn.Linear`` / ``nn.Conv2d`` layers (with biases), norm layers, embeddings and tied weights.

Three calls::

    from muso_cli import parametrize
    with torch.device("meta"):                      # free: shapes only
        base = make_model(width=64)                 # the same architecture at the base width
        delta = make_model(width=128)               # any other width: says which dimensions scale
    model = make_model(width=1024)
    plan = parametrize.make_plan(model, base, param="somup", optimizer="kfac", delta=delta)
    plan.init_(model)                               # N(0, (σ·k/√fan_in)²) per layer
    opt = KFAC(model, plan.param_groups(model, lr=0.1), damping=1e-3, damping_rule=plan.damping_rule)

Roles come from shapes alone (never from module names), as in microsoft/mup's ``set_base_shapes``: a weight
whose fan-in and fan-out both differ between the base model and a *delta* model (the same architecture at
another width) is *hidden*, one whose fan-out alone differs is *input*, fan-in alone *output*; a 1-D tensor
that differs is a *vector*; nothing differs: *fixed* (treated as SP). Without a delta model the target model
plays its part, which cannot tell roles apart when the target has the base width. The width multiplier ``m``
is target size / base size of the scaling dimension.
Every multiplier is ``m ** exponent`` with exponents from the tables below, so at ``m = 1`` all
parameterizations coincide (except for the damping rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
import torch
from torch import nn

ROLES = ("input", "hidden", "output", "vector", "fixed")
PARAMS = ("sp", "mup", "somup")
OPTIMIZERS = ("sgd", "adam", "kfac", "shampoo")
SECOND_ORDER = ("kfac", "shampoo")
DAMPING_RULES = {
    "kfac": ("constant", "somup", "trace", "pi"),
    "shampoo": ("constant", "somup", "relative"),
}
# Rules whose value the optimizer computes from the curvature factors at run time (multiplier 1 here).
ADAPTIVE_RULES = ("trace", "pi", "relative")

# ------------------------------------------------------------------------------------------------------
# The table (../shared/PARAMETERIZATION.md §3). Every entry is an exponent e of the width multiplier m:
# the multiplier is m**e relative to the base width. One place; nothing else in muso encodes a scaling.

_Z = {"input": 0.0, "hidden": 0.0, "output": 0.0, "vector": 0.0, "fixed": 0.0}


def _row(input: float, hidden: float, output: float, vector: float = 0.0) -> dict[str, float]:
    return {"input": input, "hidden": hidden, "output": output, "vector": vector, "fixed": 0.0}


# Init: W ~ N(0, (σ·k/√fan_in)²) with k = m**INIT[param][role]. µP's readout std shrinks as 1/width.
INIT: dict[str, dict[str, float]] = {
    "sp": _Z,
    "mup": _row(0, 0, -0.5),
    "somup": _row(0, 0, -0.5),
}

# Learning rate: η_layer = η · m**LR[param][optimizer][role]. A string entry points at another cell.
# "preconditioned" is second-order µP's rule for a preconditioner of total inverse power p
# (K-FAC: p = 1; Shampoo with exponent e per side: p = 2e): exponent (1 − p)·(g_out − g_in), where g_in/g_out
# say whether fan-in/fan-out grow (GROWS below). K-FAC's lr is width-free; Shampoo's (e = 1/4) is
# m^1/2 / 1 / m^-1/2 for input / hidden / output.
LR: dict[str, dict[str, dict[str, float] | str]] = {
    "sp": {"sgd": _Z, "adam": _Z, "kfac": _Z, "shampoo": _Z},
    "mup": {
        "sgd": _row(1, 0, -1, vector=1),
        "adam": _row(0, -1, -1, vector=0),
        "kfac": "mup.sgd",      # the naive practice: first-order (SGD) µP rules on a second-order optimizer
        "shampoo": "mup.sgd",
    },
    "somup": {
        "sgd": "mup.sgd",
        "adam": "mup.adam",
        "kfac": "preconditioned",
        "shampoo": "preconditioned",
    },
}
GROWS: dict[str, tuple[int, int]] = {"input": (0, 1), "hidden": (1, 1), "output": (1, 0)}  # (g_in, g_out)

# Damping: the value used for a layer's factor F is ρ · m**DAMPING[optimizer][rule][F][role].
# K-FAC factors: A = E[x xᵀ] (layer inputs), B = E[δ δᵀ] (output gradients); their nonzero eigenvalues under
# µP are Θ(|x|²) = Θ(1) / Θ(M) / Θ(M) and Θ(|δ|²) = Θ(1/M) / Θ(1/M) / Θ(1) for input / hidden / output.
# Shampoo: L and R share the nonzero eigenvalue |x|²|δ|² = Θ(1/M) / Θ(1) / Θ(M).
DAMPING: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "kfac": {
        "constant": {"A": _Z, "B": _Z},
        "somup": {"A": _row(0, 1, 1), "B": _row(-1, -1, 0)},
        "trace": {"A": _Z, "B": _Z},   # ρ·tr(A), ρ·tr(B): adapts per layer at run time
        "pi": {"A": _Z, "B": _Z},      # Martens–Grosse factored damping: √ρ·π, √ρ/π at run time
    },
    "shampoo": {
        "constant": {"eps": _Z},
        "somup": {"eps": _row(-1, 0, 1)},
        "relative": {"eps": _Z},       # ε·λ_max of each factor: width-free by construction
    },
}
# damping_rule=auto picks, per optimizer and parameterization:
DEFAULT_DAMPING_RULE: dict[str, dict[str, str]] = {
    "kfac": {"sp": "constant", "mup": "constant", "somup": "somup"},
    "shampoo": {"sp": "relative", "mup": "relative", "somup": "relative"},
}
DEFAULT_POWER = {"kfac": 1.0, "shampoo": 0.5}  # total inverse power p of the preconditioner


def lr_exponent(param: str, optimizer: str, role: str, power: float | None = None) -> float:
    """Exponent e of the lr multiplier m**e for a parameter of ``role``.

    ``power`` is the preconditioner's total inverse power (K-FAC 1, Shampoo 2·exponent); it only matters for
    second-order µP with K-FAC / Shampoo.
    """
    cell: dict[str, float] | str = LR[param][optimizer]
    while isinstance(cell, str) and cell != "preconditioned":
        p, o = cell.split(".")
        cell = LR[p][o]
    if cell == "preconditioned":
        if role not in GROWS:
            return 0.0
        g_in, g_out = GROWS[role]
        p = DEFAULT_POWER[optimizer] if power is None else power
        return (1.0 - p) * (g_out - g_in)
    return cell[role]


def resolve_damping_rule(optimizer: str, param: str, rule: str = "auto") -> str | None:
    """The damping rule in effect (None for first-order optimizers)."""
    if optimizer not in SECOND_ORDER:
        return None
    if rule == "auto":
        return DEFAULT_DAMPING_RULE[optimizer][param]
    if rule not in DAMPING_RULES[optimizer]:
        raise ValueError(f"unknown damping rule {rule!r} for {optimizer}; use one of "
                         f"{', '.join(DAMPING_RULES[optimizer])} or auto")
    return rule


# ------------------------------------------------------------------------------------------------------
# Roles from shapes.

@dataclass(frozen=True)
class ParamSpec:
    """A parameter's place in the width scaling.

    shape / base_shape: the tensor's shape in the target and the base model.
    role: input | hidden | output | vector | fixed.
    width_mult: m = target / base size of the growing dimension (1.0 when fixed).
    fan_in: inputs per output unit in the target model (in_features · kernel area; 1 for an embedding).
    layer: the name of the Linear/Conv2d module whose weight or bias this is (None otherwise).
    """

    name: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    role: str
    width_mult: float
    fan_in: int
    layer: str | None = None
    is_bias: bool = False


LAYER_TYPES = (nn.Linear, nn.Conv2d)


def _layout(module: nn.Module | None) -> str:
    """'in_first' for embeddings (weight is [num_embeddings, dim]: fan-in first), else 'out_first'."""
    return "in_first" if isinstance(module, nn.Embedding) else "out_first"


def _owners(model: nn.Module) -> dict[int, list[tuple[str, nn.Module, str]]]:
    """id(param) → [(module name, module, attribute)] for every module that holds it (tied weights: several)."""
    owners: dict[int, list[tuple[str, nn.Module, str]]] = {}
    for mname, module in model.named_modules():
        for attr, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), []).append((mname, module, attr))
    return owners


def infer_roles(model: nn.Module, base: nn.Module, delta: nn.Module | None = None) -> dict[str, ParamSpec]:
    """Role and width multiplier of every parameter of ``model`` by comparing shapes.

    ``base`` is the same architecture at the base width and ``delta`` at any other width (build both on the
    meta device: they cost nothing); the dimensions that differ between them are the ones that scale with
    width. Without ``delta``, ``model`` is compared with ``base`` (ambiguous when it has the base width).
    Tied parameters appear once (under their first name); a weight shared by an embedding and a Linear
    readout is treated as the readout.
    """
    base_shapes = {n: tuple(p.shape) for n, p in base.named_parameters()}
    delta_shapes = {n: tuple(p.shape) for n, p in (delta or model).named_parameters()}
    owners = _owners(model)
    specs: dict[str, ParamSpec] = {}
    for name, p in model.named_parameters():
        if name not in base_shapes or name not in delta_shapes:
            raise ValueError(f"parameter {name!r} is in the model but not in the base (or delta) model: build "
                             f"them with the same architecture (only the width differs)")
        shape, bshape, dshape = tuple(p.shape), base_shapes[name], delta_shapes[name]
        if not len(shape) == len(bshape) == len(dshape):
            raise ValueError(f"parameter {name!r} has shape {shape} but {bshape} in the base model")
        held = owners.get(id(p), [])
        layer_owner = next(((n, m, a) for n, m, a in held if isinstance(m, LAYER_TYPES)), None)
        owner = layer_owner or (held[0] if held else None)
        module = owner[1] if owner else None
        role, mult, fan_in = _classify(name, shape, bshape, dshape, _layout(module))
        specs[name] = ParamSpec(name=name, shape=shape, base_shape=bshape, role=role, width_mult=mult,
                                fan_in=fan_in, layer=layer_owner[0] if layer_owner else None,
                                is_bias=bool(layer_owner and layer_owner[2] == "bias"))
    return specs


def _classify(name: str, shape: tuple[int, ...], bshape: tuple[int, ...], dshape: tuple[int, ...],
              layout: str) -> tuple[str, float, int]:
    if len(shape) <= 1:
        if dshape == bshape:
            return "fixed", 1.0, 1
        return "vector", shape[0] / bshape[0], 1
    if shape[2:] != bshape[2:] or dshape[2:] != bshape[2:]:
        raise ValueError(f"parameter {name!r}: only the first two dimensions may change with width, got "
                         f"{shape} vs base {bshape}")
    d_out, d_in = (1, 0) if layout == "in_first" else (0, 1)
    g_out, g_in = dshape[d_out] != bshape[d_out], dshape[d_in] != bshape[d_in]
    fan_in = 1 if layout == "in_first" else shape[1] * math.prod(shape[2:])
    if g_in and g_out:
        return "hidden", shape[d_in] / bshape[d_in], fan_in
    if g_out:
        return "input", shape[d_out] / bshape[d_out], fan_in
    if g_in:
        return "output", shape[d_in] / bshape[d_in], fan_in
    return "fixed", 1.0, fan_in


# ------------------------------------------------------------------------------------------------------
# The plan: everything the parameterization decides for one model.

@dataclass
class Plan:
    """Per-parameter init, lr and damping multipliers of a parameterization applied to one model.

    Multipliers are relative to the base width (all 1 at m = 1, except adaptive damping rules).
    init_std[name]: the init standard deviation (absolute; 0.0 for a zero-initialised readout; None: the
    module's own init, e.g. norm gains). damping_mult[layer]: {"A", "B"} for K-FAC, {"eps"} for Shampoo.
    """

    param: str
    optimizer: str
    damping_rule: str | None
    sigma: float
    readout_zero_init: bool
    specs: dict[str, ParamSpec]
    lr_mult: dict[str, float]
    init_std: dict[str, float | None]
    damping_mult: dict[str, dict[str, float]] = field(default_factory=dict)

    def init_(self, model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
        """Initialise ``model`` in place: weights N(0, init_std²), Linear/Conv biases 0, others untouched."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, spec in self.specs.items():
                p, std = params[name], self.init_std[name]
                if std is None:
                    continue
                if std == 0.0:
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype, device="cpu")
                            .mul_(std).to(p.device))
        return model

    def param_groups(self, model: nn.Module, lr: float, **options) -> list[dict]:
        """torch param groups carrying each layer's lr (``lr`` × multiplier) and damping multipliers.

        First-order optimizers: one group per parameter. K-FAC / Shampoo: one group per Linear/Conv2d layer
        (weight and bias together: the bias is preconditioned with its weight, the input augmented by a
        constant) with keys ``layer``, ``damping_A``/``damping_B`` or ``damping_eps``; other parameters one
        group each (the optimizer updates them like SGD with their own lr multiplier). ``options`` are copied
        into every group.
        """
        params = dict(model.named_parameters())
        groups: list[dict] = []
        by_layer: dict[str, list[str]] = {}
        for name, spec in self.specs.items():
            if self.optimizer in SECOND_ORDER and spec.layer is not None:
                by_layer.setdefault(spec.layer, []).append(name)
            else:
                groups.append({"params": [params[name]], "lr": lr * self.lr_mult[name], "names": [name],
                               "role": spec.role, **options})
        for layer, names in by_layer.items():
            weight = next(n for n in names if not self.specs[n].is_bias)
            names.sort(key=lambda n: self.specs[n].is_bias)  # weight first, then bias
            groups.append({"params": [params[n] for n in names], "lr": lr * self.lr_mult[weight],
                           "names": names, "role": self.specs[weight].role, "layer": layer,
                           **{f"damping_{k}": v for k, v in self.damping_mult[layer].items()}, **options})
        return groups

    def rows(self) -> list[dict]:
        """One row per parameter, for `muso params`: name, shape, role, m, init std, lr and damping mults."""
        out = []
        for name, s in self.specs.items():
            row = {"name": name, "shape": list(s.shape), "role": s.role, "width_mult": s.width_mult,
                   "init_std": self.init_std[name], "lr_mult": self.lr_mult[name]}
            if self.optimizer in SECOND_ORDER:
                damping = self.damping_mult.get(s.layer or "", {}) if not s.is_bias else {}
                row["damping_rule"] = self.damping_rule
                for k in DAMPING[self.optimizer][self.damping_rule]:
                    row[f"damping_{k}_mult"] = damping.get(k)
            out.append(row)
        return out


def make_plan(model: nn.Module, base: nn.Module, param: str, optimizer: str, *, delta: nn.Module | None = None,
              damping_rule: str = "auto", sigma: float = 1.0, readout_zero_init: bool = False,
              power: float | None = None) -> Plan:
    """Apply the table to ``model`` given the base-width ``base`` and a ``delta`` model (see infer_roles).

    param: sp | mup | somup. optimizer: sgd | adam | kfac | shampoo. damping_rule: auto | constant | somup |
    trace | pi (K-FAC) or relative (Shampoo). sigma: init std × √fan_in. power: the preconditioner's total inverse
    power (Shampoo: 2 × exponent; default 1 for K-FAC, 1/2 for Shampoo).
    """
    if param not in PARAMS:
        raise ValueError(f"unknown parameterization {param!r}; use one of {', '.join(PARAMS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    rule = resolve_damping_rule(optimizer, param, damping_rule)
    specs = infer_roles(model, base, delta)
    lr_mult, init_std, damping = {}, {}, {}
    for name, s in specs.items():
        m = s.width_mult
        lr_mult[name] = m ** lr_exponent(param, optimizer, s.role, power)
        if len(s.shape) >= 2:
            zero = readout_zero_init and s.role == "output"
            init_std[name] = 0.0 if zero else sigma * m ** INIT[param][s.role] / math.sqrt(s.fan_in)
        else:
            init_std[name] = 0.0 if s.is_bias else None
        if rule is not None and s.layer is not None and not s.is_bias:
            damping[s.layer] = {k: m ** exps[s.role] for k, exps in DAMPING[optimizer][rule].items()}
    return Plan(param=param, optimizer=optimizer, damping_rule=rule, sigma=sigma,
                readout_zero_init=readout_zero_init, specs=specs, lr_mult=lr_mult, init_std=init_std,
                damping_mult=damping)

