"""Shampoo (Gupta, Koren & Singer 2018) with per-layer lr and ε, for width transfer (second-order µP).

Each preconditioned layer is one matrix G = ∂loss/∂W [d_out, d_in] (conv weights as out × in·kh·kw; the bias,
when the group has one, as an extra column, as in K-FAC: see :mod:`muso_cli.optim.common`). Statistics::

    L = Σ_t G_t G_tᵀ [d_out, d_out],   R = Σ_t G_tᵀ G_t [d_in, d_in]       (statistics="sum", AdaGrad-like)
    L ← decay·L + (1 − decay)·G Gᵀ, likewise R                          (statistics="ema"; first: G Gᵀ as is)

updated every ``statistics_interval`` steps, and the update direction ``D = (L + ε_L I)^-e G (R + ε_R I)^-e``
with e = ``exponent`` per side (1/4 by default: total power 1/2, which the plan's lr table reads as
2·exponent). The inverse roots come from ``torch.linalg.eigh`` in float64 (``eigh_dtype="float32"``: float32,
about 1.7× faster on CPU, float64 when it fails) with the eigenvalues clamped at 0, recomputed every
``inverse_interval`` steps. ε per group from ``damping_rule`` (ε = group ``damping``,
m = group ``damping_eps``: the plan's width multiplier, 1 without a plan):

    constant, somup   ε_L = ε_R = ε·m          (absolute; somup's m scales it as 1/m, 1, m for in / hid / out)
    relative          ε_L = ε·λ_max(L)·m, ε_R = ε·λ_max(R)·m  (width-free; an all-zero factor falls back to ε·m)

Grafting (off by default): ``sgd`` or ``adagrad`` keeps Shampoo's direction and takes the per-layer Frobenius
norm of the grafted update (the gradient G, or G / (√H + graft_eps) with H the running Σ G⊙G, kept like L).
Then SGD's momentum and weight decay (added to D after preconditioning and grafting). When the batch is small
compared with the layer, G Gᵀ = Δᵀ (X Xᵀ) Δ, Gᵀ G = Xᵀ (Δ Δᵀ) X and D = (L^-e Δᵀ)(X R^-e) are formed from the
captured rows (exact; see :mod:`~muso_cli.optim.common`), which needs hooks, hence the model. Parameters in
groups without ``layer`` get SGD.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import parametrize
from .common import Layer, LayerwiseOptimizer, eigh_psd, finite_or, running_average, statistics_dtype, supported

DAMPING_RULES = parametrize.DAMPING_RULES["shampoo"]  # constant, somup, relative
STATISTICS = ("ema", "sum")
GRAFTING = ("none", "sgd", "adagrad")
EIGH_DTYPES = {"float64": (torch.float64,), "float32": (torch.float32, torch.float64)}  # tried in this order


class ShampooLayer(Layer):
    """A layer (or a bare weight tensor) under Shampoo: owns L [d_out, d_out], R [d_in, d_in], their inverse
    roots, the ε values used for them (``eps`` = {"L": ε_L, "R": ε_R}) and the AdaGrad graft statistic."""

    state_keys = ("L", "R", "L_root", "R_root", "eps", "graft_sq")

    def __init__(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None):
        super().__init__(name, weight, bias, module)
        self.L: Tensor | None = None
        self.R: Tensor | None = None
        self.L_root: Tensor | None = None
        self.R_root: Tensor | None = None
        self.eps: dict[str, float] = {}
        self.graft_sq: Tensor | None = None

    def update_statistics(self, statistics: str, ema_decay: float, lowrank: bool) -> None:
        """Fold this step's G Gᵀ and Gᵀ G into L and R (from the captured rows when exact and cheaper)."""
        pair = self.factored_if_cheaper(
            lowrank, lambda rows: 2 * rows ** 2 * (self.d_out + self.d_in) + rows * (self.d_out ** 2 + self.d_in ** 2))
        dtype = statistics_dtype(self.weight)
        if pair is not None:
            d, x = pair
            gg_t = d.T @ ((x @ x.T) @ d)   # G Gᵀ = Δᵀ (X Xᵀ) Δ
            gtg = x.T @ ((d @ d.T) @ x)    # Gᵀ G = Xᵀ (Δ Δᵀ) X
        else:
            g = self.grad_matrix()
            gg_t, gtg = g @ g.T, g.T @ g
        self.L = self._accumulate(self.L, gg_t.to(dtype), statistics, ema_decay)
        self.R = self._accumulate(self.R, gtg.to(dtype), statistics, ema_decay)

    @staticmethod
    def _accumulate(old: Tensor | None, new: Tensor, statistics: str, ema_decay: float) -> Tensor:
        if statistics == "sum":
            return new if old is None else old.add_(new)
        return running_average(old, new, ema_decay)

    def update_roots(self, rule: str, eps: float, mult: float, exponent: float, eigh_dtype: str) -> None:
        self.L_root, self.eps["L"] = self._inverse_root(self.L, rule, eps, mult, exponent, eigh_dtype)
        self.R_root, self.eps["R"] = self._inverse_root(self.R, rule, eps, mult, exponent, eigh_dtype)

    @staticmethod
    def _inverse_root(stat: Tensor, rule: str, eps: float, mult: float, exponent: float,
                      eigh_dtype: str) -> tuple[Tensor, float]:
        """((S + ε I)^-exponent in S's dtype, ε), by eigh (float64 by default) with eigenvalues clamped at 0."""
        if rule not in DAMPING_RULES:
            raise ValueError(f"unknown Shampoo damping rule {rule!r}; use one of {', '.join(DAMPING_RULES)}")
        decomposition = eigh_psd(stat, EIGH_DTYPES[eigh_dtype])
        if decomposition is None:  # a non-finite statistic (a diverged run): let the loss show it
            return torch.full_like(stat, math.nan), math.nan
        lam, q = decomposition
        value = eps * mult
        if rule == "relative":
            value = finite_or(eps * lam[-1].item(), eps) * mult
        # Q diag((λ + ε)^-e) Qᵀ in the statistic's dtype: the factors (λ + ε)^-e span a small range (≤ ε^-e), so
        # float32 loses nothing that the float32 result would keep, and a float64 product would cost a third of
        # the eigh itself.
        q = q.to(stat.dtype)
        return (q * (lam + value).pow(-exponent).to(stat.dtype)) @ q.T, value

    def precondition(self, lowrank: bool) -> Tensor:
        """(L + ε_L I)^-e G (R + ε_R I)^-e [d_out, d_in] in the parameters' dtype."""
        return self.two_sided(self.L_root, self.R_root, lowrank)

    def graft(self, direction: Tensor, grafting: str, statistics: str, ema_decay: float, graft_eps: float) -> Tensor:
        """``direction`` rescaled to the Frobenius norm of the grafted optimizer's update (sgd or adagrad)."""
        g = self.grad_matrix()
        if grafting == "adagrad":
            self.graft_sq = self._accumulate(self.graft_sq, (g * g).to(statistics_dtype(g)), statistics, ema_decay)
            g = g / (self.graft_sq.sqrt() + graft_eps)
        norm = torch.linalg.matrix_norm(direction)
        return direction * torch.where(norm > 0, torch.linalg.matrix_norm(g) / norm, 0.0).to(direction.dtype)


class Shampoo(LayerwiseOptimizer):
    """Shampoo as a ``torch.optim.Optimizer`` (see the module docstring for the maths).

    Args:
        params: the model (every Linear/Conv2d layer preconditioned, weight and bias together; other parameters
            SGD), param groups (e.g. ``plan.param_groups(model, lr)``: a group with ``layer`` and params
            [weight] or [weight, bias] is preconditioned, others get SGD), or plain tensors (e.g.
            ``model.parameters()``: each tensor of ≥ 2 dimensions is preconditioned on its own as
            shape[0] × the rest, 1-D tensors get SGD). Group keys: ``lr``, ``momentum``, ``weight_decay``,
            ``damping`` (ε), ``damping_rule``, ``damping_eps`` (ε multiplier m).
        lr, momentum, weight_decay: as torch.optim.SGD (weight decay is added after preconditioning).
        damping: ε. damping_rule: constant | somup | relative. exponent: e per side (> 0).
        statistics: ema | sum. ema_decay: weight of the old statistic in the running average, in [0, 1).
        statistics_interval, inverse_interval: steps between statistics and between inverse-root updates.
        grafting: none | sgd | adagrad; graft_eps: AdaGrad's ε. eigh_dtype: float64 | float32 (inverse roots).
        model: the network, when ``params`` are groups: enables the exact factored form (``lowrank``) through
            hooks on the groups' layers. Without it Shampoo works from ``.grad`` alone.
    """

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0,
                 damping: float = 1e-4, damping_rule: str = "relative", exponent: float = 0.25,
                 statistics: str = "ema", ema_decay: float = 0.95, statistics_interval: int = 1,
                 inverse_interval: int = 1, grafting: str = "none", graft_eps: float = 1e-8,
                 eigh_dtype: str = "float64", model: nn.Module | None = None, lowrank: bool = True):
        for key, value, choices in (("damping_rule", damping_rule, DAMPING_RULES),
                                    ("statistics", statistics, STATISTICS), ("grafting", grafting, GRAFTING),
                                    ("eigh_dtype", eigh_dtype, tuple(EIGH_DTYPES))):
            if value not in choices:
                raise ValueError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        if not exponent > 0:
            raise ValueError(f"exponent must be > 0, got {exponent}")
        self.exponent, self.statistics, self.ema_decay = exponent, statistics, ema_decay
        self.grafting, self.graft_eps, self.eigh_dtype = grafting, graft_eps, eigh_dtype
        if not isinstance(params, nn.Module):
            params = list(params)
            if params and all(isinstance(p, Tensor) for p in params):
                params = [{"params": [p], "layer": f"tensor{i}"} if p.dim() >= 2 else {"params": [p]}
                          for i, p in enumerate(params)]
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "damping": damping,
                    "damping_rule": damping_rule, "damping_eps": 1.0}
        super().__init__(params, defaults, model=model, statistics_interval=statistics_interval,
                         inverse_interval=inverse_interval, lowrank=lowrank)

    def make_layer(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None) -> ShampooLayer:
        return ShampooLayer(name, weight, bias, module if supported(module) else None)

    def layer_direction(self, layer: ShampooLayer, group: dict, update_statistics: bool,
                        update_inverse: bool) -> Tensor:
        if update_statistics or layer.L is None:
            layer.update_statistics(self.statistics, self.ema_decay, self.lowrank)
        if update_inverse or layer.L_root is None:
            layer.update_roots(group["damping_rule"], group["damping"], group["damping_eps"], self.exponent,
                               self.eigh_dtype)
        direction = layer.precondition(self.lowrank)
        if self.grafting != "none":
            direction = layer.graft(direction, self.grafting, self.statistics, self.ema_decay, self.graft_eps)
        return direction

    def damping(self) -> dict[str, dict[str, float]]:
        """ε values in effect per layer: {layer name: {"L": ε_L, "R": ε_R}} (from the last inverse-root update)."""
        return {name: dict(layer.eps) for name, layer in self.layers.items() if layer.eps}
