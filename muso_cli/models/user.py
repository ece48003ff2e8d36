"""Your own model, the Hydra way: ``model._target_`` names the class (or function) that builds it.

muso calls it through Hydra's ``instantiate`` with every key of the model node as a named argument, except its
own keys (``MUSO_KEYS``), plus the width under the name ``model.width_arg`` and, when asked, the data's input
shape and number of classes under ``model.input_shape_arg`` / ``model.num_classes_arg``. The same target builds
the model at ``model.width`` and, on the meta device (shapes only, free), the base model at ``model.base_width``
and a delta model at twice that, from which muso reads each parameter's role. A config (your repository's
``conf/model/mynet.yaml``, found through ``--config-dir``)::

    _target_: mypkg.nets.MyNet
    name: mynet              # used in study names and titles
    width_arg: hidden        # MyNet(hidden=...) sets the width
    num_classes_arg: classes # MyNet(classes=...) gets the data's number of classes (null: not passed)
    input_shape_arg: null
    width: 512
    base_width: 64
    dropout: 0.1             # any other key: a named argument of MyNet

With depth (residual blocks whose number transfers, docs/parameterization.md "Depth"), three more keys of muso's::

    depth_arg: n_blocks      # MyNet(n_blocks=...) sets the number of residual blocks (null: no depth axis)
    depth: 8
    base_depth: 2

Without ``depth_arg`` a ``depth`` key is an argument of the model like any other.

The model takes a batch of inputs [N, *input_shape] and returns outputs [N, C] (classification) or [N, T, C]
(a sequence: every position is one term of the loss). See docs/own-code.md, "Your own model".
"""
from __future__ import annotations

from typing import Any

from torch import nn

from .. import targets
from ..errors import UsageError

MUSO_KEYS = ("name", "width", "base_width", "width_arg", "input_shape_arg", "num_classes_arg", "depth_arg")
DEPTH_KEYS = ("depth", "base_depth")  # muso's too when depth_arg names the depth argument
DATA_ARGS = ("width_arg", "input_shape_arg", "num_classes_arg", "depth_arg")


def own_keys(cfg) -> tuple[str, ...]:
    """The keys of the model node muso reads itself (not passed to the target)."""
    return MUSO_KEYS + (DEPTH_KEYS if cfg.get("depth_arg") else ())


def _passed(cfg, input_shape, num_classes, width: int) -> dict[str, Any]:
    """The arguments muso adds: the width, the depth (with depth_arg), and the data's facts the config asks for."""
    out = {cfg.width_arg: int(width)}
    if cfg.get("depth_arg"):
        out[cfg.depth_arg] = int(cfg.depth)
    if cfg.get("input_shape_arg"):
        out[cfg.input_shape_arg] = tuple(input_shape)
    if cfg.get("num_classes_arg"):
        out[cfg.num_classes_arg] = int(num_classes)
    return out


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> nn.Module:
    """``cfg._target_(**arguments, <width_arg>=width, ...)`` (inside the caller's device context); a failure of
    the target, or something that is not an nn.Module, is a UsageError naming model._target_."""
    model = targets.call("model", cfg, own_keys(cfg), **_passed(cfg, input_shape, num_classes, width))
    if not isinstance(model, nn.Module):
        raise UsageError("model._target_", f"{cfg._target_} returned a {type(model).__name__}, not a "
                         f"torch.nn.Module.", "point _target_ at a class or function that returns the network.")
    return model


def check(cfg) -> list[UsageError | None]:
    """Problems with a ``_target_`` model node, found without building the model: muso's keys, the target
    imports, and every argument the config gives (and the width, input-shape and class-count arguments) is one
    it takes."""
    unset = targets.missing("model", cfg)
    if unset:
        return [unset]
    problems: list[UsageError | None] = []
    if not isinstance(cfg.get("name"), str) or not cfg.get("name"):
        problems.append(UsageError("model.name", "a model with _target_ needs a short name (used in study names "
                                   "and titles).", "add `name: mynet` to its config, or model.name=mynet."))
    if "width_arg" not in cfg:
        return [*problems, UsageError("model.width_arg", "is missing: a model with _target_ names the constructor "
                                      "argument that sets its width.", "start from model=custom (or your own model "
                                      "config), not one of muso's models; e.g. model=custom model._target_=...")]
    for key in DATA_ARGS:
        value = cfg.get(key)
        if not (isinstance(value, str) and value.isidentifier()) and not (value is None and key != "width_arg"):
            problems.append(UsageError(f"model.{key}", f"must name an argument of the model's constructor, got "
                                       f"{value!r}.", f"e.g. model.{key}={key.removesuffix('_arg')}."))
    if any(problems):
        return problems
    if cfg.get("depth_arg"):
        missing = [k for k in DEPTH_KEYS if k not in cfg]
        if missing:
            return [UsageError(f"model.{missing[0]}", f"is missing: model.depth_arg={cfg.depth_arg} gives the model a "
                               "depth axis, which needs model.depth (the number of residual blocks) and "
                               "model.base_depth (the depth the hyperparameters are tuned at).",
                               f"add `{missing[0]}: 2` to the model's config, or +model.{missing[0]}=2.")]
    names = {f"model.{k}": k for k in targets.arguments(cfg, own_keys(cfg))}
    names.update({f"model.{key}": cfg.get(key) for key in DATA_ARGS if cfg.get(key)})
    return targets.unknown_arguments("model", cfg, names)
