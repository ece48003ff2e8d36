"""Models with a width knob (hidden units, a channel multiplier for convolutional nets, d_model for transformers),
and your own (``model._target_``, see :mod:`muso_cli.models.user`).

``build(cfg.model, input_shape, num_classes, width)`` returns an ``nn.Module``; the parameterization finds each
parameter's role by comparing it with the same model built at ``cfg.model.base_width`` on the meta device.
:func:`check_plan` then refuses, naming the parameter, what muso cannot parameterize.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from .. import targets
from ..errors import UsageError, check_one_of, check_positive
from ..parametrize import LAYERWISE, Plan, splits_tensors
from . import user

# model name → module implementing build(cfg, input_shape, num_classes, width) and check(cfg)
REGISTRY = {
    "mlp": "muso_cli.models.mlp",
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


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int | None = None,
          device: torch.device | str | None = None) -> nn.Module:
    """The model of ``cfg`` at ``width`` (default cfg.width) on ``device`` ("meta": shapes only)."""
    width = cfg.width if width is None else width
    builder = user if is_user_model(cfg) else _module(cfg.name)
    with torch.device(device or "cpu"):
        return builder.build(cfg, tuple(input_shape), num_classes, width)


def build_with_shapes(cfg, input_shape, num_classes, width: int | None = None,
                      device=None) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(model at ``width``, base model at ``cfg.base_width``, delta model at 2 × base width).

    Base and delta are built on the meta device (shapes only): the parameterization compares them to find
    which dimensions scale with width.
    """
    model = build(cfg, input_shape, num_classes, width, device)
    base = build(cfg, input_shape, num_classes, cfg.base_width, "meta")
    delta = build(cfg, input_shape, num_classes, 2 * cfg.base_width, "meta")
    return model, base, delta


def check(cfg) -> list[UsageError | None]:
    """Problems with the ``model.*`` keys: the name (or the target), the widths, and the model's own options."""
    widths = [check_positive("model.width", cfg.get("width"), integer=True),
              check_positive("model.base_width", cfg.get("base_width"), integer=True)]
    if is_user_model(cfg):
        return [*widths, *user.check(cfg)]
    if cfg.name not in REGISTRY:
        return [check_one_of("model.name", cfg.name, REGISTRY)]
    return [*widths, *(UsageError(*p) for p in _module(cfg.name).check(cfg))]


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
           "passed through muso_cli.parametrize.WidthMultiplier('attention', d_head) (README \"Your own model\")")
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
