"""Residual MLP with a width and a depth knob: in → M → ``depth`` pre-norm residual blocks → norm → classes.

Width = M (the residual stream and every block's hidden units); depth = the number of blocks. Each block is
h ← h + branch(fc2(act(fc1(LN(h))))), where ``branch`` is a :class:`~muso_cli.parametrize.DepthMultiplier`: the
plan sets it to (L/L₀)^-α (param.depth_alpha; 1 at model.base_depth). Roles from shapes: ``embed`` input,
``blocks.*.fc1`` / ``fc2`` hidden, ``head`` output, LayerNorm gains and biases vectors; the blocks from structure
(parametrize.infer_depth): ``blocks.<i>.…`` is inside block i, everything else outside.
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from ..parametrize import DepthMultiplier
from .mlp import ACTIVATIONS, check_layer_options

DEPTH = "depth"  # the key of its number of residual blocks (muso_cli.models.depth_key)


class Block(nn.Module):
    """Pre-LayerNorm residual block on [N, M]: h + branch(fc2(act(fc1(LN(h)))))."""

    def __init__(self, width: int, activation: str, bias: bool):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width, bias=bias)
        self.act = ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(width, width, bias=bias)
        self.branch = DepthMultiplier()

    def forward(self, h: Tensor) -> Tensor:
        return h + self.branch(self.fc2(self.act(self.fc1(self.norm(h)))))


class ResMLP(nn.Module):
    """Inputs of any shape are flattened: [N, *input_shape] → embed → blocks → LN → head → logits [N, classes]."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int,
                 activation: str = "relu", bias: bool = True):
        super().__init__()
        self.embed = nn.Linear(math.prod(input_shape), width, bias=bias)
        self.blocks = nn.ModuleList(Block(width, activation, bias) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x.flatten(1))
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> ResMLP:
    return ResMLP(input_shape, num_classes, width, cfg.depth, activation=cfg.activation, bias=cfg.bias)


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad option of the residual MLP (its depth keys: muso_cli.models.check)."""
    return check_layer_options(cfg)
