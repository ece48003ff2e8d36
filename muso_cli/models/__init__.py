"""Models with a width knob (hidden units, or a channel multiplier for convolutional nets).

``build(cfg.model, input_shape, num_classes, width)`` returns an ``nn.Module``; the parameterization finds each
parameter's role by comparing it with the same model built at ``cfg.model.base_width`` on the meta device.
"""
from __future__ import annotations

import importlib

import torch
from torch import nn

from ..errors import UsageError, check_one_of, check_positive

# model name → module implementing build(cfg, input_shape, num_classes, width) and check(cfg)
REGISTRY = {
    "mlp": "muso_cli.models.mlp",
    "cnn": "muso_cli.models.cnn",
    "myrtle": "muso_cli.models.myrtle",
    "resnet18": "muso_cli.models.resnet",
    "vgg19": "muso_cli.models.vgg",
}


def _module(name: str):
    return importlib.import_module(REGISTRY[name])


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int | None = None,
          device: torch.device | str | None = None) -> nn.Module:
    """The model ``cfg.name`` at ``width`` (default cfg.width) on ``device`` ("meta": shapes only)."""
    width = cfg.width if width is None else width
    with torch.device(device or "cpu"):
        return _module(cfg.name).build(cfg, tuple(input_shape), num_classes, width)


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
    """Problems with the ``model.*`` keys: the name, the widths, and the model's own options."""
    if cfg.name not in REGISTRY:
        return [check_one_of("model.name", cfg.name, REGISTRY)]
    return [check_positive("model.width", cfg.width, integer=True),
            check_positive("model.base_width", cfg.base_width, integer=True),
            *(UsageError(*p) for p in _module(cfg.name).check(cfg))]
