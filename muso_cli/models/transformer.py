"""The parts the GPT and the ViT share: pre-LayerNorm blocks of multi-head attention and an MLP.

Width = d_model. Either the number of heads is fixed and the head size d_head = d_model / heads grows with the
width (``heads``; the default of the shipped configs, so that µP's 1/d_head logit scale matters), or the head
size is fixed and the number of heads grows (``head_size``). Every projection is its own ``nn.Linear`` (q, k, v,
the attention output, the MLP's in and out), so that shapes alone give their roles (all hidden), K-FAC and
Shampoo precondition each of them (inputs [N, T, d]: rows are N·T tokens, the "expand" setting of Eschenhagen
et al. 2023), and the coordinate check measures each. The logits pass through a
:class:`~muso_cli.parametrize.WidthMultiplier` (kind ``attention``): 1/√d_head under SP, 1/d_head under µP.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..parametrize import ZERO_INIT, DepthMultiplier, WidthMultiplier


def head_layout(width: int, heads: int | None, head_size: int | None) -> tuple[int, int]:
    """(heads, d_head) for d_model = ``width``: exactly one of ``heads`` (fixed count) and ``head_size`` (fixed size)
    is given, and it must divide the width. Raises ValueError otherwise."""
    if (heads is None) == (head_size is None):
        raise ValueError("give exactly one of heads (a fixed number of heads) and head_size (a fixed head size)")
    fixed = heads if heads is not None else head_size
    if width % fixed:
        raise ValueError(f"the width (d_model) {width} is not a multiple of {'heads' if heads else 'head_size'} "
                         f"{fixed}")
    return (heads, width // heads) if heads is not None else (width // head_size, head_size)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021) of q or k [N, heads, T, d_head], d_head even: the pair
    (x_2i, x_2i+1) at position t is rotated by the angle t·10000^(-2i/d_head). No parameters."""

    def __init__(self, d_head: int, context: int):
        super().__init__()
        if d_head % 2:
            raise ValueError(f"rotary positions need an even head size, got {d_head}")
        freq = 10000.0 ** (-torch.arange(0, d_head, 2, dtype=torch.float32) / d_head)
        angle = torch.arange(context, dtype=torch.float32)[:, None] * freq   # [context, d_head/2]
        self.register_buffer("cos", angle.cos(), persistent=False)
        self.register_buffer("sin", angle.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[-2]
        cos, sin = self.cos[:t].to(x.dtype), self.sin[:t].to(x.dtype)
        even, odd = x[..., 0::2], x[..., 1::2]
        return torch.stack((even * cos - odd * sin, even * sin + odd * cos), -1).flatten(-2)


class Attention(nn.Module):
    """Multi-head self-attention, [N, T, d] → [N, T, d]: q, k, v = Linear(d, d) each, logits
    q·kᵀ/√d_head × the ``logit_scale`` multiplier, causal when ``causal``, softmax, then Linear(d, d) (``out``).
    ``zero_query``: the query weight starts at 0 under every parameterization (µP's zero query)."""

    def __init__(self, width: int, heads: int, d_head: int, *, causal: bool, bias: bool = True,
                 rotary: Rotary | None = None, zero_query: bool = False):
        super().__init__()
        self.heads, self.d_head, self.causal, self.rotary = heads, d_head, causal, rotary
        self.q, self.k, self.v = (nn.Linear(width, heads * d_head, bias=bias) for _ in range(3))
        self.out = nn.Linear(heads * d_head, width, bias=bias)
        self.logit_scale = WidthMultiplier("attention", d_head)
        if zero_query:
            setattr(self.q.weight, ZERO_INIT, True)

    def forward(self, x: Tensor) -> Tensor:
        n, t, _ = x.shape
        q, k, v = (proj(x).view(n, t, self.heads, self.d_head).transpose(1, 2) for proj in (self.q, self.k, self.v))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        scores = self.logit_scale(q @ k.transpose(-2, -1) / math.sqrt(self.d_head))   # [N, heads, T, T]
        if self.causal:
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(future, float("-inf"))
        y = F.softmax(scores, -1) @ v                                                    # [N, heads, T, d_head]
        return self.out(y.transpose(1, 2).reshape(n, t, self.heads * self.d_head))


class MLP(nn.Module):
    """Linear(d, r·d) → GELU → Linear(r·d, d) on [..., d]."""

    def __init__(self, width: int, ratio: int, bias: bool = True):
        super().__init__()
        self.fc_in = nn.Linear(width, ratio * width, bias=bias)
        self.act = nn.GELU()
        self.fc_out = nn.Linear(ratio * width, width, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + branch(attn(LN(x))), then + branch(mlp(LN(x))). [N, T, d] → [N, T, d].
    Each branch passes a DepthMultiplier, (L/L₀)^-α (param.depth_alpha; 1 at model.base_depth)."""

    def __init__(self, width: int, heads: int, d_head: int, *, mlp_ratio: int, causal: bool, bias: bool = True,
                 rotary: Rotary | None = None, zero_query: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads, d_head, causal=causal, bias=bias, rotary=rotary, zero_query=zero_query)
        self.attn_branch = DepthMultiplier()
        self.ln2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio, bias=bias)
        self.mlp_branch = DepthMultiplier()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn_branch(self.attn(self.ln1(x)))
        return x + self.mlp_branch(self.mlp(self.ln2(x)))


def blocks(width: int, cfg, *, causal: bool, context: int) -> nn.ModuleList:
    """``cfg.layers`` blocks of width d_model = ``width`` from a GPT/ViT config node (heads or head_size,
    mlp_ratio, bias, positions, zero_query). Rotary positions are applied in every attention."""
    heads, d_head = head_layout(width, cfg.get("heads"), cfg.get("head_size"))
    rotary = Rotary(d_head, context) if cfg.positions == "rotary" else None
    return nn.ModuleList(Block(width, heads, d_head, mlp_ratio=cfg.mlp_ratio, causal=causal, bias=cfg.bias,
                               rotary=rotary, zero_query=cfg.zero_query) for _ in range(cfg.layers))


POSITIONS = ("learned", "rotary")


def problems(cfg, name: str) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for the options the GPT and the ViT share, and the widths' head layout."""
    out = []
    for key in ("layers", "mlp_ratio"):
        value = cfg.get(key)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            out.append((f"model.{key}", f"must be a positive integer, got {value!r}.", f"e.g. model.{key}=2."))
    for key in ("bias", "zero_query"):
        if not isinstance(cfg.get(key), bool):
            out.append((f"model.{key}", f"must be true or false, got {cfg.get(key)!r}.", f"e.g. model.{key}=false."))
    if cfg.get("positions") not in POSITIONS:
        out.append(("model.positions", f"must be one of {', '.join(POSITIONS)}, got {cfg.get('positions')!r}.",
                    "e.g. model.positions=learned."))
    heads, head_size = cfg.get("heads"), cfg.get("head_size")
    if (heads is None) == (head_size is None):
        return out + [("model.heads", f"{name} needs exactly one of model.heads (fixed number of heads; the head "
                       f"size grows with the width) and model.head_size (fixed head size; the heads grow), got "
                       f"heads={heads!r}, head_size={head_size!r}.", "e.g. model.heads=4 model.head_size=null.")]
    key, fixed = ("model.heads", heads) if heads is not None else ("model.head_size", head_size)
    if not (isinstance(fixed, int) and not isinstance(fixed, bool) and fixed >= 1):
        return out + [(key, f"must be a positive integer, got {fixed!r}.", f"e.g. {key}=4.")]
    for width_key, width in (("model.width", cfg.width), ("model.base_width", cfg.base_width),
                             ("model.base_width", 2 * cfg.base_width if isinstance(cfg.base_width, int) else None)):
        if not isinstance(width, int):
            continue  # the width keys' own checks report it
        try:
            _, d_head = head_layout(width, heads, head_size)
        except ValueError as e:
            out.append((width_key, f"{e} (muso builds the base model at base_width and a delta model at 2 × "
                        f"base_width).", f"use widths that {key}={fixed} divides."))
            break
        if cfg.get("positions") == "rotary" and d_head % 2:
            out.append((width_key, f"rotary positions need an even head size; d_model {width} gives {d_head}.",
                        "use widths with an even head size, or model.positions=learned."))
            break
    return out
