"""The 3-layer CNN of the paper's damping-transfer study, and the checks every convolutional model shares.

Width knob: an integer channel multiplier k (``model.width``; base width 1). Channel counts are
``model.channels · k`` (first conv) and ``2 · model.channels · k`` (second conv), so the input conv's fan-in (image
channels) stays fixed, the second conv's fan-in and fan-out both grow, and the readout's fan-in grows: the shape
comparison in ``muso_cli.parametrize`` then finds input / hidden / output without any special case.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..errors import UsageError


class CNN(nn.Sequential):
    """conv3×3(C → c) → ReLU → max-pool 2 → conv3×3(c → 2c) → ReLU → max-pool 2 → [avg-pool to p×p] → flatten →
    Linear → classes.

    c = channels · k. Input [N, C, H, W] → logits [N, num_classes]. The readout sees 2c·p² features with
    ``readout_pool`` = p (adaptive average pooling), or 2c·⌊H/4⌋·⌊W/4⌋ with None (the plain flatten: 1568·k
    features on 28×28 images, whose K-FAC/Shampoo factors are then 1568k × 1568k). Either way its fan-in grows
    with k.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: int,
                 readout_pool: int | None = 2):
        in_ch, h, w = input_shape
        c1, c2 = channels, 2 * channels
        layers = OrderedDict(
            conv1=nn.Conv2d(in_ch, c1, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(c1, c2, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2))
        if readout_pool:
            layers["pool3"] = nn.AdaptiveAvgPool2d(readout_pool)
        features = c2 * (readout_pool ** 2 if readout_pool else (h // 4) * (w // 4))
        layers.update(flatten=nn.Flatten(), readout=nn.Linear(features, num_classes))
        super().__init__(layers)


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> CNN:
    # two stride-2 max-pools before the readout: 4×4 is the smallest input that leaves a non-empty map
    return CNN(image_shape("cnn", input_shape, min_size=4), num_classes, cfg.channels * width,
               cfg.get("readout_pool"))


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad CNN option."""
    pool = cfg.get("readout_pool")
    bad_pool = pool is not None and not (isinstance(pool, int) and not isinstance(pool, bool) and pool > 0)
    return channel_problems(cfg) + ([("model.readout_pool", f"must be a positive integer or null, got {pool!r}.",
                                      "e.g. model.readout_pool=2, or null for the plain flatten.")] if bad_pool else [])


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
