"""Myrtle-5 (Shankar et al. 2020, "Neural Kernels Without Tangents"; the family of Page's "myrtle" ResNet).

Four 3×3 convs of c = channels · k channels with ReLU, average pooling, a global average pool and a linear
readout. Width knob: the integer channel multiplier k (``model.width``; base width 1).
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .cnn import channel_problems, image_shape


class Myrtle5(nn.Sequential):
    """conv(C→c) → ReLU → conv(c→c) → ReLU → avg-pool 2 → conv → ReLU → avg-pool 2 → conv → ReLU → global
    avg-pool → Linear(c → classes).

    Input [N, C, H, W] (H, W ≥ 4) → logits [N, num_classes]. Shankar et al. end with three more 2×2 average
    pools and a flatten, which on 32×32 inputs is exactly a global average pool over the 8×8 map; the global pool
    keeps that and also takes 28×28 and 8×8 images.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: int):
        c = channels

        def conv(i: int, c_in: int) -> tuple[tuple[str, nn.Module], tuple[str, nn.Module]]:
            return (f"conv{i}", nn.Conv2d(c_in, c, 3, padding=1)), (f"relu{i}", nn.ReLU())

        super().__init__(OrderedDict([
            *conv(1, input_shape[0]), *conv(2, c), ("pool2", nn.AvgPool2d(2)),
            *conv(3, c), ("pool3", nn.AvgPool2d(2)),
            *conv(4, c), ("pool4", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()), ("readout", nn.Linear(c, num_classes)),
        ]))


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> Myrtle5:
    # two stride-2 pools before the global pool: 4×4 is the smallest input that keeps a non-empty map
    return Myrtle5(image_shape("myrtle", input_shape, min_size=4), num_classes, cfg.channels * width)


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad Myrtle option."""
    return channel_problems(cfg)
