"""ResNet-18, CIFAR variant (He et al. 2016; the 3×3-stem, no-max-pool version usual on 32×32 images).

Stem conv3×3(C → c) + BN + ReLU, four stages of two basic blocks with c, 2c, 4c, 8c channels (strides 1, 2, 2, 2),
global average pool, Linear(8c → classes); c = channels · k. With channels = 16, k = 4 is the usual ResNet-18
(64 … 512 channels) and k = 1 a cheap base model. Shortcuts are identity, or a 1×1 conv + BN where a block changes
the channel count or the resolution. Convs before a batch norm have no bias (the norm's shift replaces it).
"""
from __future__ import annotations

from torch import Tensor, nn

from .cnn import channel_problems, image_shape

STAGE_WIDTHS = (1, 2, 4, 8)   # channels of each stage, in units of c
STAGE_STRIDES = (1, 2, 2, 2)
BLOCKS_PER_STAGE = 2          # ResNet-18: 2·4 blocks · 2 convs + stem + readout = 18 layers


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """Conv (no bias, 'same' padding at stride 1) → BatchNorm; names ``0`` (conv) and ``1`` (bn)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """x → conv3×3 → BN → ReLU → conv3×3 → BN, + shortcut(x), → ReLU. [N, c_in, H, W] → [N, c_out, H/s, W/s]."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 3, stride)
        self.conv2 = conv_bn(c_out, c_out, 3)
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Input [N, C, H, W] (any H, W ≥ 1: padded stride-2 convs never empty the map) → logits [N, num_classes]."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, channels: int):
        super().__init__()
        self.stem = conv_bn(input_shape[0], channels, 3)
        stages, c_in = [], channels
        for mult, stride in zip(STAGE_WIDTHS, STAGE_STRIDES):
            c_out = mult * channels
            stages.append(nn.Sequential(*(BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                          for i in range(BLOCKS_PER_STAGE))))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.readout = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.relu(self.stem(x)))
        return self.readout(self.pool(x).flatten(1))


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> ResNet18:
    return ResNet18(image_shape("resnet18", input_shape), num_classes, cfg.channels * width)


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad ResNet option."""
    return channel_problems(cfg)
