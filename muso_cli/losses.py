"""The loss table: training losses and the predictive distributions they are the negative log-likelihood of.

One entry per ``train.loss`` value. ``value(f, y)`` is the batch mean of the per-example loss; ``sample(f)``
draws targets from the model's predictive distribution at outputs ``f`` (what K-FAC's Monte-Carlo Fisher
backpropagates). Outputs are ``f`` [N, C] (or [N, T, C]: every leading position counts as an example);
targets are class indices [N] ([N, T]) or, for ``mse``, real targets shaped like ``f``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor


def _xent(f: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(f.reshape(-1, f.shape[-1]), y.reshape(-1))


def _sample_categorical(f: Tensor) -> Tensor:
    """y ~ categorical(softmax(f)) per example."""
    probs = F.softmax(f.detach().reshape(-1, f.shape[-1]).float(), -1)
    return torch.multinomial(probs, 1).view(f.shape[:-1])


def _mse(f: Tensor, y: Tensor) -> Tensor:
    """0.5·Σ_c (f_c − t_c)², averaged over the examples; t = onehot(y) for class indices, else y itself."""
    target = F.one_hot(y, f.shape[-1]).to(f.dtype) if not y.is_floating_point() else y
    return 0.5 * (f - target).pow(2).sum(-1).mean()


def _sample_gaussian(f: Tensor) -> Tensor:
    """t ~ N(f, I): the predictive distribution whose negative log-likelihood is the squared error."""
    f = f.detach()
    return f + torch.randn_like(f)


@dataclass(frozen=True)
class Loss:
    """A training loss and the predictive distribution behind it."""

    value: Callable[[Tensor, Tensor], Tensor]
    sample: Callable[[Tensor], Tensor]


LOSSES: dict[str, Loss] = {
    "xent": Loss(_xent, _sample_categorical),
    "mse": Loss(_mse, _sample_gaussian),
}
