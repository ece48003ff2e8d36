"""VGG-19 (Simonyan & Zisserman 2015), CIFAR variant: 16 3×3 convs in five blocks, then a single linear readout.

Channels per block c, 2c, 4c, 8c, 8c with c = channels · k (channels = 16: k = 4 is the usual 64 … 512 VGG-19).
``batch_norm: true`` puts a BatchNorm after every conv (and drops the conv bias, which the norm's shift replaces).
Without batch norm the 16 ReLU convs shrink the signal by about √2 per layer at muso's default init
(σ = 1): use ``param.sigma=1.414`` (He init) there.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .cnn import channel_problems, image_shape

# VGG-19's conv stack, in units of c; "M" is a 2×2 max-pool ending a block.
LAYOUT = (1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M")


class VGG19(nn.Sequential):
    """conv3×3 (+ BN) + ReLU ×16 with five max-pools → global avg-pool → Linear(8c → classes).

    Input [N, C, H, W] → logits [N, num_classes]. The pools use ceil_mode, so any H, W ≥ 1 work (28×28 → 14, 7,
    4, 2, 1; 8×8 → 4, 2, 1, 1, 1); on 32×32 they equal the usual floor pools and the map ends at 1×1, where the
    global pool is the identity, as in the usual CIFAR VGG.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: int, batch_norm: bool):
        layers: list[tuple[str, nn.Module]] = []
        c_in, conv, block = input_shape[0], 0, 1
        for item in LAYOUT:
            if item == "M":
                layers.append((f"pool{block}", nn.MaxPool2d(2, ceil_mode=True)))
                block += 1
                continue
            conv += 1
            c_out = item * channels
            layers.append((f"conv{conv}", nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)))
            if batch_norm:
                layers.append((f"bn{conv}", nn.BatchNorm2d(c_out)))
            layers.append((f"relu{conv}", nn.ReLU()))
            c_in = c_out
        layers += [("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
                   ("readout", nn.Linear(c_in, num_classes))]
        super().__init__(OrderedDict(layers))


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> VGG19:
    return VGG19(image_shape("vgg19", input_shape), num_classes, cfg.channels * width, cfg.batch_norm)


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad VGG option."""
    problems = channel_problems(cfg)
    if not isinstance(cfg.batch_norm, bool):
        problems.append(("model.batch_norm", f"must be true or false, got {cfg.batch_norm!r}.",
                         "e.g. model.batch_norm=true."))
    return problems
