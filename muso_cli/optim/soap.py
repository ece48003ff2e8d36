"""SOAP (Vyas et al. 2024: "Improving and stabilizing Shampoo using Adam") with per-layer lr and ε, for width
transfer: Adam run in the eigenbasis of Shampoo's statistics, a layer of muso's layer protocol.

Each preconditioned layer is one matrix G = ∂loss/∂W [d_out, d_in] (conv weights as out × in·kh·kw; the bias,
when the group has one, as an extra column: see :mod:`muso_cli.optim.layer`). Statistics as Shampoo's
(:class:`~muso_cli.optim.shampoo.ShampooLayer`, the same code)::

    L ← decay·L + (1 − decay)·G Gᵀ [d_out, d_out],   R ← decay·R + (1 − decay)·Gᵀ G [d_in, d_in]

every ``statistics_interval`` steps (``statistics="sum"``: Σ instead), and their eigenbases Q_L, Q_R (eigh,
float32 then float64) every ``inverse_interval`` steps. The update direction, t = the layer's step + 1::

    M ← β₁·M + (1 − β₁)·G                      (Adam's first moment, in W's own basis; M₁ = (1 − β₁)·G₁)
    G' = Q_Lᵀ G Q_R,  V ← β₂·V + (1 − β₂)·G'⊙G'   (the second moment, in the eigenbasis)
    D = Q_L [ (Q_Lᵀ M Q_R)/(1 − β₁ᵗ) / (√(V/(1 − β₂ᵗ)) + ε) ] Q_Rᵀ

then ``W ← W − lr·(D + λ·W)`` (decoupled weight decay, no momentum on top: β₁ is SOAP's). When the eigenbasis is
recomputed V is kept as it is, its entries matched by eigenvalue rank (eigh's ascending order), as SOAP's
reference implementation keeps it after sorting. ε per layer from ``damping_rule`` (ε = group ``damping``,
m = group ``damping_eps``: the plan's width multiplier, 1 without a plan; docs/parameterization.md)::

    constant, somup   ε·m          (absolute; somup's m scales it m^-½, 1, m^½ for input / hidden / readout)
    relative          ε·√λ_max(L)·m  (ε relative to G's largest singular value: width-free)

Two differences from the reference implementation, both so that SOAP is a layer of the house protocol: the
statistics are updated before the direction is computed (as muso's Shampoo), so the first step already uses the
eigenbasis of G₁ (the reference skips its first update instead), and the eigenbasis comes from ``eigh`` on every
inverse step (the reference runs one power iteration and a QR there). At the first step the update is then
Q_L sign(Σ) Q_Rᵀ = U Vᵀ, G's orthogonal factor (Muon's and ε-free Shampoo's): Shampoo-like in width. Every later
gradient is no longer diagonal in the basis (a moved network, a new batch, a basis up to ``inverse_interval`` steps
old), Adam gives each rotated coordinate a Θ(1) step, and SOAP is Adam-like in width: its steady state, which the
table's column follows (Adam's µP rules; docs/parameterization.md, "SOAP's steady state"). The reference's first
step (statistics only) would make the first *update* Adam-like in training, at the cost of a step, but not on one
fixed batch (G₂ = G₁ there): it was considered and not adopted.

Why not a library's SOAP (pytorch-optimizer 4.1 has one; heavyball calls itself compile-first): they
precondition each tensor on its own (a bias apart from its weight, a conv weight with one factor per dimension
unless its dimensions are merged up to a size limit), so a layer could not be the matrix [W | b] of out × in·kh·kw
that muso's table and K-FAC and Shampoo use (a bias takes its weight's lr, LAYERWISE), their ε is one number per
group without the relative rule, and their statistics come from ``.grad`` only (no factored form). Here SOAP
reuses Shampoo's statistics code and the layer protocol's checkpoints, hooks and per-group damping.

Parameters outside Linear/Conv2d layers (norm gains, embeddings, bare tensors: the rest) are updated by Adam
(AdamW's decoupled decay), with the group's β₁, β₂ and ε = ``damping``, as SOAP updates 1-D tensors: the same
:func:`~muso_cli.optim.tensors.adam_direction` unrotated, through the base class's rest update
(:meth:`SOAP.rest_direction`). They are therefore part of the base class's atomic step: a refused step (a
non-finite direction or statistic of some layer) moves neither them nor their moments, as it moves no layer, so
that a refused step leaves the whole model as it was (SOAP used to update them before the layers' step, which
moved them even when that step was then refused).

State per layer (``self.state[weight]``): ``L``, ``R``, ``QL``, ``QR``, ``exp_avg`` (M), ``exp_avg_sq`` (V),
``damping`` ({"eps": ε}) and ``step``; per other parameter ``exp_avg``, ``exp_avg_sq``, ``step``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import DampedOptimizer, LayerwiseOptimizer
from .checks import damping_checks, decay, interval, one_of
from .layer import supported
from .shampoo import STATISTICS, ShampooLayer
from .tensors import adam_direction, eigh_psd, finite_or


class SOAPLayer(ShampooLayer):
    """A layer (or a bare weight tensor) under SOAP. Statistics: Shampoo's L [d_out, d_out], R [d_in, d_in];
    inverses: their eigenbases QL, QR, with the ε in effect in state ``damping``."""

    statistics = ("L", "R")
    inverses = ("QL", "QR")

    def update_inverse(self, state: dict, group: dict) -> None:
        dtypes = tuple(dict.fromkeys((state["L"].dtype, torch.float64)))
        lam_max = math.nan
        for stat, key in (("L", "QL"), ("R", "QR")):
            decomposition = eigh_psd(state[stat], dtypes)
            if decomposition is None:  # a non-finite statistic (a diverged run): let the loss show it
                state[key] = torch.full_like(state[stat], math.nan)
                continue
            lam, q = decomposition
            state[key] = q.to(state[stat].dtype)
            if stat == "L":
                lam_max = lam[-1].item()
        eps, mult = group["damping"], group["damping_eps"]
        relative = group["damping_rule"] == "relative"
        state["damping"] = {"eps": (finite_or(eps * math.sqrt(lam_max), eps) if relative else eps) * mult}

    def precondition(self, state: dict, group: dict) -> Tensor:
        """Adam's direction in the eigenbasis, rotated back [d_out, d_in], in the parameters' dtype."""
        direction = adam_direction(state, self.grad_matrix(), group, state["damping"]["eps"],
                                   rotate=(state["QL"], state["QR"]))
        return direction.to(self.weight.dtype)


class SOAP(DampedOptimizer):
    """SOAP as a ``torch.optim.Optimizer`` (see the module docstring for the maths).

    Args:
        params: the model (then also ``model``: every Linear/Conv2d layer preconditioned, weight and bias
            together; other parameters Adam), param groups (e.g. ``plan.param_groups(model, lr)``: a group with
            ``layer`` and params [weight] or [weight, bias] is preconditioned, others get Adam), or plain or named
            tensors (each tensor of ≥ 2 dimensions preconditioned on its own as shape[0] × the rest, 1-D tensors
            Adam). Every argument below from ``lr`` on is a group key (``defaults``), as is the ε multiplier
            ``damping_eps`` (m; 1 unless the plan sets it).
        model: the network, when ``params`` are groups: enables the exact factored form of the statistics
            (``factored``) through hooks on the groups' layers. Without it SOAP works from ``.grad`` alone.
        lr: learning rate. beta1, beta2: Adam's moment decays. weight_decay: decoupled (W ← W − lr·λ·W).
        bias_weight_decay: a layer's bias's weight decay (None: ``weight_decay``).
        damping: Adam's ε (> 0). damping_rule: constant | somup | relative. The defaults (1e-4, relative: ε·√λ_max(L))
            are conf/optimizer/soap.yaml's, as ``damping_rule=auto`` resolves it: an absolute ε of 1e-8 lies below
            float32's rounding of the rotated gradient.
        statistics: ema | sum. ema_decay: the statistics' running-average decay (SOAP's shampoo_beta), in [0, 1).
        statistics_interval, inverse_interval: steps between statistics and between eigenbasis updates.
        factored: allow the exact factored form of G Gᵀ and Gᵀ G (needs capture every step).
    """

    CHECKS = {**LayerwiseOptimizer.CHECKS, **damping_checks("soap"),
              "beta1": decay, "beta2": decay, "statistics": one_of(STATISTICS), "ema_decay": decay,
              "statistics_interval": interval}

    def __init__(self, params, *, model: nn.Module | None = None, lr: float = 3e-3, beta1: float = 0.95,
                 beta2: float = 0.95, weight_decay: float = 0.0, bias_weight_decay: float | None = None,
                 damping: float = 1e-4, damping_rule: str = "relative", statistics: str = "ema",
                 ema_decay: float = 0.95, statistics_interval: int = 1, inverse_interval: int = 10,
                 factored: bool = True):
        # momentum 0: the base class's heavy ball is not SOAP's (β₁ is); a group may still set one (layer and rest)
        defaults = {"lr": lr, "momentum": 0.0, "beta1": beta1, "beta2": beta2, "weight_decay": weight_decay,
                    "bias_weight_decay": bias_weight_decay, "damping": damping, "damping_rule": damping_rule,
                    "damping_eps": 1.0, "statistics": statistics, "ema_decay": ema_decay,
                    "statistics_interval": statistics_interval, "inverse_interval": inverse_interval,
                    "factored": factored}
        super().__init__(params, defaults, model=model)

    def make_layer(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None) -> SOAPLayer:
        return SOAPLayer(name, weight, bias, module if supported(module) else None)

    def rest_direction(self, group: dict, p: Tensor, state: dict) -> Tensor:
        """Adam's direction (ε = the group's ``damping``, no ε rule: a vector has no statistics) in ``p``'s dtype;
        counts ``p``'s steps in ``state["step"]`` (Adam's bias correction)."""
        direction = adam_direction(state, p.grad, group, group["damping"]).to(p.dtype)
        state["step"] = state.get("step", 0) + 1
        return direction


__all__ = ["SOAP", "SOAPLayer"]
