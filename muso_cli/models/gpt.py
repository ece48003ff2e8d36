"""A decoder-only GPT-style language model (pre-LayerNorm; learned or rotary positions; tied or untied unembedding).

Width knob: d_model (``model.width``). Tokens [N, T] (int64, T ≤ the context the data give) → logits
[N, T, vocab]; the training loss averages the next-token cross-entropy over all N·T positions (muso_cli.losses).
Roles from shapes: the token and position embeddings are input-role (fan-in = vocab or context, fixed), every
projection hidden, the unembedding output-role, LayerNorm gains and biases vectors. With ``tie: true`` the
unembedding is an ``nn.Linear`` whose weight is the token embedding's (as in nanoGPT): the shared tensor keeps the
output role, and the embedding's output is multiplied by √d_model and by a ``tied_embedding``
:class:`~muso_cli.parametrize.WidthMultiplier`, which give its rows back Θ(1) entries at every width (√d_model
alone is Vaswani et al.'s embedding scale, the SP case).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..errors import UsageError
from ..parametrize import WidthMultiplier
from .transformer import blocks, problems


TOKENS = True  # its inputs are integer tokens (muso_cli.models.takes_tokens); every other model of muso's: features
DEPTH = "layers"  # the key of its number of blocks (muso_cli.models.depth_key)


class GPT(nn.Module):
    """tokens [N, T] → embedding (+ learned positions) → ``layers`` causal blocks → LayerNorm → logits [N, T, vocab]."""

    def __init__(self, vocab: int, context: int, width: int, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, width)
        self.pos_emb = nn.Embedding(context, width) if cfg.positions == "learned" else None
        self.blocks = blocks(width, cfg, causal=True, context=context)
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.tied_scale = None
        if cfg.tie:
            self.tok_emb.weight = self.head.weight
            self.tied_scale = WidthMultiplier("tied_embedding", width)

    def forward(self, idx: Tensor) -> Tensor:
        x = self.tok_emb(idx)
        if self.tied_scale is not None:
            x = self.tied_scale(x * math.sqrt(x.shape[-1]))
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def sequence_shape(model: str, input_shape: tuple[int, ...]) -> int:
    """The context length T of token-sequence data (input shape (T,)), or a UsageError."""
    if len(input_shape) == 1:
        return int(input_shape[0])
    raise UsageError("data.name", f"model={model} needs token sequences [T], but the data have inputs of shape "
                     f"{tuple(input_shape)}.", "use a text dataset (data=pystdlib), or model=vit for images.")


def build(cfg, input_shape: tuple[int, ...], num_classes: int, width: int) -> GPT:
    return GPT(num_classes, sequence_shape("gpt", input_shape), width, cfg)


def check(cfg) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for each bad GPT option."""
    out = problems(cfg, "model=gpt")
    if not isinstance(cfg.get("tie"), bool):
        out.append(("model.tie", f"must be true or false, got {cfg.get('tie')!r}.", "e.g. model.tie=false."))
    return out
