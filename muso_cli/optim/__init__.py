"""Optimizers: torch's SGD/Adam, and muso's K-FAC and Shampoo, built from the config and a parameterization plan.

Each builder receives the optimizer config node, the model, the plan (per-layer lr and damping multipliers)
and the training loss (K-FAC's MC Fisher samples from the matching predictive distribution).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..parametrize import DAMPING_RULES, Plan
from .kfac import FISHERS, INVERSES, KFAC
from .shampoo import EIGH_DTYPES, GRAFTING, STATISTICS, Shampoo


def _sgd(cfg, model: nn.Module, plan: Plan, loss: str) -> torch.optim.Optimizer:
    groups = plan.param_groups(model, cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def _adam(cfg, model: nn.Module, plan: Plan, loss: str) -> torch.optim.Optimizer:
    groups = plan.param_groups(model, cfg.lr)
    cls = torch.optim.AdamW if cfg.weight_decay > 0 else torch.optim.Adam
    return cls(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)


def _kfac(cfg, model: nn.Module, plan: Plan, loss: str) -> KFAC:
    return KFAC(model, plan.param_groups(model, cfg.lr), lr=cfg.lr, momentum=cfg.momentum,
                weight_decay=cfg.weight_decay, damping=cfg.damping, damping_rule=plan.damping_rule,
                ema_decay=cfg.ema_decay, curvature_interval=cfg.curvature_interval,
                inverse_interval=cfg.inverse_interval, fisher=cfg.fisher, loss=loss, inverse=cfg.inverse,
                lowrank=cfg.lowrank)


def _shampoo(cfg, model: nn.Module, plan: Plan, loss: str) -> Shampoo:
    return Shampoo(plan.param_groups(model, cfg.lr), lr=cfg.lr, momentum=cfg.momentum,
                   weight_decay=cfg.weight_decay, damping=cfg.damping, damping_rule=plan.damping_rule,
                   exponent=cfg.exponent, statistics=cfg.statistics, ema_decay=cfg.ema_decay,
                   statistics_interval=cfg.statistics_interval, inverse_interval=cfg.inverse_interval,
                   grafting=cfg.grafting, eigh_dtype=cfg.eigh_dtype, model=model, lowrank=cfg.lowrank)


BUILDERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"sgd": _sgd, "adam": _adam, "kfac": _kfac,
                                                             "shampoo": _shampoo}
# Validation of each optimizer's config keys (muso_cli.config.validate): key → options of the check
# (> 0 by default; allow_zero: ≥ 0; integer: an int), and keys restricted to a set of choices.
CHECKS: dict[str, dict[str, dict]] = {
    "sgd": {"lr": {}, "momentum": {"allow_zero": True}, "weight_decay": {"allow_zero": True}},
    "adam": {"lr": {}, "eps": {}, "weight_decay": {"allow_zero": True}},
    "kfac": {"lr": {}, "damping": {}, "momentum": {"allow_zero": True}, "weight_decay": {"allow_zero": True},
             "ema_decay": {"allow_zero": True}, "curvature_interval": {"integer": True},
             "inverse_interval": {"integer": True}},
    "shampoo": {"lr": {}, "damping": {}, "momentum": {"allow_zero": True}, "weight_decay": {"allow_zero": True},
                "exponent": {}, "ema_decay": {"allow_zero": True}, "statistics_interval": {"integer": True},
                "inverse_interval": {"integer": True}},
}
CHOICES: dict[str, dict[str, tuple[str, ...]]] = {
    "kfac": {"damping_rule": ("auto", *DAMPING_RULES["kfac"]), "fisher": FISHERS, "inverse": INVERSES},
    "shampoo": {"damping_rule": ("auto", *DAMPING_RULES["shampoo"]), "statistics": STATISTICS,
                "grafting": GRAFTING, "eigh_dtype": tuple(EIGH_DTYPES)},
}


def build(cfg, model: nn.Module, plan: Plan, loss: str = "xent") -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` over ``model`` with the plan's per-layer multipliers."""
    return BUILDERS[cfg.name](cfg, model, plan, loss)


def preconditioner_power(cfg) -> float | None:
    """Total inverse power of a second-order optimizer's preconditioner (None: the table's default)."""
    return 2.0 * cfg.exponent if cfg.name == "shampoo" and "exponent" in cfg else None
