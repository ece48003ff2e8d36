"""Configuration: Hydra composition with friendly errors, and validation before any work starts.

Every command composes its config through :func:`compose` (Hydra's override grammar, the tree under
``conf/``) and checks it with :func:`validate`. Bad input raises :class:`UsageError`, which the CLI prints
as one paragraph naming the key and the fix, with exit status 2.
"""
from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import UsageError, UsageErrors

CONF_DIR = Path(__file__).resolve().parent / "conf"  # a link to the repository's conf/ (packaged with it)


def group_options(group: str, config_dir: Path = CONF_DIR) -> list[str]:
    """Names of the options of a config group (the yaml files under conf/<group>/)."""
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def compose(overrides: Sequence[str] = (), *, config_name: str = "config") -> DictConfig:
    """Compose the config tree with Hydra overrides (``key=value``, ``group=option``, ``+key=value``).

    Raises UsageError for unknown groups/options/keys and unparsable overrides.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import (ConfigCompositionException, MissingConfigException,
                              OverrideParseException)

    overrides = list(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="muso"):
        try:
            return hydra_compose(config_name, overrides=overrides)
        except MissingConfigException as e:
            failure: Exception = e
        except (OverrideParseException, ConfigCompositionException) as e:
            failure = e
    # Build the message outside Hydra's global context: it may compose the defaults to list valid keys.
    if isinstance(failure, MissingConfigException):
        raise _missing_option_error(str(failure)) from None
    if isinstance(failure, OverrideParseException):
        first = str(failure).splitlines()[0].replace("Error parsing override ", "override ")
        raise UsageError(first, "is not valid Hydra override syntax.",
                         "write key=value, group=option or +new_key=value "
                         "(https://hydra.cc/docs/advanced/override_grammar/basic/).") from None
    raise _composition_error(str(failure)) from None


def _missing_option_error(message: str) -> UsageError:
    m = re.search(r"Could not find '([^']+)'", message)
    missing = m.group(1) if m else "?"
    group, _, option = missing.rpartition("/")
    if not group:  # a whole group that does not exist, e.g. `foo=bar`
        return UsageError(missing, "is not a config group or key.",
                          f"config groups are: {', '.join(_groups())}.")
    options = group_options(group)
    return UsageError(group, f"has no option '{option}'. Available {group} options: {', '.join(options)}.",
                      f"pick one of them, e.g. {group}={options[0] if options else '...'}.")


def _composition_error(message: str) -> UsageError:
    m = re.search(r"Could not override '([^']+)'", message)
    if m:
        key = m.group(1)
        parent = key.rpartition(".")[0]
        known = ""
        if parent:
            try:
                node = OmegaConf.select(compose(()), parent)
                if isinstance(node, DictConfig):
                    known = f" Keys under {parent}: {', '.join(map(str, node.keys()))}."
            except UsageError:
                pass
        return UsageError(key, f"is not a config key.{known}",
                          f"check the spelling; to add a new key on purpose use +{key}=<value>.")
    m = re.search(r"Ambiguous value for argument '([^=']+)=", message)
    if m:
        return UsageError(m.group(1), "has a comma-separated value, which is a sweep.",
                          "use -m (multirun) to sweep, key=[a,b] for a list, or quote the value.")
    return UsageError("overrides", message.splitlines()[0], "see `muso --help`.")


def _groups() -> list[str]:
    return sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())


# --------------------------------------------------------------------------------------------------------
# Validation: semantic checks of a composed config. Each check names its key and the fix.

def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _positive(cfg: DictConfig, key: str, *, integer: bool = False, allow_zero: bool = False,
              optional: bool = False) -> UsageError | None:
    value = OmegaConf.select(cfg, key)
    if value is None and optional:
        return None
    ok = (_is_int(value) if integer else _is_number(value)) and (value >= 0 if allow_zero else value > 0)
    if ok:
        return None
    what = "an integer" if integer else "a number"
    bound = "≥ 0" if allow_zero else "> 0"
    return UsageError(key, f"must be {what} {bound}, got {value!r}.", f"set {key} to {what} {bound}.")


def _one_of(cfg: DictConfig, key: str, choices: Iterable[str]) -> UsageError | None:
    value = OmegaConf.select(cfg, key)
    choices = list(choices)
    if value in choices:
        return None
    return UsageError(key, f"must be one of {', '.join(choices)}; got {value!r}.", f"e.g. {key}={choices[0]}.")


def validate(cfg: DictConfig, *, check_data: bool = True) -> DictConfig:
    """Check a composed config; raise UsageError(s) naming each bad key. Returns cfg for chaining."""
    from . import data as data_mod
    from . import models, optim
    from .parametrize import PARAMS

    errors: list[UsageError | None] = []
    add = errors.append
    add(_one_of(cfg, "model.name", models.REGISTRY))
    add(_positive(cfg, "model.width", integer=True))
    add(_positive(cfg, "model.base_width", integer=True))
    add(_one_of(cfg, "param.name", PARAMS))
    add(_positive(cfg, "param.sigma"))
    opt = cfg.optimizer.get("name")
    if opt not in optim.REGISTRY:
        add(UsageError("optimizer.name", f"unknown optimizer {opt!r}.", f"use one of {', '.join(optim.REGISTRY)}."))
    add(_positive(cfg, "train.steps", integer=True, optional=True))
    add(_positive(cfg, "train.epochs"))
    add(_positive(cfg, "train.batch_size", integer=True))
    add(_positive(cfg, "train.eval_every", integer=True))
    add(_positive(cfg, "train.eval_train_samples", integer=True))
    add(_positive(cfg, "train.eval_batch_size", integer=True))
    add(_positive(cfg, "train.warmup_steps", integer=True, allow_zero=True))
    add(_positive(cfg, "train.checkpoint_every", integer=True, allow_zero=True))
    add(_positive(cfg, "train.threads", integer=True, optional=True))
    add(_one_of(cfg, "train.loss", ("xent", "mse")))
    add(_one_of(cfg, "train.lr_schedule", ("constant", "cosine", "linear")))
    df = cfg.train.diverge_factor
    if not (_is_number(df) and df > 1):
        add(UsageError("train.diverge_factor", f"must be a number > 1, got {df!r}.", "e.g. train.diverge_factor=10."))
    add(_check_device(cfg.device))
    add(_one_of(cfg, "data.name", data_mod.REGISTRY))
    add(_positive(cfg, "data.n_train", integer=True, optional=True))
    add(_positive(cfg, "data.n_test", integer=True, optional=True))
    add(_one_of(cfg, "logger.mode", ("disabled", "offline", "online")))
    if cfg.model.name in models.REGISTRY:
        errors += models.check(cfg.model)
    errors = [e for e in errors if e is not None]
    if not errors:  # model and data must fit together (e.g. a CNN needs images): build it for free on meta
        try:
            from .train import build_model_and_plan
            model, plan = build_model_and_plan(cfg, *data_mod.spec(cfg.data), device="meta")
            errors += optim.check(cfg.optimizer, model, plan, cfg.train.loss)
        except UsageError as e:
            errors.append(e)
    if check_data and not errors:
        try:
            data_mod.check_available(cfg.data)
        except UsageError as e:
            errors.append(e)
    if errors:
        raise errors[0] if len(errors) == 1 else UsageErrors(errors)
    _warn_known_pitfalls(cfg)
    return cfg


def check_widths(key: str, widths: Any, *, minimum: int = 1, at_least: int = 1) -> list[int]:
    """A list of positive integer widths ≥ ``minimum`` with at least ``at_least`` entries, or UsageError."""
    values = list(widths) if isinstance(widths, (list, tuple)) or OmegaConf.is_list(widths) else [widths]
    if not values or not all(_is_int(w) and w >= 1 for w in values):
        raise UsageError(key, f"must be a list of positive integers, got {widths!r}.", f"e.g. {key}=[256,1024].")
    small = [w for w in values if w < minimum]
    if small:
        raise UsageError(key, f"has widths {small} below the base width {minimum}.",
                         f"use widths ≥ {minimum}, or lower model.base_width.")
    if len(set(values)) < at_least:
        raise UsageError(key, f"needs at least {at_least} different widths, got {values}.",
                         f"e.g. {key}=[64,256,1024].")
    return values


def _check_device(device: Any) -> UsageError | None:
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        return UsageError("device", f"must be auto, cpu, cuda or cuda:N; got {device!r}.", "e.g. device=cpu.")
    if device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            return UsageError("device", f"{device} was asked for but CUDA is not available here.",
                              "use device=auto or device=cpu.")
    return None


def _warn_known_pitfalls(cfg: DictConfig) -> None:
    if cfg.param.get("readout_zero_init") and cfg.optimizer.name == "kfac":
        warnings.warn("param.readout_zero_init=true with optimizer=kfac: the first K-FAC step then solves kernel "
                      "(NNGP) ridge regression and features stop learning, worst at large batch "
                      "(Ishikawa & Karakida 2024, Sec. 4.3). Prefer the µP readout init (readout_zero_init=false).",
                      UserWarning, stacklevel=2)


def to_container(cfg: DictConfig) -> dict:
    """Plain, resolved dict of a config (without Hydra's own node)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    return out
