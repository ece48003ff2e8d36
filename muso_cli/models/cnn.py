"""The 3-layer CNN of the paper's damping-transfer study, and the checks every convolutional model shares.

Width knob: an integer channel multiplier k (``model.width``; base width 1). Channel counts are
``model.channels · k`` (first conv) and ``2 · model.channels · k`` (second conv), so the input conv's fan-in (image
channels) stays fixed, the second conv's fan-in and fan-out both grow, and the readout's fan-in grows: the shape
comparison in ``muso_cli.parametrize`` then finds input / hidden / output without any special case.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..config import UsageError


class CNN(nn.Sequential):
    """conv3×3(C → c) → ReLU → max-pool 2 → conv3×3(c → 2c) → ReLU → max-pool 2 → flatten → Linear → classes.

    c = channels · k. Input [N, C, H, W] → logits [N, num_classes]; the readout sees 2c · ⌊H/4⌋ · ⌊W/4⌋ features
    (flatten, as in the usual "two convs + a dense readout" CNN), so its fan-in grows with k.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: int):
        in_ch, h, w = input_shape
        c1, c2 = channels, 2 * channels
        super().__init__(OrderedDict(
            conv1=nn.Conv2d(in_ch, c1, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(c1, c2, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(), readout=nn.Linear(c2 * (h // 4) * (w // 4), num_classes),
        ))


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> CNN:
    # two stride-2 max-pools before the flatten: 4×4 is the smallest input that leaves a non-empty readout
    return CNN(image_shape("cnn", input_shape, min_size=4), num_classes, cfg.channels * width)


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad CNN option."""
    return channel_problems(cfg)


# ------------------------------------------------------------------------------------------------------
# Shared by the convolutional models (cnn, myrtle, resnet, vgg).

def channel_problems(cfg) -> list[tuple[str, str, str]]:
    """model.channels (the base channel count at multiplier 1) must be a positive integer."""
    c = cfg.channels
    if isinstance(c, int) and not isinstance(c, bool) and c > 0:
        return []
    return [("model.channels", f"must be a positive integer (channels at width multiplier 1), got {c!r}.",
             "e.g. model.channels=16; widen with model.width=<integer multiplier> instead.")]


def image_shape(model: str, input_shape: tuple[int, ...], min_size: int = 1) -> tuple[int, int, int]:
    """``input_shape`` as (C, H, W), or a UsageError when the data are not images of at least min_size²."""
    if len(input_shape) == 3 and min(input_shape[1:]) >= min_size:
        return input_shape
    raise UsageError("data.name", f"model={model} needs images [C, H, W] of at least {min_size}×{min_size}, "
                     f"but the data have inputs of shape {tuple(input_shape)}.",
                     "use an image dataset (data=fashion_mnist, mnist, digits, cifar10 or cifar100), "
                     "or model=mlp for vector inputs.")
