"""Shampoo (Gupta, Koren & Singer 2018) with per-layer lr and ε, for width transfer (second-order µP).

Each preconditioned layer is one matrix G = ∂loss/∂W [d_out, d_in] (conv weights as out × in·kh·kw; the bias,
when the group has one, as an extra column, as in K-FAC: see :mod:`muso_cli.optim.layer`). Statistics::

    L = Σ_t G_t G_tᵀ [d_out, d_out],   R = Σ_t G_tᵀ G_t [d_in, d_in]       (statistics="sum", AdaGrad-like)
    L ← decay·L + (1 − decay)·G Gᵀ, likewise R                          (statistics="ema"; first: G Gᵀ as is)

updated every ``statistics_interval`` steps, and the update direction ``D = (L + ε_L I)^-e G (R + ε_R I)^-e``
with e = ``exponent`` per side (1/4 by default: total power 1/2, which the plan's lr table reads as
2·exponent). The inverse roots come from ``torch.linalg.eigh`` in float32 (the default ``eigh_dtype``: about
1.7× faster on CPU than float64; float64 when float32 fails; ``eigh_dtype="float64"``: float64 only) with the eigenvalues clamped at 0, recomputed every
``inverse_interval`` steps. ε per group from ``damping_rule`` (ε = group ``damping``,
m = group ``damping_eps``: the plan's width multiplier, 1 without a plan; docs/parameterization.md)::

    constant, somup   ε_L = ε_R = ε·m          (absolute; somup's m scales it as 1/m, 1, m for in / hid / out)
    relative          ε_L = ε·λ_max(L)·m, ε_R = ε·λ_max(R)·m  (width-free; an all-zero factor falls back to ε·m)

Grafting (off by default): ``sgd``, ``adagrad`` or ``adam`` keeps Shampoo's direction and takes the per-layer
Frobenius norm of the grafted update (the gradient G; G / (√H + graft_eps) with H the running Σ G⊙G; or Adam's
bias-corrected G / (√V̂ + graft_eps) with V the EMA of G⊙G at ``graft_beta2``, without first moment).
Then SGD's momentum and weight decay (added to D after preconditioning and grafting). When the batch is small
compared with the layer, G Gᵀ = Δᵀ (X Xᵀ) Δ, Gᵀ G = Xᵀ (Δ Δᵀ) X and D = (L^-e Δᵀ)(X R^-e) are formed from the
captured rows (exact; see :mod:`~muso_cli.optim.layer`), which needs hooks, hence the model. Parameters in
groups without ``layer`` get SGD. Every hyperparameter is a group key.

State per layer (``self.state[weight]``): ``L``, ``R``, ``L_root``, ``R_root``, ``graft_sq`` (AdaGrad and Adam
grafting only; tensors), ``damping`` ({"L": ε_L, "R": ε_R}) and ``step``; the momentum buffers as torch.optim.SGD keeps
them.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import HyperparameterError, check_positive
from .base import DampedOptimizer, LayerwiseOptimizer
from .checks import damping_checks, decay, interval, non_negative, one_of, positive, renamed
from .layer import Layer, supported
from .tensors import eigh_psd, finite_or, running_average, statistics_decay, statistics_dtype

STATISTICS = ("ema", "sum")
GRAFTING = ("none", "sgd", "adagrad", "adam")
EIGH_DTYPES = {"float64": (torch.float64,), "float32": (torch.float32, torch.float64)}  # tried in this order


def accumulate(state: dict, key: str, new: Tensor, group: dict) -> Tensor:
    """The group's ``statistics`` of ``state[key]`` and ``new``: old + new (sum) or the running average with
    ``ema_decay`` (ema; with ``ema_warmup`` a plain mean of the first updates, see
    :func:`~muso_cli.optim.tensors.statistics_decay`). A new tensor: the old one is left as it was."""
    old = state.get(key)
    if group["statistics"] == "sum":
        return new if old is None else old + new
    return running_average(old, new, statistics_decay(state, group))


def inverse_root(stat: Tensor, group: dict) -> tuple[Tensor, float]:
    """((S + ε I)^-exponent in S's dtype, ε) for the group's ε rule, by eigh with eigenvalues clamped at 0."""
    decomposition = eigh_psd(stat, EIGH_DTYPES[group["eigh_dtype"]])
    if decomposition is None:  # a non-finite statistic (a diverged run): let the loss show it
        return torch.full_like(stat, math.nan), math.nan
    lam, q = decomposition
    value = epsilon(lam[-1].item(), group["damping"], group)
    return eigen_power(lam, q, value, group["exponent"], stat.dtype), value


def epsilon(lam_max: float, eps: float, group: dict) -> float:
    """ε of a statistic whose largest eigenvalue is ``lam_max``, for the base ε ``eps`` under the group's rule
    (module docstring): ε·λ_max·m (relative; ε·m when that is not finite and > 0) or ε·m."""
    mult = group["damping_eps"]
    return finite_or(eps * lam_max, eps) * mult if group["damping_rule"] == "relative" else eps * mult


def eigen_power(lam: Tensor, q: Tensor, value: float | Tensor, exponent: float, dtype: torch.dtype) -> Tensor:
    """Q diag((λ + ε)^-exponent) Qᵀ [..., d, d] in ``dtype`` for λ [..., d], Q [..., d, d] (one matrix or a
    stack) and ε a float or a tensor broadcasting against λ ([..., 1]: one ε per matrix)."""
    # In the statistic's dtype: the factors (λ + ε)^-e span a small range (≤ ε^-e), so float32 loses nothing
    # that the float32 result would keep, and a float64 product would cost a third of the eigh itself.
    q = q.to(dtype)
    return (q * (lam + value).pow(-exponent).to(dtype).unsqueeze(-2)) @ q.mT


class ShampooLayer(Layer):
    """A layer (or a bare weight tensor) under Shampoo. Statistics: L [d_out, d_out], R [d_in, d_in]; inverses:
    their inverse roots L_root, R_root, with the ε used for them in state ``damping``."""

    statistics = ("L", "R")
    inverses = ("L_root", "R_root")

    def update_statistics(self, state: dict, group: dict) -> None:
        """Fold this step's G Gᵀ and Gᵀ G into L and R (from the captured rows when exact and cheaper)."""
        pair = self.factored_if_cheaper(
            group["factored"],
            lambda rows: 2 * rows ** 2 * (self.d_out + self.d_in) + rows * (self.d_out ** 2 + self.d_in ** 2))
        dtype = statistics_dtype(self.weight)
        if pair is not None:
            d, x = pair
            gg_t = d.T @ ((x @ x.T) @ d)   # G Gᵀ = Δᵀ (X Xᵀ) Δ
            gtg = x.T @ ((d @ d.T) @ x)    # Gᵀ G = Xᵀ (Δ Δᵀ) X
        else:
            g = self.grad_matrix()
            gg_t, gtg = g @ g.T, g.T @ g
        state["L"] = accumulate(state, "L", gg_t.to(dtype), group)
        state["R"] = accumulate(state, "R", gtg.to(dtype), group)

    def preconditioning(self, state: dict, group: dict) -> bool:
        """Whether this step is preconditioned: from the layer's step ``start_preconditioning_step`` on."""
        return state.get("step", 0) >= group["start_preconditioning_step"]

    def update_inverse(self, state: dict, group: dict) -> None:
        if not self.preconditioning(state, group):
            return  # grafted first-order steps until then: no root is used, none is computed
        state["L_root"], eps_L = inverse_root(state["L"], group)
        state["R_root"], eps_R = inverse_root(state["R"], group)
        state["damping"] = {"L": eps_L, "R": eps_R}

    def graft(self, state: dict, group: dict) -> Tensor | None:
        """The grafted optimizer's direction [d_out, d_in] this step (None: no grafting), its statistics updated:
        sgd G; adagrad G / (√H + graft_eps), H = Σ_t G_t⊙G_t; adam G / (√(V / (1 − β₂ᵗ)) + graft_eps),
        V ← β₂·V + (1 − β₂)·G⊙G (Adam without its first moment: momentum is the optimizer's, as in
        distributed_shampoo). t counts the layer's steps from 1."""
        kind = group["grafting"]
        if kind == "none":
            return None
        g = self.grad_matrix()
        if kind == "sgd":
            return g
        sq = (g * g).to(statistics_dtype(g))
        old = state.get("graft_sq")
        if kind == "adagrad":
            h = state["graft_sq"] = sq if old is None else old + sq
        else:
            beta2, t = group["graft_beta2"], state.get("step", 0) + 1
            h = state["graft_sq"] = (1.0 - beta2) * sq if old is None else torch.lerp(sq, old, beta2)
            h = h / (1.0 - beta2 ** t)
        return (g / (h.sqrt() + group["graft_eps"])).to(g.dtype)

    def precondition(self, state: dict, group: dict) -> Tensor:
        """(L + ε_L I)^-e G (R + ε_R I)^-e [d_out, d_in] in the parameters' dtype, grafted when asked; before
        ``start_preconditioning_step`` the grafted optimizer's own direction (G without grafting)."""
        grafted = self.graft(state, group)
        if not self.preconditioning(state, group):
            self.path = "dense"
            return grafted if grafted is not None else self.grad_matrix()
        direction = self.two_sided(state["L_root"], state["R_root"], group["factored"])
        if grafted is None:
            return direction
        # direction rescaled to the Frobenius norm of the grafted optimizer's update
        norm = torch.linalg.matrix_norm(direction)
        return direction * torch.where(norm > 0, torch.linalg.matrix_norm(grafted) / norm, 0.0).to(direction.dtype)


class Shampoo(DampedOptimizer):
    """Shampoo as a ``torch.optim.Optimizer`` (see the module docstring for the maths).

    Args:
        params: the model (then also ``model``: every Linear/Conv2d layer preconditioned, weight and bias
            together; other parameters SGD), param groups (e.g. ``plan.param_groups(model, lr)``: a group with
            ``layer`` and params [weight] or [weight, bias] is preconditioned, others get SGD), or plain or
            named tensors (e.g. ``model.parameters()``: each tensor of ≥ 2 dimensions is preconditioned on its
            own as shape[0] × the rest, 1-D tensors get SGD). Every argument below from ``lr`` on is a group key
            (``defaults``), as is the ε multiplier ``damping_eps`` (m; 1 unless the plan sets it).
        model: the network, when ``params`` are groups: enables the exact factored form (``factored``) through
            hooks on the groups' layers. Without it Shampoo works from ``.grad`` alone.
        lr, momentum, weight_decay: as torch.optim.SGD (weight decay is added after preconditioning).
        bias_weight_decay: a layer's bias's weight decay (None: ``weight_decay``).
        damping: ε (> 0). damping_rule: constant | somup | relative. exponent: e per side (> 0).
        statistics: ema | sum. ema_decay: weight of the old statistic in the running average, in [0, 1).
        statistics_interval, inverse_interval: steps between statistics and between inverse-root updates.
        grafting: none | sgd | adagrad | adam; graft_eps: their ε (≥ 0). eigh_dtype: float32 | float64 (inverse roots).
        factored: allow the exact factored forms (needs capture every step). lowrank: deprecated alias.
    """

    CHECKS = {**LayerwiseOptimizer.CHECKS, **damping_checks("shampoo"), "exponent": positive,
              "statistics": one_of(STATISTICS), "ema_decay": decay, "statistics_interval": interval,
              "grafting": one_of(GRAFTING), "graft_eps": non_negative, "eigh_dtype": one_of(EIGH_DTYPES),
              "graft_beta2": decay,
              "start_preconditioning_step": lambda key, value: check_positive(key, value, integer=True,
                                                                              allow_zero=True)}

    def __init__(self, params, *, model: nn.Module | None = None, lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, bias_weight_decay: float | None = None, damping: float = 1e-4,
                 damping_rule: str = "relative", exponent: float = 0.25, statistics: str = "ema",
                 ema_decay: float = 0.95, ema_warmup: bool = True, statistics_interval: int = 1,
                 inverse_interval: int = 1, warmup_steps: int = 0, start_preconditioning_step: int = 0,
                 grafting: str = "none", graft_beta2: float = 0.999, graft_eps: float = 1e-8,
                 eigh_dtype: str = "float32", factored: bool = True, lowrank: bool | None = None):
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "bias_weight_decay": bias_weight_decay, "damping": damping, "damping_rule": damping_rule,
                    "damping_eps": 1.0, "exponent": exponent, "statistics": statistics, "ema_decay": ema_decay,
                    "ema_warmup": ema_warmup, "statistics_interval": statistics_interval,
                    "inverse_interval": inverse_interval, "warmup_steps": warmup_steps,
                    "start_preconditioning_step": start_preconditioning_step, "grafting": grafting,
                    "graft_beta2": graft_beta2, "graft_eps": graft_eps, "eigh_dtype": eigh_dtype,
                    "factored": renamed("lowrank", lowrank, "factored", factored)}
        super().__init__(params, defaults, model=model)

    def add_param_group(self, param_group: dict) -> None:
        """torch's (see :class:`~muso_cli.optim.base.LayerwiseOptimizer`); a group that would start
        preconditioning late without grafting is refused (its first steps would have no defined size)."""
        group = {**self.defaults, **param_group}
        start = group["start_preconditioning_step"]
        # only a valid late start (an int > 0) is refused here; a bad value is the base class's range check's
        if isinstance(start, int) and start > 0 and group["grafting"] == "none":
            raise HyperparameterError(
                "start_preconditioning_step", f"is {group['start_preconditioning_step']} with grafting none: the steps "
                "before it are the grafted optimizer's.", "set grafting (adam, adagrad or sgd), or "
                "start_preconditioning_step=0.")
        super().add_param_group(param_group)

    def make_layer(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None) -> ShampooLayer:
        return ShampooLayer(name, weight, bias, module if supported(module) else None)


__all__ = ["EIGH_DTYPES", "GRAFTING", "STATISTICS", "Shampoo", "ShampooLayer", "accumulate", "eigen_power",
           "epsilon", "inverse_root"]
