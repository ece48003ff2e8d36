"""The ground layer: usage errors and the small value checks every part of muso uses.

Imports nothing of muso, so data, models, optimizers, the study and the validation may all import it.
A :class:`UsageError` names the offending key and the fix; the CLI prints it as one paragraph with exit
status 2. A :class:`HyperparameterError` is the ``ValueError`` an optimizer raises for a bad constructor
argument: it carries the argument's name, which validation turns into the config key ``optimizer.<name>``.
Each ``check_*`` below returns None when the value is fine, else the UsageError to report (so a validation
pass can collect several problems at once); ``parse_*`` functions raise the UsageError and return the value.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence


class UsageError(Exception):
    """Bad input from the user: names the offending key and says how to fix it (exit status 2)."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.key}: {self.problem}"
        return f"{text} Fix: {self.fix}" if self.fix else text


class UsageErrors(UsageError):
    """Several problems found at once; printed one per line."""

    def __init__(self, errors: Sequence[UsageError]):
        self.errors = list(errors)
        Exception.__init__(self, str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def raise_all(errors: Iterable[UsageError | None]) -> None:
    """Raise the problems found (one UsageError, or UsageErrors for several); nothing when there are none."""
    errors = [e for e in errors if e is not None]
    if errors:
        raise errors[0] if len(errors) == 1 else UsageErrors(errors)


class HyperparameterError(ValueError):
    """A bad optimizer argument. ``key``: the constructor argument (= the config key under ``optimizer.``)."""

    def __init__(self, key: str, problem: str, fix: str = ""):
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"{key}: {problem}" + (f" Fix: {fix}" if fix else ""))


# ------------------------------------------------------------------------------------------------------
# Value checks: None when fine, else the UsageError naming ``key``.

def is_number(x: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(x, int) and not isinstance(x, bool)


def check_positive(key: str, value: Any, *, integer: bool = False, allow_zero: bool = False,
                   optional: bool = False) -> UsageError | None:
    """``value`` > 0 (≥ 0 with allow_zero), an integer when ``integer``; None allowed when ``optional``."""
    if value is None and optional:
        return None
    ok = (is_int(value) if integer else is_number(value)) and (value >= 0 if allow_zero else value > 0)
    if ok:
        return None
    what = "an integer" if integer else "a number"
    bound = "≥ 0" if allow_zero else "> 0"
    return UsageError(key, f"must be {what} {bound}, got {value!r}.", f"set {key} to {what} {bound}.")


def check_unit_interval(key: str, value: Any, example: float) -> UsageError | None:
    """A decay rate: a number in [0, 1)."""
    if is_number(value) and 0 <= value < 1:
        return None
    return UsageError(key, f"must be a number in [0, 1), got {value!r}.", f"e.g. {key}={example}.")


def check_one_of(key: str, value: Any, choices: Iterable[str]) -> UsageError | None:
    """``value`` is one of ``choices``."""
    choices = list(choices)
    if value in choices:
        return None
    return UsageError(key, f"must be one of {', '.join(map(str, choices))}; got {value!r}.",
                      f"e.g. {key}={choices[0]}.")


def check_bool(key: str, value: Any) -> UsageError | None:
    """A real boolean (YAML true/false), not a string such as 'maybe'."""
    if isinstance(value, bool):
        return None
    return UsageError(key, f"must be true or false, got {value!r}.", f"e.g. {key}=true.")


def parse_widths(key: str, values: Any, minimum: int = 1, *, at_least: int = 1) -> list[int]:
    """A list of positive integer widths ≥ ``minimum`` with at least ``at_least`` different entries.

    ``values`` may be a single integer or any sequence (an OmegaConf ListConfig too). Raises UsageError.
    """
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        values = [values]
    values = list(values)
    if not values or not all(is_int(w) and w >= 1 for w in values):
        raise UsageError(key, f"must be a list of positive integers, got {values!r}.", f"e.g. {key}=[256,1024].")
    small = [w for w in values if w < minimum]
    if small:
        raise UsageError(key, f"has widths {small} below the base width {minimum}.",
                         f"use widths ≥ {minimum}, or lower model.base_width.")
    if len(set(values)) < at_least:
        raise UsageError(key, f"needs at least {at_least} different widths, got {values}.",
                         f"e.g. {key}=[64,256,1024].")
    return values
