"""The tensor math muso's optimizers share: the dtype and running average of curvature statistics, an eigen-
decomposition that survives rounding, and the two first-order updates every parameter ends in (torch.optim.SGD's,
and Adam's direction, which SOAP applies in its eigenbasis and to its other parameters).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor


def statistics_dtype(t: Tensor) -> torch.dtype:
    """Curvature statistics are kept in at least float32, whatever the parameter dtype."""
    return torch.promote_types(t.dtype, torch.float32)


def finite_or(value: float, default: float) -> float:
    """``value`` when it is finite and > 0, else ``default`` (adaptive damping of an all-zero factor)."""
    return value if math.isfinite(value) and value > 0 else default


def running_average(old: Tensor | None, new: Tensor, decay: float) -> Tensor:
    """decay·old + (1 − decay)·new as a new tensor (``old`` is left as it was: a step that is refused keeps the
    statistics it had); the first value (old None) is taken as is."""
    if old is None:
        return new
    return torch.lerp(new, old, decay)


def statistics_decay(state: dict, group: dict) -> float:
    """The weight of the old statistic in this statistics update: the group's ``ema_decay``, or, with
    ``ema_warmup`` (Martens & Grosse 2015, §5), min(ema_decay, 1 − 1/k) for the layer's k-th update
    (``state["statistics_updates"]``, counted by the optimizer): the statistic is then the plain mean of the first
    1/(1 − ema_decay) updates instead of being dominated by the first batch, and the running average after that."""
    decay = group["ema_decay"]
    if group.get("ema_warmup"):
        decay = min(decay, 1.0 - 1.0 / max(1, state.get("statistics_updates", 1)))
    return decay


def eigh_psd(matrix: Tensor, dtypes: Iterable[torch.dtype]) -> tuple[Tensor, Tensor] | None:
    """Eigen-decomposition (λ ≥ 0 [d], Q [d, d]) of a symmetric PSD matrix, trying each dtype in turn.

    Negative eigenvalues (rounding) are clamped to 0. None when every attempt fails (a non-finite matrix).
    """
    for dtype in dtypes:
        try:
            lam, q = torch.linalg.eigh(matrix.to(dtype))
        except torch.linalg.LinAlgError:
            continue
        if torch.isfinite(lam).all():
            return lam.clamp_(min=0), q
    return None


def sgd_update_(p: Tensor, direction: Tensor, state: dict, *, lr: float, momentum: float, weight_decay: float,
                nesterov: bool = False) -> None:
    """torch.optim.SGD's update (dampening 0) with ``direction`` (shaped like ``p``) in place of the gradient:
    v ← momentum·v + (direction + weight_decay·p) (v = that sum on the first step), p ← p − lr·v
    (Nesterov: p ← p − lr·(direction + weight_decay·p + momentum·v)). v is ``state["momentum_buffer"]``."""
    d = direction.add(p, alpha=weight_decay) if weight_decay else direction
    if momentum:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.clone(d).detach()
        else:
            buf.mul_(momentum).add_(d)
        d = d.add(buf, alpha=momentum) if nesterov else buf
    p.add_(d, alpha=-lr)


def adam_direction(state: dict, grad: Tensor, group: dict, eps: float,
                   rotate: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Adam's bias-corrected direction m̂ / (√v̂ + ε) for ``grad`` (any shape; a matrix [d_out, d_in] with
    ``rotate``), in float32 at least; muso's one Adam (Muon's AdamW part is torch's own, to match it bit for bit).

    Updates ``state``'s ``exp_avg`` m ← β₁·m + (1 − β₁)·grad and ``exp_avg_sq`` v ← β₂·v + (1 − β₂)·grad⊙grad
    (β₁, β₂ = the group's ``beta1``, ``beta2``; each first value is (1 − β)·its term, as from zeros); the step t is
    ``state["step"]`` + 1 (the caller counts steps). ``rotate`` (Q_L [d_out, d_out], Q_R [d_in, d_in]): the
    second moment and the ratio in that eigenbasis (grad → Q_Lᵀ grad Q_R, m too), the result rotated back (SOAP's
    layer update); m stays in the parameters' own basis.
    """
    b1, b2 = group["beta1"], group["beta2"]
    t = state.get("step", 0) + 1
    grad = grad.to(statistics_dtype(grad))
    m = state["exp_avg"] = grad * (1 - b1) if "exp_avg" not in state else state["exp_avg"].lerp_(grad, 1 - b1)
    if rotate is not None:
        ql, qr = rotate
        grad, m = ql.T @ grad @ qr, ql.T @ m @ qr
    sq = grad * grad
    v = state["exp_avg_sq"] = sq * (1 - b2) if "exp_avg_sq" not in state else state["exp_avg_sq"].lerp_(sq, 1 - b2)
    ratio = (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    return ratio if rotate is None else rotate[0] @ ratio @ rotate[1].T


__all__ = ["adam_direction", "eigh_psd", "finite_or", "running_average", "sgd_update_", "statistics_decay",
           "statistics_dtype"]
