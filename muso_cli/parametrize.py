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
    opt = KFAC(plan.param_groups(model, lr=0.1), model=model, damping=1e-3)  # the plan sets damping_rule

Roles come from shapes alone and residual blocks from structure (:mod:`muso_cli.structure`); the width multiplier
``m`` is target size / base size of the scaling dimension.
Every multiplier is ``m ** exponent`` with exponents from the tables below, so at ``m = 1`` all
parameterizations coincide (except for the damping rule). A width-dependent constant of the forward pass (the
attention logits' scale, a tied embedding's scale) is a :class:`WidthMultiplier` module in the model, whose
value the plan sets from the table too.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
import torch
from torch import nn

from .structure import (LAYER_TYPES, Depth, DepthStructureError, ParamSpec, infer_depth, infer_roles,  # noqa: F401
                        same_shapes)

ROLES = ("input", "hidden", "output", "vector", "fixed")
PARAMS = ("sp", "mup", "somup")

# ------------------------------------------------------------------------------------------------------
# The table (docs/parameterization.md). Every entry is an exponent e of the width multiplier m: the
# multiplier is m**e relative to the base width. One place; nothing else in muso encodes a scaling.

_Z = {"input": 0.0, "hidden": 0.0, "output": 0.0, "vector": 0.0, "fixed": 0.0}


def _row(input: float, hidden: float, output: float, vector: float = 0.0) -> dict[str, float]:
    return {"input": input, "hidden": hidden, "output": output, "vector": vector, "fixed": 0.0}


@dataclass(frozen=True)
class Preconditioned:
    """Second-order µP's lr rule for a preconditioner of total inverse power ``power`` (K-FAC 1; Shampoo with
    exponent e per side 2e): exponent (1 − power)·(g_out − g_in), where g_in / g_out say whether fan-in /
    fan-out grow (GROWS). K-FAC's lr is then width-free; Shampoo's (e = 1/4) is m^½ / 1 / m^-½ for input /
    hidden / output. An optimizer whose power is a hyperparameter (Shampoo's exponent) passes it to make_plan.
    """

    power: float

    def exponent(self, role: str, power: float | None = None) -> float:
        if role not in GROWS:
            return 0.0
        g_in, g_out = GROWS[role]
        return (1.0 - (self.power if power is None else power)) * (g_out - g_in)


GROWS: dict[str, tuple[int, int]] = {"input": (0, 1), "hidden": (1, 1), "output": (1, 0)}  # (g_in, g_out)

# Init: W ~ N(0, (σ·k/√fan_in)²) with k = m**INIT[param][role]. µP's readout std shrinks as 1/width.
INIT: dict[str, dict[str, float]] = {
    "sp": _Z,
    "mup": _row(0, 0, -0.5),
    "somup": _row(0, 0, -0.5),
}

# Learning rate: η_layer = η · m**LR[param][optimizer][role]. A string entry points at another cell. The columns
# of this table are the optimizers muso knows.
LR: dict[str, dict[str, dict[str, float] | str | Preconditioned]] = {
    "sp": {"sgd": _Z, "adam": _Z, "kfac": _Z, "shampoo": _Z, "muon": _Z, "soap": _Z},
    "mup": {
        "sgd": _row(1, 0, -1, vector=1),
        "adam": _row(0, -1, -1, vector=0),
        "kfac": "mup.sgd",      # the naive practice: first-order (SGD) µP rules on a second-order optimizer
        "shampoo": "mup.sgd",
        "muon": "mup.adam",     # the naive practice for the optimizers that replace Adam(W): Adam's µP rules
        "soap": "mup.adam",
    },
    "somup": {
        "sgd": "mup.sgd",
        "adam": "mup.adam",
        "kfac": Preconditioned(1.0),
        "shampoo": Preconditioned(0.5),
        # Muon's update is G's orthogonal factor U Vᵀ = (G Gᵀ)^-¼ G (Gᵀ G)^-¼: Shampoo's form without
        # accumulation, total power ½.
        "muon": Preconditioned(0.5),
        # SOAP in its steady state is Adam in a rotated basis: once the current gradient is no longer diagonal in the
        # eigenbasis of past statistics (a new batch, a moved network, a stale basis), Adam gives each of the
        # d_out·d_in rotated coordinates a Θ(1) step, as Adam does in W's own basis, and the step's effect on h grows
        # with fan-in as Adam's: Adam's µP rules. Only its first step (statistics of G₁ alone: G₁ diagonal in its own
        # eigenbasis) is U Vᵀ, Shampoo-like (docs/parameterization.md, "SOAP's steady state").
        "soap": "mup.adam",
    },
}
OPTIMIZERS = tuple(LR["sp"])

# Grafting (Shampoo's ``grafting``): each layer's step is the preconditioner's direction at the Frobenius norm of
# the grafted optimizer's step, so the step's size, and with it the width scaling of the lr of the input / hidden /
# output weights, is that optimizer's whatever the preconditioner's power (docs/parameterization.md, Grafting).
# GRAFTED[param][grafting]: the cell of LR whose weight entries replace the optimizer's own; vectors keep the
# optimizer's rule. sp and the naive mup practice are unchanged.
GRAFTED: dict[str, dict[str, str]] = {
    "somup": {"sgd": "mup.sgd", "adagrad": "mup.adam", "adam": "mup.adam"},
}

# Optimizers whose update treats a Linear/Conv2d layer's weight and bias as one matrix [W | b] (the bias as an
# extra input column): their param groups are whole layers, and a layer's bias takes its weight's lr.
LAYERWISE = ("kfac", "shampoo", "soap")

# Damping: the value used for a layer's factor F is ρ · m**DAMPING[optimizer][rule][F][role]. The optimizers
# listed here are the *damped* ones. K-FAC factors: A = E[x xᵀ] (layer inputs), B = E[δ δᵀ] (output gradients);
# their nonzero eigenvalues under µP are Θ(|x|²) = Θ(1) / Θ(M) / Θ(M) and Θ(|δ|²) = Θ(1/M) / Θ(1/M) / Θ(1) for
# input / hidden / output. Shampoo: L and R share the nonzero eigenvalue |x|²|δ|² = Θ(1/M) / Θ(1) / Θ(M).
DAMPING: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "kfac": {
        "constant": {"A": _Z, "B": _Z},
        "somup": {"A": _row(0, 1, 1), "B": _row(-1, -1, 0)},
        "trace": {"A": _Z, "B": _Z},   # ρ·tr(A), ρ·tr(B): adapts per layer at run time
        "pi": {"A": _Z, "B": _Z},      # Martens–Grosse factored damping: √ρ·π, √ρ/π at run time
        # ρ_A ∝ fan-in, ρ_B constant: the factors' eigenvalue scales under SP (|x|² = Θ(fan-in), |δ|² = Θ(1)), the SP
        # baseline of the paper's code (classmup's set_damping with dB = 2·b_output − 1 = 0; docs/parameterization.md)
        "fanin": {"A": _row(0, 1, 1), "B": _Z},
    },
    "shampoo": {
        "constant": {"eps": _Z},
        "somup": {"eps": _row(-1, 0, 1)},
        "relative": {"eps": _Z},       # ε·λ_max of each factor: width-free by construction
    },
    # SOAP: Adam's ε, added to √v of the gradient rotated into the eigenbasis of L and R. In the steady state
    # (Adam-like) the rotated gradient spreads ‖G‖_F = |x||δ| over the d_out·d_in coordinates, entries of
    # ‖G‖_F/√(d_out·d_in) = Θ(M⁻¹) / Θ(M⁻¹) / Θ(1): Adam's µP ε.
    "soap": {
        "constant": {"eps": _Z},
        "somup": {"eps": _row(-1, -1, 0)},
        "relative": {"eps": _Z},       # ε·√λ_max(L): G's largest singular value's scale (step 1's entries)
    },
}
DAMPING_RULES = {opt: tuple(rules) for opt, rules in DAMPING.items()}
# Rules whose value the optimizer computes from the curvature factors at run time (multiplier 1 here).
ADAPTIVE_RULES = ("trace", "pi", "relative")
# damping_rule=auto picks, per optimizer and parameterization:
DEFAULT_DAMPING_RULE: dict[str, dict[str, str]] = {
    "kfac": {"sp": "constant", "mup": "constant", "somup": "somup"},
    "shampoo": {"sp": "relative", "mup": "relative", "somup": "relative"},
    # SOAP as Shampoo: an absolute ε small enough not to bias Adam (1e-8) is below float32's rounding of the rotated
    # gradient, whose null-space entries Adam then normalises to ±1 (tests/test_soap.py); a relative ε is not
    "soap": {"sp": "relative", "mup": "relative", "somup": "relative"},
}

# Weight decay: every optimizer here decays a parameter by lr_layer · λ_layer per step (torch's SGD and AdamW,
# torch's Muon update (W ← (1 − lr·λ)·W), and K-FAC / Shampoo / SOAP, which add λ·W to the preconditioned
# direction). λ_layer = λ · m**(c · e_lr), with e_lr
# the layer's lr exponent above and c = WEIGHT_DECAY[rule]:
#   decoupled (default)  c = −1: lr_layer · λ_layer = η·λ at every width, a width-free decay timescale
#                        (as CompleteP, u-µP and Megatron's µP recipes keep η·λ fixed);
#   coupled              c = 0: λ as given, so the decay per step follows each layer's lr multiplier (what a
#                        single weight_decay passed to torch with µP param groups does).
# Vector parameters (biases, norm gains: fewer than 2 dimensions) are not decayed unless decay_vectors=True.
WEIGHT_DECAY: dict[str, float] = {"decoupled": -1.0, "coupled": 0.0}


# Transformers (docs/parameterization.md, "Transformers"). Three more facts, each as data:
#
# 1. What an optimizer does not precondition it updates like the optimizer named here, and so takes that
#    optimizer's column of LR. K-FAC, Shampoo and SOAP (LAYERWISE) precondition the nn.Linear / nn.Conv2d layers
#    [W | b]; Muon orthogonalises the layers' weights only (W.flatten(1)). Every other parameter (embeddings, norm
#    gains and biases, any other tensor; under Muon the layers' biases too) gets K-FAC's and Shampoo's plain SGD
#    step, SOAP's Adam step, and AdamW under Muon (the Muon recipe). See updated_like().
UPDATED_LIKE: dict[str, str] = {"kfac": "sgd", "shampoo": "sgd", "soap": "adam", "muon": "adam"}

# 2. Forward multipliers: width-dependent constants of the forward pass that init and lr cannot express. A
#    model applies one through a WidthMultiplier module of a kind below, for a dimension of some size; the plan
#    sets its value to m**FORWARD[kind][param], m = size / the size of the same module in the base model (so
#    1 at the base width, where every parameterization coincides).
#    attention       on the attention logits q·kᵀ/√d_head, m of d_head: µP's logit scale 1/d_head (Tensor
#                    Programs V: after training q and k are correlated and q·k = Θ(d_head)) is 1/√d_head·m^-½.
#                    Second-order µP moves q and k by Θ(1) per coordinate as µP does, so it keeps µP's scale.
#    tied_embedding  on the output of an embedding whose weight is also the unembedding (a tied readout): the
#                    shared tensor has the readout's output role (init m^-½/√fan_in), and this multiplier, with
#                    the model's own constant √d_model, gives the embedding's rows back the input role's Θ(1).
FORWARD: dict[str, dict[str, float]] = {
    "attention": {"sp": 0.0, "mup": -0.5, "somup": -0.5},
    "tied_embedding": {p: -INIT[p]["output"] for p in INIT},
}

# 3. Zero-initialised weights besides the readout (param.readout_zero_init): a model marks a weight with
#    setattr(weight, ZERO_INIT, True) and it starts at 0 under every parameterization (µP's zero-initialised
#    queries, Tensor Programs V: the attention is uniform at init, whatever the width).
ZERO_INIT = "muso_zero_init"


# ------------------------------------------------------------------------------------------------------
# Depth (docs/parameterization.md, "Depth"): the table's second axis. A model with residual blocks puts a
# DepthMultiplier on each residual branch, h ← h + (L/L₀)^-α · F(h), and the parameters inside the blocks take the
# exponents below of the depth multiplier L/L₀ (blocks in the model / blocks at model.base_depth), on top of their
# width rule. Outside the blocks (embedding, readout, final norm) nothing depends on depth. Each row is keyed by
# α = param.depth_alpha: 0 is the control (no branch multiplier and no depth rule: standard practice), ½ depth-µP,
# 1 CompleteP. The rows follow from one fact: the branch multiplier scales a block's gradient by (L/L₀)^-α, and a
# block's contribution to the residual stream must move by Θ(1/L) per step (L of them, correlated, move it by Θ(1)).
DEPTH_ALPHAS = (0.0, 0.5, 1.0)

# lr: η_block = η · (L/L₀)**DEPTH_LR[column][α], column = the table's column whose update the parameter gets
# (updated_like: K-FAC's and Shampoo's norm gains are SGD's, SOAP's and Muon's Adam's). A string points at another row.
DEPTH_LR: dict[str, dict[float, float] | str] = {
    "sgd": {0.0: 0.0, 0.5: 0.0, 1.0: 1.0},     # 2α − 1: the step ∝ the gradient ∝ L^-α, its effect × L^-α again
    "adam": {0.0: 0.0, 0.5: -0.5, 1.0: 0.0},   # α − 1 (CompleteP): the step does not see the gradient's scale
    "kfac": {0.0: 0.0, 0.5: -1.0, 1.0: -1.0},  # −1 whatever α: B⁻¹ undoes the multiplier (with ρ_B ∝ B, below)
    "shampoo": "adam",                         # L^-¼ G R^-¼, U Vᵀ and SOAP's Adam are scale-free too: Adam's row
    "muon": "adam",
    "soap": "adam",
}
# Shampoo grafted onto another optimizer steps with that optimizer's norm (GRAFTED), so with its row.
DEPTH_GRAFTED: dict[str, str] = {"sgd": "sgd", "adagrad": "adam", "adam": "adam"}

# Damping of the layers inside blocks: ρ_F · (L/L₀)**DEPTH_DAMPING[optimizer][F][α] on top of the width rule, for the
# absolute rules (ADAPTIVE_RULES follow the factors by themselves). K-FAC's B = E[δδᵀ] and Shampoo's L, R (∝ G Gᵀ)
# scale as the gradient squared, L^-2α; SOAP's ε meets √v, as the gradient, L^-α; K-FAC's A (the block's inputs,
# behind a norm) does not change.
DEPTH_DAMPING: dict[str, dict[str, dict[float, float]]] = {
    "kfac": {"A": {0.0: 0.0, 0.5: 0.0, 1.0: 0.0}, "B": {0.0: 0.0, 0.5: -1.0, 1.0: -2.0}},
    "shampoo": {"eps": {0.0: 0.0, 0.5: -1.0, 1.0: -2.0}},
    "soap": {"eps": {0.0: 0.0, 0.5: -0.5, 1.0: -1.0}},
}

# Init of the weights inside blocks: std × (L/L₀)**DEPTH_INIT[α]. The branch multiplier alone keeps the residual
# stream Θ(1) at initialisation (L branches of L^-α each: Θ(L^(½−α)) ≤ Θ(1) for α ≥ ½), so the blocks keep their init.
DEPTH_INIT: dict[float, float] = {0.0: 0.0, 0.5: 0.0, 1.0: 0.0}


def is_damped(optimizer: str) -> bool:
    """Whether ``optimizer`` has a damping hyperparameter (a column of the damping table)."""
    return optimizer in DAMPING


def damped_optimizers() -> tuple[str, ...]:
    """The optimizers with a damping hyperparameter (K-FAC's ρ, Shampoo's ε, SOAP's Adam ε)."""
    return tuple(DAMPING)


def lr_exponent(param: str, optimizer: str, role: str, power: float | None = None,
                grafting: str | None = None) -> float:
    """Exponent e of the lr multiplier m**e for a parameter of ``role``.

    ``power`` is the preconditioner's total inverse power when the optimizer's hyperparameters set it (Shampoo:
    2·exponent); it only matters for second-order µP's preconditioned rule. ``grafting``: the optimizer whose
    per-layer step norm the update takes (GRAFTED), None or "none" for no grafting.
    """
    if grafting in GRAFTED.get(param, {}) and role in GROWS:
        param, optimizer = GRAFTED[param][grafting].split(".")
    cell = LR[param][optimizer]
    while isinstance(cell, str):
        p, o = cell.split(".")
        cell = LR[p][o]
    if isinstance(cell, Preconditioned):
        return cell.exponent(role, power)
    return cell[role]


def resolve_damping_rule(optimizer: str, param: str, rule: str = "auto") -> str | None:
    """The damping rule in effect (None for optimizers without damping)."""
    if not is_damped(optimizer):
        return None
    if rule == "auto":
        return DEFAULT_DAMPING_RULE[optimizer][param]
    if rule not in DAMPING_RULES[optimizer]:
        raise ValueError(f"unknown damping rule {rule!r} for {optimizer}; use one of "
                         f"{', '.join(DAMPING_RULES[optimizer])} or auto")
    return rule


def identity(optimizer: str, param: str, *, damping_rule: str = "auto", weight_decay_rule: str = "decoupled",
             at_base_width: bool) -> dict[str, str | None]:
    """The choices of the parameterization that decide a run's numbers: {param, damping_rule, weight_decay_rule}.

    At the base width every multiplier is m**e = 1, so SP, µP and second-order µP are the same network and the
    same optimizer there: the parameterization and the weight-decay rule drop out (None), and a damping rule
    that acts through width multipliers only (somup) is the constant rule. Only an adaptive damping rule (trace,
    pi, relative) still counts. Studies key their trials on this, so one base-width run serves every
    parameterization.
    """
    rule = resolve_damping_rule(optimizer, param, damping_rule)
    if not at_base_width:
        return {"param": param, "damping_rule": rule, "weight_decay_rule": weight_decay_rule}
    if rule is not None and rule not in ADAPTIVE_RULES:
        rule = "constant"
    return {"param": None, "damping_rule": rule, "weight_decay_rule": None}


# ------------------------------------------------------------------------------------------------------
# Which column's update a parameter gets (UPDATED_LIKE).

def updated_like(optimizer: str, spec: ParamSpec) -> str:
    """The column of the table whose update parameter ``spec`` gets under ``optimizer``: the optimizer's own for
    what it preconditions (a layer's weight and bias for LAYERWISE optimizers, a layer's weight for Muon), else
    UPDATED_LIKE[optimizer]."""
    own = spec.layer is not None and (optimizer in LAYERWISE or not spec.is_bias)
    return optimizer if own or optimizer not in UPDATED_LIKE else UPDATED_LIKE[optimizer]


def splits_tensors(optimizer: str) -> bool:
    """Whether ``optimizer``'s param groups are single tensors, each saying (``algorithm``) which column's update
    it gets: an optimizer of UPDATED_LIKE that is not LAYERWISE (Muon)."""
    return optimizer in UPDATED_LIKE and optimizer not in LAYERWISE



# ------------------------------------------------------------------------------------------------------
# Forward multipliers (FORWARD).

class _Multiplier(nn.Module):
    """y = x · value (any shape, no parameters); ``value`` is 1.0 until a plan's ``init_`` sets it."""

    def __init__(self):
        super().__init__()
        self.value = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.value == 1.0 else x * self.value


class WidthMultiplier(_Multiplier):
    """y = x · value, the forward multiplier of kind ``kind`` (a row of FORWARD) for a dimension of ``size``
    (attention: d_head; tied_embedding: d_model). Any shape; no parameters.

    ``value`` is 1.0 until a plan's ``init_`` sets it to m**FORWARD[kind][param] with m = size / the size of the
    module of the same name in the base model. A model of your own puts one wherever such a constant goes, e.g.
    ``scores = self.logit_scale(q @ k.transpose(-2, -1) / math.sqrt(d_head))``.
    """

    def __init__(self, kind: str, size: int):
        super().__init__()
        if kind not in FORWARD:
            raise ValueError(f"unknown forward multiplier {kind!r}; use one of {', '.join(FORWARD)}")
        self.kind, self.size = kind, int(size)

    def extra_repr(self) -> str:
        return f"{self.kind}, size={self.size}, value={self.value:.4g}"


class DepthMultiplier(_Multiplier):
    """The residual branch multiplier: y = x · (L/L₀)^-α (kind ``branch``), set by a plan's ``init_`` from the number
    of blocks L of the model, L₀ at model.base_depth, and α = param.depth_alpha (1.0 at the base depth and under
    α = 0). A model puts one on each residual branch, inside the block: ``h = h + self.branch(self.mlp(self.norm(h)))``.
    Any shape; no parameters."""

    kind = "branch"

    def extra_repr(self) -> str:
        return f"value={self.value:.4g}"


def forward_multipliers(model: nn.Module, base: nn.Module, param: str) -> dict[str, tuple[str, float, float]]:
    """{module name: (kind, m, value)} for every WidthMultiplier of ``model``, m from the base model's module."""
    base_modules = dict(base.named_modules())
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, WidthMultiplier):
            base_module = base_modules.get(name)
            if not isinstance(base_module, WidthMultiplier):
                raise ValueError(f"forward multiplier {name!r} is in the model but not in the base model: build "
                                 f"them with the same architecture (only the width differs)")
            m = module.size / base_module.size
            out[name] = (module.kind, m, m ** FORWARD[module.kind][param])
    return out


def depth_column(column: str, grafting: str | None = None) -> str:
    """The row of DEPTH_LR for a parameter updated like ``column`` (Shampoo grafted: the grafted optimizer's)."""
    if column == "shampoo" and grafting in DEPTH_GRAFTED:
        column = DEPTH_GRAFTED[grafting]
    while isinstance(DEPTH_LR[column], str):
        column = DEPTH_LR[column]
    return column


def depth_lr_exponent(column: str, alpha: float, grafting: str | None = None) -> float:
    """Exponent of L/L₀ in the lr of a block parameter updated like ``column`` (a column of LR) under ``alpha``."""
    return DEPTH_LR[depth_column(column, grafting)][float(alpha)]


# ------------------------------------------------------------------------------------------------------
# The plan: everything the parameterization decides for one model.

@dataclass
class Plan:
    """Per-parameter init, lr, weight-decay and damping multipliers of a parameterization applied to one model.

    Multipliers are relative to the base width (all 1 at m = 1, except adaptive damping rules).
    init_std[name]: the init standard deviation (absolute; 0.0 for a zero-initialised readout; None: the
    module's own init, e.g. norm gains). lr_mult[name]: a layerwise optimizer's bias carries its weight's.
    weight_decay_mult[name]: 0.0 for a parameter that is not decayed. damping_mult[layer]: {"A", "B"} for
    K-FAC, {"eps"} for Shampoo. forward_mult[module]: (kind, m, value) of each WidthMultiplier (FORWARD) and each
    DepthMultiplier (kind ``branch``, m = L/L₀). depth: the residual blocks (None for a model without depth); the
    multipliers of the parameters inside them include the depth rules (DEPTH_LR, DEPTH_DAMPING, DEPTH_INIT).
    """

    param: str
    optimizer: str
    damping_rule: str | None
    weight_decay_rule: str
    sigma: float
    readout_zero_init: bool
    specs: dict[str, ParamSpec]
    lr_mult: dict[str, float]
    init_std: dict[str, float | None]
    weight_decay_mult: dict[str, float] = field(default_factory=dict)
    damping_mult: dict[str, dict[str, float]] = field(default_factory=dict)
    forward_mult: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    depth: Depth | None = None

    def init_(self, model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
        """Initialise ``model`` in place: weights N(0, init_std²), Linear/Conv biases 0, others untouched
        (tensors on the meta device have no values: nothing is drawn for them); every WidthMultiplier gets its
        value."""
        modules = dict(model.named_modules())
        for name, (_, _, value) in self.forward_mult.items():
            modules[name].value = value
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, spec in self.specs.items():
                p, std = params[name], self.init_std[name]
                if std is None or p.is_meta:
                    continue
                if std == 0.0:
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype, device="cpu")
                            .mul_(std).to(p.device))
        return model

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float | None = None, *,
                     rest_lr: float | None = None, **options) -> list[dict]:
        """torch param groups carrying each parameter's lr (``lr`` × multiplier) and its damping multipliers.

        Every group has ``params``, ``param_names`` (torch's key), ``lr`` and ``role``. Layerwise optimizers
        (K-FAC, Shampoo, SOAP): one group per Linear/Conv2d layer, weight then bias (the bias is preconditioned
        with its weight, the input augmented by a constant), with ``layer``, ``damping_rule`` and ``damping_A`` /
        ``damping_B`` or ``damping_eps``; every other parameter a group of its own. Optimizers whose groups are tensors (splits_tensors: Muon):
        one group per parameter with ``algorithm`` (the optimizer that updates it: ``muon`` for a layer's
        weight, ``adam`` for the rest), and the rest's lr is ``rest_lr`` (default ``lr``) × its multiplier. With
        ``weight_decay`` (λ at the base width) each group gets ``weight_decay`` = λ × its multiplier, and a layer
        group also ``bias_weight_decay`` for its bias. ``options`` are copied into every group.
        """
        params = dict(model.named_parameters())
        groups: list[dict] = []
        by_layer: dict[str, list[str]] = {}

        def decay(name: str) -> dict:
            return {} if weight_decay is None else {"weight_decay": weight_decay * self.weight_decay_mult[name]}

        for name, spec in self.specs.items():
            if self.optimizer in LAYERWISE and spec.layer is not None:
                by_layer.setdefault(spec.layer, []).append(name)
            else:
                algorithm = {"algorithm": self.algorithm(name)} if splits_tensors(self.optimizer) else {}
                groups.append({"params": [params[name]], "param_names": [name],
                               "lr": self._base_lr(name, lr, rest_lr) * self.lr_mult[name], "role": spec.role,
                               **algorithm, **decay(name), **options})
        for layer, names in by_layer.items():
            names.sort(key=lambda n: self.specs[n].is_bias)  # weight first, then bias
            weight = names[0]
            group = {"params": [params[n] for n in names], "param_names": names, "lr": lr * self.lr_mult[weight],
                     "role": self.specs[weight].role, "layer": layer, **decay(weight)}
            if weight_decay is not None and len(names) == 2:
                group["bias_weight_decay"] = weight_decay * self.weight_decay_mult[names[1]]
            if self.damping_rule is not None:
                group["damping_rule"] = self.damping_rule
                group.update({f"damping_{k}": v for k, v in self.damping_mult[layer].items()})
            groups.append({**group, **options})
        return groups

    def algorithm(self, name: str) -> str:
        """The optimizer (a column of the table) whose update parameter ``name`` gets (updated_like)."""
        return updated_like(self.optimizer, self.specs[name])

    def _base_lr(self, name: str, lr: float, rest_lr: float | None) -> float:
        """The base lr of parameter ``name``: ``rest_lr`` (when given) for what the optimizer updates like another."""
        return rest_lr if rest_lr is not None and self.algorithm(name) != self.optimizer else lr

    def rows(self) -> list[dict]:
        """One row per parameter, for `muso params`: name, shape, role, m, init std, lr, weight-decay and
        damping multipliers (with depth: ``block`` in | out and ``depth_mult`` L/L₀ inside the blocks, whose rules
        the multipliers include); then one per forward multiplier: its module, role = its kind, m, forward_mult.
        Optimizers whose groups are tensors (Muon) add ``algorithm`` (which column's update each gets)."""
        out = []
        for name, s in self.specs.items():
            row = {"name": name, "shape": list(s.shape), "role": s.role, "width_mult": s.width_mult,
                   "init_std": self.init_std[name], "lr_mult": self.lr_mult[name],
                   "wd_mult": self.weight_decay_mult[name]}
            if splits_tensors(self.optimizer):
                row["algorithm"] = self.algorithm(name)
            if self.damping_rule is not None:
                damping = self.damping_mult.get(s.layer or "", {}) if not s.is_bias else {}
                row["damping_rule"] = self.damping_rule
                for k in DAMPING[self.optimizer][self.damping_rule]:
                    row[f"damping_{k}_mult"] = damping.get(k)
            if self.depth is not None:
                inside = self.depth.block_of(name) is not None
                row["block"] = "in" if inside else "out"
                row["depth_mult"] = self.depth.mult if inside else 1.0
            out.append(row)
        for name, (kind, m, value) in self.forward_mult.items():
            scale = "depth_mult" if kind == DepthMultiplier.kind else "width_mult"  # a branch's m is L/L₀
            out.append({"name": name, "shape": [], "role": kind, "width_mult": 1.0, scale: m, "forward_mult": value})
        return out


def make_plan(model: nn.Module, base: nn.Module, param: str, optimizer: str, *, delta: nn.Module | None = None,
              damping_rule: str = "auto", weight_decay_rule: str = "decoupled", decay_vectors: bool = False,
              sigma: float = 1.0, readout_zero_init: bool = False, power: float | None = None,
              grafting: str | None = None, depth_base: nn.Module | None = None, depth_delta: nn.Module | None = None,
              depth_alpha: float = 0.0) -> Plan:
    """Apply the table to ``model`` given the base-width ``base`` and a ``delta`` model (see infer_roles).

    param: sp | mup | somup. optimizer: a column of the table (OPTIMIZERS). damping_rule: auto or one of
    DAMPING_RULES[optimizer]. weight_decay_rule: decoupled | coupled (WEIGHT_DECAY); decay_vectors: decay
    biases and norm gains too. sigma: init std × √fan_in. power: the preconditioner's total inverse power when
    the optimizer's hyperparameters set it (Shampoo: 2 × exponent). Parameters an optimizer does not
    precondition take the lr rule of UPDATED_LIKE; weights marked ZERO_INIT start at 0; the model's
    WidthMultipliers get m**FORWARD[kind][param]. grafting: the optimizer's ``grafting``
    (Shampoo), which sets the preconditioned weights' lr rule under somup (GRAFTED); None or "none": no grafting.

    Depth: ``depth_base`` (the same model at its base depth) and ``depth_delta`` (deeper) locate the residual blocks
    (infer_depth); the parameters inside them take the depth rules of ``depth_alpha`` (DEPTH_ALPHAS) and every
    DepthMultiplier (L/L₀)^-α. Without them the model has no depth axis (every depth multiplier 1).
    """
    if param not in PARAMS:
        raise ValueError(f"unknown parameterization {param!r}; use one of {', '.join(PARAMS)}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
    if weight_decay_rule not in WEIGHT_DECAY:
        raise ValueError(f"unknown weight-decay rule {weight_decay_rule!r}; use one of {', '.join(WEIGHT_DECAY)}")
    if delta is None and same_shapes(model, base):
        warnings.warn("make_plan: the model has the base width and no delta model was given, so no dimension "
                      "is seen to scale and every parameter is treated as fixed (SP). Pass delta=<the same "
                      "model at another width, e.g. on the meta device>.", UserWarning, stacklevel=2)
    if float(depth_alpha) not in DEPTH_ALPHAS:
        raise ValueError(f"depth_alpha must be one of {', '.join(f'{a:g}' for a in DEPTH_ALPHAS)}, got {depth_alpha!r}")
    rule = resolve_damping_rule(optimizer, param, damping_rule)
    specs = infer_roles(model, base, delta)
    depth = None if depth_base is None else infer_depth(model, depth_base, depth_delta or model, depth_alpha)
    alpha = float(depth_alpha)

    def depth_factor(name: str, exponents: dict[float, float]) -> float:
        """(L/L₀)**exponent for a parameter inside a block, 1 outside (and without depth)."""
        inside = depth is not None and depth.block_of(name) is not None
        return depth.mult ** exponents[alpha] if inside else 1.0

    params = dict(model.named_parameters())
    lr_mult, init_std, damping = {}, {}, {}
    for name, s in specs.items():
        m = s.width_mult
        # what the optimizer does not precondition takes the lr rule of the update it gets (UPDATED_LIKE); grafting
        # (Shampoo) sets the rule of the layers it preconditions
        column = updated_like(optimizer, s)
        grafted = grafting if column == optimizer else None
        lr_mult[name] = (m ** lr_exponent(param, column, s.role, power, grafted)
                         * depth_factor(name, DEPTH_LR[depth_column(column, grafted)]))
        if len(s.shape) >= 2:
            zero = (readout_zero_init and s.role == "output") or getattr(params[name], ZERO_INIT, False)
            init_std[name] = (0.0 if zero else sigma * m ** INIT[param][s.role] / math.sqrt(s.fan_in)
                              * depth_factor(name, DEPTH_INIT))
        else:
            init_std[name] = 0.0 if s.is_bias else None
        if rule is not None and s.layer is not None and not s.is_bias:
            absolute = rule not in ADAPTIVE_RULES  # an adaptive rule follows the factors' depth scaling by itself
            damping[s.layer] = {k: m ** exps[s.role] * (depth_factor(name, DEPTH_DAMPING[optimizer][k]) if absolute
                                                        else 1.0)
                                for k, exps in DAMPING[optimizer][rule].items()}
    if optimizer in LAYERWISE:  # a layer's bias moves with its weight
        weights = {s.layer: n for n, s in specs.items() if s.layer is not None and not s.is_bias}
        lr_mult.update({n: lr_mult[weights[s.layer]] for n, s in specs.items() if s.is_bias})
    c = WEIGHT_DECAY[weight_decay_rule]
    weight_decay = {n: lr_mult[n] ** c if len(s.shape) >= 2 or decay_vectors else 0.0 for n, s in specs.items()}
    return Plan(param=param, optimizer=optimizer, damping_rule=rule, weight_decay_rule=weight_decay_rule,
                sigma=sigma, readout_zero_init=readout_zero_init, specs=specs, lr_mult=lr_mult, init_std=init_std,
                weight_decay_mult=weight_decay, damping_mult=damping,
                forward_mult={**forward_multipliers(model, base, param), **branch_multipliers(model, depth)},
                depth=depth)


def branch_multipliers(model: nn.Module, depth: Depth | None) -> dict[str, tuple[str, float, float]]:
    """{module name: ("branch", L/L₀, (L/L₀)^-α)} for every DepthMultiplier of ``model`` (1.0 without depth)."""
    mult, alpha = (depth.mult, depth.alpha) if depth is not None else (1.0, 0.0)
    return {name: (DepthMultiplier.kind, mult, mult ** -alpha) for name, module in model.named_modules()
            if isinstance(module, DepthMultiplier)}

