"""A ViT-style image classifier (Dosovitskiy et al. 2021, in the "simple ViT" form of Beyer et al. 2022:
global average pooling of the tokens instead of a class token).

Width knob: d_model (``model.width``). Images [N, C, H, W] are cut into p×p patches by a Conv2d(C → d, p, stride
p) (input role: its fan-in C·p² is fixed), learned positions are an ``nn.Embedding(patches, d)`` (input role),
then ``layers`` pre-LayerNorm blocks without a causal mask, a final LayerNorm, the mean over the tokens and a
Linear(d → classes) readout (output role). Logits [N, num_classes].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .cnn import image_shape
from .transformer import blocks, problems

DEPTH = "layers"  # the key of its number of blocks (muso_cli.models.depth_key)


class ViT(nn.Module):
    """[N, C, H, W] → patches [N, P, d] (+ positions) → blocks → LayerNorm → mean over P → logits [N, classes]."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int, cfg):
        super().__init__()
        c, h, w = input_shape
        p = cfg.patch
        self.patches = (h // p) * (w // p)
        self.patch = nn.Conv2d(c, width, p, stride=p)
        self.pos_emb = nn.Embedding(self.patches, width) if cfg.positions == "learned" else None
        self.blocks = blocks(width, cfg, causal=False, context=self.patches)
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)   # [N, P, d]
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x).mean(1))


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> ViT:
    shape = image_shape("vit", input_shape, min_size=cfg.patch)
    _, h, w = shape
    p = cfg.patch
    if h % p or w % p:  # the Conv2d's stride would drop the rest of every image
        fits = max(d for d in range(1, p) if h % d == 0 and w % d == 0)
        raise UsageError("model.patch", f"{p} does not divide the {h}×{w} images: the last {h % p} rows and {w % p} "
                         f"columns of every image would be dropped.", f"use a patch side that divides both, e.g. "
                         f"model.patch={fits}.")
    return ViT(shape, num_classes, width, cfg)


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad ViT option."""
    out = problems(cfg, "model=vit")
    p = cfg.get("patch")
    if not (isinstance(p, int) and not isinstance(p, bool) and p >= 1):
        out.append(("model.patch", f"must be a positive integer (patch side in pixels), got {p!r}.",
                    "e.g. model.patch=7 for 28×28 images, 4 for 32×32."))
    return out

