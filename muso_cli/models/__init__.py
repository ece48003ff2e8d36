"""Models with a width knob (hidden units, a channel multiplier for convolutional nets, d_model for transformers),
some with a depth knob too (residual blocks: the residual MLP, the GPT, the ViT), and your own (``model._target_``,
see :mod:`muso_cli.models.user`).

``build(cfg.model, input_shape, num_classes, width, depth=...)`` returns an ``nn.Module``; the parameterization finds
each parameter's role by comparing it with the same model built at ``cfg.model.base_width`` on the meta device, and,
for a model with depth (:func:`has_depth`), its residual blocks by comparing the model at ``cfg.model.base_depth``
with one a block deeper. :func:`check_plan` then refuses, naming the parameter, what muso cannot parameterize.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from torch import nn

from .. import targets
from ..errors import UsageError, check_one_of, check_positive, is_int
from ..parametrize import LAYERWISE, DepthMultiplier, Plan, splits_tensors
from . import user

# model name → module implementing build(cfg, input_shape, num_classes, width) and check(cfg)
REGISTRY = {
    "mlp": "muso_cli.models.mlp",
    "resmlp": "muso_cli.models.resmlp",
    "cnn": "muso_cli.models.cnn",
    "myrtle": "muso_cli.models.myrtle",
    "resnet18": "muso_cli.models.resnet",
    "vgg19": "muso_cli.models.vgg",
    "vit": "muso_cli.models.vit",
    "gpt": "muso_cli.models.gpt",
}

# Modules whose weight layout muso knows (which dimension is the fan-in): a width-scaling matrix held by none of
# them has roles that shapes cannot tell apart (is a [64, 256] tensor 64 → 256 or 256 → 64?).
KNOWN_LAYOUTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)


def is_user_model(cfg) -> bool:
    """Whether the model node names its own target (``model._target_``, set or still ``???``) instead of one of
    muso's models."""
    return targets.has_target(cfg)


def _module(name: str):
    return importlib.import_module(REGISTRY[name])


def takes_tokens(cfg) -> bool | None:
    """Whether the model of ``cfg`` reads integer tokens (the GPT) rather than float features; None for a model of
    your own (muso cannot tell)."""
    return None if is_user_model(cfg) else getattr(_module(cfg.name), "TOKENS", False)


def depth_key(cfg) -> str | None:
    """The key of the model node that holds its number of residual blocks (its depth): muso's models name it
    (``DEPTH``: ``depth`` for the residual MLP, ``layers`` for the GPT and the ViT); a model of your own whose config
    names its depth argument (``model.depth_arg``) has muso's key ``depth``. None for a model without depth."""
    if is_user_model(cfg):
        return "depth" if cfg.get("depth_arg") else None
    return getattr(_module(cfg.get("name")), "DEPTH", None) if cfg.get("name") in REGISTRY else None


def has_depth(cfg) -> bool:
    """Whether the model of ``cfg`` has residual blocks whose number its depth key sets (:func:`depth_key`)."""
    return depth_key(cfg) is not None


def depth_of(cfg) -> int | None:
    """The model's depth (number of residual blocks), None without one."""
    key = depth_key(cfg)
    return None if key is None else cfg.get(key)


def at_base_depth(cfg) -> bool:
    """Whether the model's depth choices change no number: a model without depth, or one at model.base_depth (where
    the branch multiplier and every depth rule are 1, whatever param.depth_alpha)."""
    return not has_depth(cfg) or depth_of(cfg) == cfg.get("base_depth")


def at_depth(cfg, depth: int):
    """A copy of the model node ``cfg`` at ``depth`` residual blocks (its depth key set)."""
    return OmegaConf.merge(cfg, {depth_key(cfg): int(depth)})


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int | None = None,
          device: torch.device | str | None = None, depth: int | None = None) -> nn.Module:
    """The model of ``cfg`` at ``width`` (default cfg.width) and ``depth`` (default its own, for a model with depth)
    on ``device`` ("meta": shapes only)."""
    width = cfg.width if width is None else width
    if depth is not None:
        cfg = at_depth(cfg, depth)
    builder = user if is_user_model(cfg) else _module(cfg.name)
    with torch.device(device or "cpu"):
        return builder.build(cfg, tuple(input_shape), num_classes, width)


@dataclass
class Shapes:
    """A model and what the parameterization compares it with, on the meta device (shapes only, free): ``base`` at
    model.base_width and ``delta`` at twice it (which dimensions scale with width), both at the model's depth; for a
    model with depth, ``depth_base`` at model.base_depth and ``depth_delta`` one block deeper (which parameters are
    inside residual blocks, and L/L₀), both at the model's width. None for a model without depth."""

    model: nn.Module
    base: nn.Module
    delta: nn.Module
    depth_base: nn.Module | None = None
    depth_delta: nn.Module | None = None


def build_with_shapes(cfg, input_shape, num_classes, width: int | None = None, device=None) -> Shapes:
    """The model at ``width`` (default cfg.width) and its own depth on ``device``, with its :class:`Shapes`."""
    width = cfg.width if width is None else width
    shapes = Shapes(build(cfg, input_shape, num_classes, width, device),
                    build(cfg, input_shape, num_classes, cfg.base_width, "meta"),
                    build(cfg, input_shape, num_classes, 2 * cfg.base_width, "meta"))
    if has_depth(cfg):
        shapes.depth_base = build(cfg, input_shape, num_classes, width, "meta", depth=cfg.base_depth)
        shapes.depth_delta = build(cfg, input_shape, num_classes, width, "meta", depth=cfg.base_depth + 1)
    return shapes


def check(cfg) -> list[UsageError | None]:
    """Problems with the ``model.*`` keys: the name (or the target), the widths, the depths (a model with depth) and
    the model's own options."""
    widths = [check_positive("model.width", cfg.get("width"), integer=True),
              check_positive("model.base_width", cfg.get("base_width"), integer=True)]
    if is_user_model(cfg):
        return [*widths, *user.check(cfg), *(check_depths(cfg) if has_depth(cfg) else [])]
    if cfg.name not in REGISTRY:
        return [check_one_of("model.name", cfg.name, REGISTRY)]
    return [*widths, *(check_depths(cfg) if has_depth(cfg) else []), *(UsageError(*p) for p in _module(cfg.name).check(cfg))]


def check_depths(cfg) -> list[UsageError | None]:
    """The depth key (model.depth; model.layers for the GPT and the ViT) and model.base_depth: positive integers, the
    depth not below the base depth (the depth rules carry hyperparameters from the base depth to deeper models)."""
    key = depth_key(cfg)
    problems = [check_positive(f"model.{key}", cfg.get(key), integer=True),
                check_positive("model.base_depth", cfg.get("base_depth"), integer=True)]
    if any(problems):
        return problems
    if cfg.base_depth > cfg[key]:
        return [UsageError("model.base_depth", f"is {cfg.base_depth}, above model.{key}={cfg[key]}: the depth rules "
                           f"carry hyperparameters from the base depth to deeper models.",
                           f"tune at the smallest depth: set model.base_depth ≤ {cfg[key]} (e.g. "
                           f"model.base_depth={cfg[key]}).")]
    return []


def parse_depths(key: str, values, cfg) -> list[int]:
    """The depths of ``key`` (coord.depths, study.depths, transfer.depths) for the model node ``cfg``: a list of
    positive integers ≥ model.base_depth, for a model with depth; UsageError naming the key (or the model's key that
    would give it depth) otherwise."""
    if not has_depth(cfg):
        if is_user_model(cfg):
            raise UsageError("model.depth_arg", f"{key} varies the depth, and model._target_={cfg.get('_target_')} "
                             "has no depth argument named.", "name the constructor argument that sets the number of "
                             "residual blocks: model.depth_arg=<argument> with model.depth and model.base_depth "
                             "(docs/own-code.md).")
        with_depth = [n for n in REGISTRY if getattr(_module(n), "DEPTH", None)]
        raise UsageError(key, f"model={cfg.get('name')} has no residual blocks to vary.",
                         f"use a model with depth ({', '.join(f'model={n}' for n in with_depth)}), or leave {key}=null.")
    values = list(values) if OmegaConf.is_list(values) or isinstance(values, (list, tuple)) else [values]
    if not values or not all(is_int(d) and d >= 1 for d in values):
        raise UsageError(key, f"must be a list of positive integers (numbers of residual blocks), got {values!r}.",
                         f"e.g. {key}=[2,8,32].")
    low = [d for d in values if d < cfg.base_depth]
    if low:
        raise UsageError(key, f"has depths {low} below the base depth model.base_depth={cfg.base_depth}.",
                         f"use depths ≥ {cfg.base_depth}, or lower model.base_depth.")
    return [int(d) for d in values]


def check_plan(cfg, plan: Plan) -> list[UsageError]:
    """What muso cannot parameterize in the built model, each naming the parameter:

    - no parameter scales with the width (the width argument does not size any layer);
    - a width-scaling matrix outside the modules whose layout muso knows (KNOWN_LAYOUTS): its role is ambiguous;
    - with K-FAC or Shampoo, a width-scaling matrix outside the layers they precondition (nn.Linear, nn.Conv2d),
      other than an embedding or rows of features such as a position embedding (1, T, d) (the table gives them
      SGD's rule, parametrize.UPDATED_LIKE);
    - a zero-initialised readout that is also the token embedding (tied).
    """
    specs = plan.specs.values()
    width_key = "model.width_arg" if is_user_model(cfg) else "model.width"
    if all(s.role == "fixed" for s in specs):
        return [UsageError(width_key, f"no parameter of the model changes shape between model.base_width="
                           f"{cfg.base_width} and {2 * cfg.base_width}, so nothing scales with the width and "
                           f"every parameterization is SP.", "make the width argument set the size of the layers "
                           "(hidden units, channels, d_model).")]
    problems = []
    if plan.depth is not None and plan.depth.alpha > 0 and not any(
            kind == DepthMultiplier.kind for kind, _, _ in plan.forward_mult.values()):
        problems.append(UsageError("param.depth_alpha", f"is {plan.depth.alpha:g}, but the model has no DepthMultiplier "
                                   "on its residual branches, so the branch multiplier (L/L₀)^-α has nowhere to act "
                                   "(and the depth rules assume it).", "put a muso_cli.parametrize.DepthMultiplier on "
                                   "each residual branch (h = h + self.branch(f(h))), or set param.depth_alpha=0."))
    for s in specs:
        if len(s.shape) < 2 or s.role == "fixed" or s.layout == "rows":  # rows: an embedding's role, unambiguous
            continue
        held_by = ", ".join(sorted({t.__name__ for t in s.holders})) or "no module"
        if s.role in ("input", "output") and not any(issubclass(t, KNOWN_LAYOUTS) for t in s.holders):
            problems.append(UsageError(s.name, f"is a {'×'.join(map(str, s.shape))} matrix held by {held_by}: muso "
                                       f"cannot tell its fan-in from its fan-out, so its role ({s.role} by the "
                                       f"first-dimension rule) may be the wrong one.",
                                       "hold it in an nn.Linear (or nn.Conv*, nn.Embedding) layer."))
        elif (plan.optimizer in LAYERWISE and s.layer is None
              and not any(issubclass(t, nn.Embedding) for t in s.holders)):
            problems.append(UsageError(s.name, f"({s.role}, held by {held_by}) is not a layer {plan.optimizer} can "
                                       f"precondition: it preconditions nn.Linear and nn.Conv2d layers, and would "
                                       f"update this matrix like SGD.",
                                       "write it as an nn.Linear layer (muso_cli.models.transformer.Attention "
                                       "does so for q, k, v), or use optimizer=sgd or adam."))
        elif (plan.readout_zero_init and s.role == "output"
              and any(issubclass(t, nn.Embedding) for t in s.holders)):
            problems.append(UsageError("param.readout_zero_init", f"would zero {s.name}, the readout, which is also "
                                       f"the token embedding (tied): every token would start as the zero vector.",
                                       "set param.readout_zero_init=false, or untie the embedding "
                                       "(model.tie=false)."))
    return problems


def pitfalls(plan: Plan) -> list[str]:
    """Warnings for what the plan gets wrong in silence, one paragraph each: torch's ``nn.MultiheadAttention``
    (which K-FAC, Shampoo and SOAP refuse: :func:`check_plan`) keeps SP's logit scale 1/√d_head under µP and
    second-order µP, and under Muon its packed q|k|v projection is not a layer Muon orthogonalises."""
    held = sorted({s.name.rpartition(".")[0] or s.name for s in plan.specs.values()
                   if any(issubclass(t, nn.MultiheadAttention) for t in s.holders)})
    if not held or plan.optimizer in LAYERWISE:
        return []
    fix = ("use muso_cli.models.transformer.Attention, or separate nn.Linear q, k, v projections with the logits "
           "passed through muso_cli.parametrize.WidthMultiplier('attention', d_head) (docs/own-code.md, \"Your own model\")")
    out = []
    if plan.param != "sp":
        out.append(f"{', '.join(held)}: torch's nn.MultiheadAttention scales its logits by 1/√d_head, SP's scale: "
                   f"under param={plan.param} the logits need 1/d_head when the head size grows with the width, so "
                   f"this attention is SP inside a {plan.param} model. Fix: {fix}.")
    if splits_tensors(plan.optimizer):
        out.append(f"{', '.join(held)}: under optimizer={plan.optimizer}, nn.MultiheadAttention's packed q|k|v "
                   f"weight (in_proj_weight) is not a layer {plan.optimizer} orthogonalises: it gets the AdamW "
                   f"step of the rest, where the recipe orthogonalises q, k and v each. Fix: {fix}.")
    return out
