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
from .errors import UsageError, check_bool, check_one_of, check_positive, is_number, raise_all
from .parametrize import DAMPING_RULES, DEPTH_ALPHAS, PARAMS, WEIGHT_DECAY, is_damped


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
    raise_all(_check_data_fits(cfg))
    # the model must fit the data (a CNN needs images, the GPT tokens) and the optimizer its hyperparameters: build
    # both on meta
    model, plan = setup.build_model_and_plan(cfg, *data.spec(cfg.data), device="meta")
    raise_all([_check_inputs(cfg), *optim.check(cfg.optimizer, model, plan, cfg.train.loss)])
    if check_data:
        raise_all(data.check(cfg.data))
    _warn_known_pitfalls(cfg, plan)
    return cfg


def _check_data_fits(cfg: DictConfig) -> list[UsageError | None]:
    """The data against the run: enough examples for a batch, classes for cross-entropy."""
    n_train, size, batch = cfg.data.get("n_train"), data.train_size(cfg.data), cfg.train.batch_size
    if n_train is not None and n_train < batch:
        return [UsageError("data.n_train", f"{n_train} training examples cannot fill a batch of train.batch_size="
                           f"{batch}.", "use more examples or a smaller train.batch_size.")]
    if size is not None and size < batch:
        return [UsageError("train.batch_size", f"{batch} is more than the {size} training examples of "
                           f"data={cfg.data.name}: no batch could be drawn.", f"use train.batch_size ≤ {size}.")]
    _, classes = data.spec(cfg.data)
    if classes < 2 and cfg.train.loss == "xent":
        return [UsageError("data.num_classes", f"{classes} class leaves cross-entropy nothing to learn (its loss is 0 "
                           "whatever the model does).", "use data with 2 or more classes, or train.loss=mse for a "
                           "single output.")]
    return []


def _check_inputs(cfg: DictConfig) -> UsageError | None:
    """The kind of inputs the model reads (token sequences or float features) against the data's, where shapes
    alone cannot tell (the GPT on vectors, an MLP on text)."""
    wants = models.takes_tokens(cfg.model)
    if wants is None or wants == data.token_inputs(cfg.data):
        return None
    kinds = ("token sequences (integers)", "float features")
    return UsageError("data.name", f"model={cfg.model.name} reads {kinds[not wants]}, and data={cfg.data.name} gives "
                      f"{kinds[wants]}.", "use data=pystdlib (text) with model=gpt, and images or vectors with the "
                      "other models.")


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
                check_bool("param.decay_vectors", p.decay_vectors), _check_depth_alpha(p.get("depth_alpha", 0.0))]
    if opt not in optim.REGISTRY:
        return [*problems, UsageError("optimizer.name", f"unknown optimizer {opt!r}.",
                                      f"use one of {', '.join(optim.REGISTRY)}.")]
    if is_damped(opt):
        problems.append(check_one_of("optimizer.damping_rule", cfg.optimizer.get("damping_rule", "auto"),
                                     ("auto", *DAMPING_RULES[opt])))
    return problems


def _check_depth_alpha(alpha) -> UsageError | None:
    """param.depth_alpha: one of DEPTH_ALPHAS (the residual branch multiplier (L/L₀)^-α)."""
    if is_number(alpha) and float(alpha) in DEPTH_ALPHAS:
        return None
    return UsageError("param.depth_alpha", f"must be one of {', '.join(f'{a:g}' for a in DEPTH_ALPHAS)} (the residual "
                      f"branch multiplier (L/L₀)^-α: 0 none, 0.5 depth-µP, 1 CompleteP), got {alpha!r}.",
                      "e.g. param.depth_alpha=1.")


def _warn_known_pitfalls(cfg: DictConfig, plan) -> None:
    """The optimizer's known pitfalls for this config (its registry entry's) and the model's (what the plan gets
    wrong in silence: muso_cli.models.pitfalls), as warnings."""
    for message in [*optim.pitfalls(cfg), *models.pitfalls(plan)]:
        warnings.warn(message, UserWarning, stacklevel=3)
