"""Validation: one pass over a composed config, before any work starts.

Each part checks its own keys, once, where the facts live: the run set-up (seed, device, ``train.*``), the model,
the data, the W&B mirror, the parameterization's choices (from the table), and the optimizer, which is built on
the meta model (free: shapes only) so that its own constructor decides what it accepts. Studies and the
coordinate check add their keys through :func:`muso_cli.study.spec.parse_spec` and :func:`muso_cli.coord.parse_coord`.
Every problem is a UsageError naming the key and the fix; several are reported together.
"""
from __future__ import annotations

import warnings

from omegaconf import DictConfig, OmegaConf

from . import data, models, optim, setup, track, trainers
from .config import CONF_DIR, REMOVED_KEYS, compose
from .errors import UsageError, check_bool, check_one_of, check_positive, raise_all
from .parametrize import DAMPING_RULES, PARAMS, WEIGHT_DECAY, is_damped


def compose_valid(overrides, *, check_data: bool = True) -> DictConfig:
    """Compose (muso_cli.config.compose) and validate, refusing ``+keys`` muso does not read; warnings from
    validation are shown once each, as warnings."""
    cfg = compose(overrides)
    check_added_keys(cfg, overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        validate(cfg, check_data=check_data)
    return cfg


def validate(cfg: DictConfig, *, check_data: bool = True) -> DictConfig:
    """Check a composed config; raise UsageError(s) naming each bad key. Returns cfg for chaining.

    ``check_data``: also check that the dataset can be loaded (its files exist or can be downloaded).
    """
    raise_all([*setup.check(cfg), *models.check(cfg.model), *data.check(cfg.data, files=False),
               *track.check(cfg.logger), *_check_param(cfg), *trainers.check(cfg)])
    n_train = cfg.data.get("n_train")
    if n_train is not None and n_train < cfg.train.batch_size:
        raise UsageError("data.n_train", f"{n_train} training examples cannot fill a batch of train.batch_size="
                         f"{cfg.train.batch_size}.", "use more examples or a smaller train.batch_size.")
    # the model must fit the data (a CNN needs images) and the optimizer its hyperparameters: build both on meta
    model, plan = setup.build_model_and_plan(cfg, *data.spec(cfg.data), device="meta")
    raise_all(optim.check(cfg.optimizer, model, plan, cfg.train.loss))
    if check_data:
        raise_all(data.check(cfg.data))
    _warn_known_pitfalls(cfg)
    return cfg


def check_added_keys(cfg: DictConfig, overrides) -> None:
    """Refuse ``+key=value`` overrides that add a key muso does not read: it would be ignored, yet change the
    trial ids of a study. Keys added under a node with ``_target_`` (your own model or data, built by Hydra's
    instantiate) are arguments of that constructor and welcome; ``+group=option`` adds a config group."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException:
        return
    for o in parsed:
        key = o.key_or_group
        if not o.is_add() or key.startswith("hydra"):
            continue
        if key in REMOVED_KEYS:
            raise UsageError(key, *REMOVED_KEYS[key])
        parent = key.rpartition(".")[0]
        node = OmegaConf.select(cfg, parent) if parent else None
        if parent and isinstance(node, DictConfig) and "_target_" in node:
            continue
        if not parent and "." not in key and (CONF_DIR / key).is_dir():
            continue
        raise UsageError(key, f"is not a key muso reads ({o.input_line} adds it); it would be ignored, yet change "
                         "the trial ids of a study.", "check the spelling against `muso run --cfg job`; extra "
                         "arguments belong under a node with _target_ (your own model or data).")


def _check_param(cfg: DictConfig) -> list[UsageError | None]:
    """The parameterization's choices, against the table: param.*, and optimizer.name / damping_rule."""
    p, opt = cfg.param, cfg.optimizer.get("name")
    problems = [check_one_of("param.name", p.name, PARAMS), check_positive("param.sigma", p.sigma),
                check_one_of("param.weight_decay_rule", p.weight_decay_rule, WEIGHT_DECAY),
                check_bool("param.readout_zero_init", p.readout_zero_init),
                check_bool("param.decay_vectors", p.decay_vectors)]
    if opt not in optim.REGISTRY:
        return [*problems, UsageError("optimizer.name", f"unknown optimizer {opt!r}.",
                                      f"use one of {', '.join(optim.REGISTRY)}.")]
    if is_damped(opt):
        problems.append(check_one_of("optimizer.damping_rule", cfg.optimizer.get("damping_rule", "auto"),
                                     ("auto", *DAMPING_RULES[opt])))
    return problems


def _warn_known_pitfalls(cfg: DictConfig) -> None:
    """The optimizer's known pitfalls for this config (its registry entry's), as warnings."""
    for message in optim.pitfalls(cfg):
        warnings.warn(message, UserWarning, stacklevel=3)
