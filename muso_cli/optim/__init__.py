"""The optimizers muso builds: one registry entry each (torch's SGD and AdamW, muso's K-FAC, Shampoo, Muon and
SOAP).

An entry knows how to build its optimizer from the optimizer config node, the model, the parameterization
plan (per-layer lr, weight-decay and damping multipliers) and the training loss, which of its config keys set
the preconditioner's power for the plan's lr rule, and what muso says about the optimizer elsewhere: the note in
`muso params`' header (:func:`params_note`) and the warnings of its known pitfalls (:func:`pitfalls`). Its checks
are the optimizer's own: :func:`check` builds it (on the meta model validation already has) and turns the
constructor's ValueError into a UsageError naming the config key. K-FAC, Shampoo, SOAP and Muon are built
generically (:func:`_generic`): their config keys are their constructor's argument names. Adding an optimizer
means: its module, its entry here, its column in the table (muso_cli.parametrize), its YAML under
conf/optimizer/, and its tests.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..errors import HyperparameterError, UsageError, check_bool, check_positive, check_unit_interval
from ..parametrize import Plan
from .checks import Check, check_hyperparameters, decay, non_negative
from .kfac import KFAC
from .muon import Muon
from .shampoo import Shampoo
from .soap import SOAP

# Keys of an optimizer config node that are not constructor arguments: the name, and what the plan reads
# (the plan resolves damping_rule and writes it into the groups itself).
PLAN_KEYS = ("name", "damping_rule")


def _sgd(cfg, model: nn.Module, plan: Plan, loss: str) -> torch.optim.Optimizer:
    return torch.optim.SGD(plan.param_groups(model, cfg.lr, weight_decay=cfg.weight_decay), lr=cfg.lr,
                           momentum=cfg.momentum, nesterov=bool(cfg.nesterov) and cfg.momentum > 0)


def _adamw(cfg, model: nn.Module, plan: Plan, loss: str) -> torch.optim.Optimizer:
    # AdamW with weight decay 0 is Adam, step for step; the groups carry the plan's width-aware decay
    return torch.optim.AdamW(plan.param_groups(model, cfg.lr, weight_decay=cfg.weight_decay), lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def _generic(cls: type, *, takes_model: bool = True, takes_loss: bool = False,
             rest_lr: str | None = None) -> Callable[..., torch.optim.Optimizer]:
    """The builder of one of muso's optimizers: ``cls(groups, model=model, **options)`` with the plan's groups
    and every key of the config node but PLAN_KEYS as a constructor argument (the keys are the argument names);
    ``model`` only when the optimizer ``takes_model`` (its hooks need it), ``loss`` (the training loss) too when
    it ``takes_loss``. ``rest_lr``: the config key of the base lr of the rest (muso_cli.parametrize.UPDATED_LIKE)."""

    def build(cfg, model: nn.Module, plan: Plan, loss: str) -> torch.optim.Optimizer:
        options = {key: value for key, value in cfg.items() if key not in PLAN_KEYS}
        for key in ("params", "model", "loss"):
            if key in options:
                raise HyperparameterError(key, f"is not an option of optimizer={cfg.name}.",
                                          f"remove it; the options are in conf/optimizer/{cfg.name}.yaml.")
        groups = plan.param_groups(model, cfg.lr, weight_decay=cfg.weight_decay,
                                   rest_lr=cfg.get(rest_lr) if rest_lr else None)
        per_layer = sorted({key for group in groups for key in group} & (options.keys() - {"lr", "weight_decay"}))
        if per_layer:  # the groups would silently override it
            raise HyperparameterError(per_layer[0], "is set per layer by the parameterization.",
                                      f"remove it; muso params shows the values (conf/optimizer/{cfg.name}.yaml).")
        return cls(groups, **({"model": model} if takes_model else {}), **options,
                   **({"loss": loss} if takes_loss else {}))

    return build


@dataclass(frozen=True)
class Entry:
    """One optimizer muso can build.

    build(cfg, model, plan, loss) → the optimizer. power(cfg): the preconditioner's total inverse power when a
    hyperparameter sets it (Shampoo: 2·exponent), else None (the table's own). torch_errors: fragments of
    torch's ValueError messages → the config key they are about (torch's optimizers raise plain ValueErrors).
    params_note(cfg) → a note for `muso params`' header line, "key=value" of a width rule of the optimizer outside
    the table ('' for none). pitfalls(cfg) → a warning for each known pitfall of the whole composed config
    (``cfg.optimizer`` with ``cfg.param``, ``cfg.model``, …), one paragraph each. ``cfg`` is the optimizer config
    node except in pitfalls. checks: the config keys' checks (muso_cli.optim.checks) for an optimizer whose
    constructor does not check them all (torch's: SGD and AdamW check only the defaults, not the groups the plan
    makes). state(cfg, plan) → the elements of the optimizer's state (its size: muso_cli.setup.estimate_size).
    """

    build: Callable[..., torch.optim.Optimizer]
    power: Callable[..., float | None] = lambda cfg: None
    torch_errors: dict[str, str] = field(default_factory=dict)
    params_note: Callable[..., str] = lambda cfg: ""
    pitfalls: Callable[..., list[str]] = lambda cfg: []
    checks: dict[str, Check] = field(default_factory=dict)
    state: Callable[..., int] = lambda cfg, plan: 2 * _elements(plan)


_TORCH_ERRORS = {"learning rate": "lr", "momentum": "momentum", "weight_decay": "weight_decay",
                 "epsilon": "eps", "beta parameter at index 0": "beta1", "beta parameter at index 1": "beta2",
                 "Nesterov": "nesterov"}



def _kfac_pitfalls(cfg) -> list[str]:
    if not cfg.param.get("readout_zero_init"):
        return []
    return ["param.readout_zero_init=true with optimizer=kfac: the first K-FAC step then solves kernel (NNGP) ridge "
            "regression and features stop learning, worst at large batch (Ishikawa & Karakida 2024, Sec. 4.3). "
            "Prefer the µP readout init (readout_zero_init=false)."]


def _elements(plan: Plan, layers_only: bool = False) -> int:
    """Elements of the model's parameters (tied ones once), or of its layers' weights only."""
    return sum(math.prod(s.shape) for s in plan.specs.values() if not layers_only or (s.layer and not s.is_bias))


def _factors(plan: Plan) -> int:
    """Σ over layers of d_out² + d_in² (d_in with the bias column): the elements of one pair of Kronecker factors
    per layer (K-FAC's A and B, Shampoo's and SOAP's L and R)."""
    dims: dict[str, list[int]] = {}
    for s in plan.specs.values():
        if s.layer is not None:
            d = dims.setdefault(s.layer, [0, 0])
            if s.is_bias:
                d[1] += 1
            else:
                d[0], d[1] = s.shape[0], d[1] + math.prod(s.shape[1:])
    return sum(d_out ** 2 + d_in ** 2 for d_out, d_in in dims.values())


def _momentum(cfg, plan: Plan) -> int:
    return _elements(plan) if cfg.get("momentum") else 0


_GRAFTED_STATE = {"adam": 2, "adagrad": 1}  # Shampoo's grafting: moments per parameter
_SGD_CHECKS = {"momentum": lambda key, value: check_unit_interval(key, value, 0.9), "nesterov": check_bool,
               "weight_decay": non_negative}
_ADAM_CHECKS = {"beta1": decay, "beta2": decay, "eps": non_negative, "weight_decay": non_negative}

REGISTRY: dict[str, Entry] = {
    "sgd": Entry(_sgd, torch_errors=_TORCH_ERRORS, checks=_SGD_CHECKS, state=_momentum),
    "adam": Entry(_adamw, torch_errors=_TORCH_ERRORS, checks=_ADAM_CHECKS),
    # factors and their inverses (or inverse roots, or eigenbases), then what the rest of the state holds
    "kfac": Entry(_generic(KFAC, takes_loss=True), pitfalls=_kfac_pitfalls,
                  state=lambda cfg, plan: 2 * _factors(plan) + _momentum(cfg, plan)),
    "shampoo": Entry(_generic(Shampoo), power=lambda cfg: 2.0 * cfg.exponent,
                     state=lambda cfg, plan: 2 * _factors(plan) + _momentum(cfg, plan)
                     + _GRAFTED_STATE.get(cfg.get("grafting"), 0) * _elements(plan)),
    # adjust_lr_fn is a shape rule outside the table: say whether it is neutralised (none) or in the lr column
    "muon": Entry(_generic(Muon, takes_model=False, rest_lr="adamw_lr"),
                  params_note=lambda cfg: f"adjust_lr_fn={cfg.get('adjust_lr_fn', 'none')}",
                  state=lambda cfg, plan: 2 * _elements(plan) - _elements(plan, layers_only=True)),
    "soap": Entry(_generic(SOAP), state=lambda cfg, plan: 2 * _factors(plan) + 2 * _elements(plan)),
}


def build(cfg, model: nn.Module, plan: Plan, loss: str = "xent") -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` over ``model`` with the plan's per-layer multipliers."""
    return REGISTRY[cfg.name].build(cfg, model, plan, loss)


def step_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """{parameter name: the learning rate the optimizer steps it with}, for `muso params`: its group's ``lr``, or
    what the optimizer's own ``step_lr(group, param)`` makes of it (Muon: torch's adjust_lr_fn shape factor)."""
    step_lr = getattr(optimizer, "step_lr", lambda group, p: group["lr"])
    return {name: step_lr(group, p) for group in optimizer.param_groups
            for name, p in zip(group["param_names"], group["params"])}


def state_elements(cfg, plan: Plan) -> int:
    """Elements of the state optimizer ``cfg`` keeps for the plan's model (moments, factors, their inverses)."""
    return REGISTRY[cfg.name].state(cfg, plan)


def power(cfg) -> float | None:
    """Total inverse power of the preconditioner set by ``cfg``'s hyperparameters (None: the table's)."""
    return REGISTRY[cfg.name].power(cfg)


def params_note(cfg) -> str:
    """The note on optimizer config ``cfg`` for `muso params`' header line, e.g. "adjust_lr_fn=none" for Muon
    ('' when the optimizer has none)."""
    return REGISTRY[cfg.name].params_note(cfg)


def pitfalls(cfg) -> list[str]:
    """Warnings of the known pitfalls of the whole composed config ``cfg`` for its optimizer (``cfg.optimizer``),
    one paragraph each; none for an optimizer muso does not know (validation reports that)."""
    entry = REGISTRY.get(cfg.optimizer.get("name"))
    return entry.pitfalls(cfg) if entry is not None else []


def check(cfg, model: nn.Module, plan: Plan, loss: str = "xent") -> list[UsageError]:
    """Build the optimizer on ``model`` (the meta model costs nothing) and report what its constructor refuses,
    as UsageErrors naming ``optimizer.<key>``. Unknown keys (``+optimizer.foo=1``) are refused too.

    The base learning rate must be > 0 for every optimizer (torch accepts 0; a study of lr 0 learns nothing), the
    entry's ``checks`` hold, and Nesterov needs momentum."""
    bad_lr = check_positive("optimizer.lr", cfg.get("lr"))
    if bad_lr:
        return [bad_lr]
    problems = check_hyperparameters({k: v for k, v in cfg.items() if k in REGISTRY[cfg.name].checks},
                                     REGISTRY[cfg.name].checks)
    if problems:
        return [UsageError(f"optimizer.{e.key}", e.problem, e.fix) for e in problems]
    if cfg.get("nesterov") is True and cfg.get("momentum") == 0:
        return [UsageError("optimizer.nesterov", "is true with optimizer.momentum=0: Nesterov's look-ahead needs "
                           "momentum, so it would change nothing.", "set optimizer.momentum > 0 (e.g. 0.9), or "
                           "optimizer.nesterov=false.")]
    try:
        build(cfg, model, plan, loss)
    except HyperparameterError as e:
        return [UsageError(f"optimizer.{e.key}", e.problem, e.fix or f"see conf/optimizer/{cfg.name}.yaml.")]
    except TypeError as e:
        m = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if not m:
            raise
        return [UsageError(f"optimizer.{m.group(1)}", f"is not an option of optimizer={cfg.name}.",
                           f"remove it; the options are in conf/optimizer/{cfg.name}.yaml.")]
    except ValueError as e:
        key = next((k for fragment, k in REGISTRY[cfg.name].torch_errors.items() if fragment in str(e)), "name")
        return [UsageError(f"optimizer.{key}", f"{e}.", f"see conf/optimizer/{cfg.name}.yaml.")]
    return []


__all__ = ["KFAC", "REGISTRY", "Entry", "Muon", "SOAP", "Shampoo", "build", "check", "params_note", "pitfalls",
           "power", "state_elements", "step_lrs"]
