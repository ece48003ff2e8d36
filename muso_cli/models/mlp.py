"""Multi-layer perceptron with a width knob: in → M → … → M → classes."""
from __future__ import annotations

import math

from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU, "identity": nn.Identity}


class MLP(nn.Module):
    """``depth`` Linear layers; inputs of any shape are flattened.

    Input [N, *input_shape] → logits [N, num_classes]. ``layers[0]`` is the input layer, ``layers[-1]`` the
    readout; activations sit between them.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int, depth: int = 3,
                 activation: str = "relu", bias: bool = True):
        super().__init__()
        dims = [math.prod(input_shape)] + [width] * (depth - 1) + [num_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(dims[:-1], dims[1:]))
        self.act = ACTIVATIONS[activation]()

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        return self.layers[-1](x)


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> MLP:
    return MLP(input_shape, num_classes, width, depth=cfg.depth, activation=cfg.activation, bias=cfg.bias)


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad MLP option."""
    problems = []
    if not (isinstance(cfg.depth, int) and cfg.depth >= 2):
        problems.append(("model.depth", f"must be an integer ≥ 2 (input and readout layers), got {cfg.depth!r}.",
                         "e.g. model.depth=3."))
    return problems + check_layer_options(cfg)


def check_layer_options(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for ``model.activation`` and ``model.bias``, the options of the Linear layers every MLP
    of muso's (this one and the residual MLP) shares."""
    problems = []
    if cfg.activation not in ACTIVATIONS:
        problems.append(("model.activation", f"must be one of {', '.join(ACTIVATIONS)}, got {cfg.activation!r}.",
                         "e.g. model.activation=relu."))
    if not isinstance(cfg.bias, bool):
        problems.append(("model.bias", f"must be true or false, got {cfg.bias!r}.", "e.g. model.bias=true."))
    return problems
