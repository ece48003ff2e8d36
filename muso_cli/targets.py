"""Hydra targets: the user's own model and data, named by ``_target_`` and called through Hydra's ``instantiate``.

One place that imports a target, calls it with the config node's keys as named arguments (less the keys muso
reads itself), and turns every failure into a UsageError naming ``<section>._target_``.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable

from omegaconf import OmegaConf

from .errors import UsageError

HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")
IMPORTABLE = ("make your package importable where muso runs (and where its launchers run trials): "
              "`pip install -e <your project>`, or PYTHONPATH=<its folder>.")


def has_target(cfg) -> bool:
    """Whether a config node names a target of its own: ``_target_`` set, or still the mandatory ``???`` of
    model=custom / data=custom (:func:`missing` then says so)."""
    return "_target_" in cfg.keys()


def missing(section: str, cfg) -> UsageError | None:
    """The UsageError for a ``_target_`` left at ``???`` (model=custom or data=custom without one), else None."""
    if not OmegaConf.is_missing(cfg, "_target_"):
        return None
    what = "class or function that builds your model" if section == "model" else "function that loads your data"
    example = "mypkg.nets.MyNet" if section == "model" else "mypkg.data.load"
    return UsageError(f"{section}._target_", f"is not set: {section}=custom needs the {what}.",
                      f"e.g. {section}._target_={example} (importable where muso runs), or a {section} config of "
                      "your own (--config-dir).")


def arguments(cfg, own_keys: Iterable[str]) -> dict[str, Any]:
    """The named arguments ``cfg`` gives its target: every key but ``own_keys`` and Hydra's."""
    skip = set(own_keys) | set(HYDRA_KEYS)
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in skip}


def locate(section: str, cfg) -> tuple[Any, UsageError | None]:
    """(the object ``cfg._target_`` names, None), or (None, the UsageError saying why it cannot be imported)."""
    from hydra.utils import get_object

    try:
        target = get_object(cfg._target_)
    except Exception as e:
        cause = e.__cause__ or e
        return None, UsageError(f"{section}._target_", f"cannot import {cfg._target_!r}: {type(cause).__name__}: "
                                f"{str(cause).splitlines()[0]}.", IMPORTABLE)
    if not callable(target):
        return None, UsageError(f"{section}._target_", f"{cfg._target_} is not a class or function.",
                                "point _target_ at the class or function that builds it.")
    return target, None


def unknown_arguments(section: str, cfg, names: dict[str, str]) -> list[UsageError]:
    """UsageErrors for the keys (``{config key: argument name}``) whose argument the target does not take
    (none when it takes ``**kwargs`` or has no signature to read)."""
    target, error = locate(section, cfg)
    if error:
        return [error]
    try:
        takes = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return []
    if any(p.kind == p.VAR_KEYWORD for p in takes.values()):
        return []
    return [UsageError(key, f"{cfg._target_} takes no argument {arg!r} (it takes {', '.join(takes) or 'none'}).",
                       f"rename or remove {key}.") for key, arg in names.items() if arg not in takes]


def call(section: str, cfg, own_keys: Iterable[str], **passed) -> Any:
    """``cfg._target_(**arguments(cfg, own_keys), **passed)`` through Hydra's instantiate (plain containers for
    list and dict values). Any failure is a UsageError naming ``<section>._target_``, with the call in it."""
    from hydra.utils import instantiate

    args = arguments(cfg, own_keys)
    node = {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k in HYDRA_KEYS or k in args}
    shown = ", ".join(f"{k}={v!r}" for k, v in {**args, **passed}.items())
    try:
        return instantiate(OmegaConf.create(node), **passed, _convert_="all")
    except Exception as e:
        cause = e.__cause__ or e
        raise UsageError(f"{section}._target_", f"{cfg._target_}({shown}) failed: {type(cause).__name__}: {cause}",
                         f"fix its arguments (the keys of the {section} config) or the code it runs.") from None
