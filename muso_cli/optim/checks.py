"""The checks of the optimizers' hyperparameters: one per fact, as data (key → check), so that an optimizer's
``CHECKS`` table reads as its argument list. A check returns None or the UsageError of the ground layer
(muso_cli.errors); :func:`check_hyperparameters` turns each into the HyperparameterError of its key, which the
optimizers raise (the registry, muso_cli.optim, reports it as ``optimizer.<key>``).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable

from .. import parametrize
from ..errors import HyperparameterError, UsageError, check_one_of, check_positive, check_unit_interval

Check = Callable[[str, Any], UsageError | None]


def non_negative(key: str, value: Any) -> UsageError | None:
    return check_positive(key, value, allow_zero=True)


def positive(key: str, value: Any) -> UsageError | None:
    return check_positive(key, value)


def interval(key: str, value: Any) -> UsageError | None:
    """A number of steps between two updates: an integer > 0."""
    return check_positive(key, value, integer=True)


def decay(key: str, value: Any) -> UsageError | None:
    """A running average's weight of the old value: in [0, 1)."""
    return check_unit_interval(key, value, 0.95)


def one_of(choices: Iterable[str]) -> Check:
    choices = tuple(choices)
    return lambda key, value: check_one_of(key, value, choices)


def check_hyperparameters(values: dict, checks: dict[str, Check], where: str = "") -> list[HyperparameterError]:
    """The HyperparameterError of every entry of ``values`` its check refuses, in ``values``' order (keys without
    a check pass). ``where`` is appended to each problem (e.g. which param group)."""
    problems = []
    for key, value in values.items():
        error = checks[key](key, value) if key in checks else None
        if error is not None:
            problems.append(HyperparameterError(key, f"{error.problem.rstrip('.')}{where}.", error.fix))
    return problems


def damping_checks(optimizer: str) -> dict[str, Check]:
    """The damping hyperparameters of ``optimizer``'s column of the damping table (muso_cli.parametrize):
    ρ > 0, one of its rules, and its per-layer multipliers ``damping_<factor>`` > 0."""
    rules = parametrize.DAMPING[optimizer]
    factors = dict.fromkeys(factor for rule in rules.values() for factor in rule)
    return {"damping": positive, "damping_rule": one_of(rules), **{f"damping_{f}": positive for f in factors}}


def renamed(old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of argument ``new``, or of its deprecated alias ``old`` when that was given (a FutureWarning,
    which says so when the two differ: the alias wins)."""
    if old_value is None:
        return new_value
    wins = "" if old_value == new_value else f"; {old}={old_value} is used, over {new}={new_value}"
    warnings.warn(f"{old} is deprecated: it was renamed {new} (same meaning){wins}. Fix: remove {old} and set "
                  f"{new}={old_value}", FutureWarning, stacklevel=3)
    return old_value


__all__ = ["Check", "check_hyperparameters", "damping_checks", "decay", "interval", "non_negative", "one_of",
           "positive", "renamed"]
