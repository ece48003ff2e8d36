"""The project's own network: a residual MLP with LayerNorm, its width set by ``hidden``."""
from __future__ import annotations

from torch import Tensor, nn


class ResidualMLP(nn.Module):
    """x [N, in_features] → Linear(in, hidden) → ``blocks`` × (x + Linear(ReLU(LayerNorm(x)))) → LayerNorm →
    Linear(hidden, classes) → logits [N, classes]."""

    def __init__(self, in_features: int, hidden: int, classes: int, blocks: int = 2):
        super().__init__()
        self.embed = nn.Linear(in_features, hidden)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(blocks))
        self.mixers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(blocks))
        self.norm = nn.LayerNorm(hidden)
        self.readout = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for norm, mixer in zip(self.norms, self.mixers):
            x = x + mixer(norm(x).relu())
        return self.readout(self.norm(x))
