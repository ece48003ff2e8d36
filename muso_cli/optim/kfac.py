"""K-FAC (Martens & Grosse 2015; convolutions by KFC, Grosse & Martens 2016) with per-layer lr and damping.

For a layer seen as W [d_out, d_in] (bias as the last column, inputs augmented with a 1: see
:mod:`muso_cli.optim.common`), with input rows x_r [d_in] and output-gradient rows ∂loss/∂h_r [d_out] of a
batch of N examples (r runs over the N examples, or over N × positions for a conv)::

    A = (1/R) Σ_r x_r x_rᵀ                   [d_in, d_in]   R = number of rows (N, or N·H'·W')
    δ_r = N · ∂loss/∂h_r                      (the loss is a batch mean: δ is a per-example gradient)
    B = (1/N) Σ_r δ_r δ_rᵀ = N Σ_r (∂loss/∂h_r)(∂loss/∂h_r)ᵀ      [d_out, d_out]
    G = ∂loss/∂W = (1/N) Σ_r δ_r x_rᵀ
    ΔW = −lr · (B + ρ_B I)⁻¹ G (A + ρ_A I)⁻¹

Conv normalisation: A averages over examples *and* positions, B sums over positions and averages over
examples. KFC writes F ≈ Ω ⊗ Γ with Ω = E[Σ_t x_t x_tᵀ] and Γ = (1/|T|) E[Σ_t δ_t δ_tᵀ]; here A = Ω/|T| and
B = |T|·Γ, the same Kronecker product with the factor |T| moved from Ω to Γ, so that A has the scale of one
patch (|x|²) for the trace rule and a Linear layer is the case |T| = 1.

Factors are running averages ``A ← decay·A + (1 − decay)·A_batch`` (the first update takes the batch factor
as is), updated every ``curvature_interval`` steps; the inverses every ``inverse_interval`` steps (both at
step 0). Damping, per layer and factor, from the group's ``damping_rule`` (ρ = group ``damping``, m_A, m_B =
group ``damping_A``, ``damping_B``: the plan's width multipliers, 1 without a plan and for adaptive rules):

    constant, somup   ρ_A = ρ·m_A,          ρ_B = ρ·m_B       (the rules differ in the plan's multipliers only)
    trace             ρ_A = ρ·tr(A)·m_A,    ρ_B = ρ·tr(B)·m_B
    pi                ρ_A = √ρ·π·m_A,       ρ_B = √ρ/π·m_B,    π = √((tr A / d_in) / (tr B / d_out))

An all-zero factor (zero inputs or gradients) has no trace to scale with: trace falls back to ρ and pi to
π = 1 (the update along that factor is then zero anyway). :meth:`KFAC.damping` returns the values in effect.

Fisher: ``empirical`` uses the gradients of the training loss. ``mc`` samples targets from the model's
predictive distribution (categorical(softmax(f)) for ``loss="xent"``, N(f, I) for ``loss="mse"``): a forward
hook on the model fires as ``model(x)`` returns, computes the sampled loss (a batch mean, like the training
loss) and runs ``torch.autograd.grad`` of it with ``retain_graph=True``, so the user's ``loss.backward()``
that follows is untouched; the layers' output-gradient hooks record that pass for B. It runs on curvature
steps only and costs one extra backward.

The update of a covered layer is then ``D = (B + ρ_B I)⁻¹ G (A + ρ_A I)⁻¹`` followed by SGD's momentum and
weight decay (weight decay added to D, after preconditioning). G is taken in factored form (exact; see
:mod:`~muso_cli.optim.common`) when the batch is small compared with the layer. Parameters outside
Linear/Conv2d layers, and grouped convolutions, get SGD with their group's lr.
"""
from __future__ import annotations

import math
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import parametrize
from .common import (Layer, LayerwiseOptimizer, eigh_psd, finite_or, running_average, statistics_dtype,
                     supported)

DAMPING_RULES = parametrize.DAMPING_RULES["kfac"]  # constant, somup, trace, pi
FISHERS = ("empirical", "mc")
INVERSES = ("cholesky", "eigh")
LOSSES = ("xent", "mse")


def damped_inverse(factor: Tensor, damping: float, method: str) -> Tensor:
    """(F + ρ I)⁻¹ [d, d] of a symmetric PSD factor F, in F's dtype.

    cholesky: Cholesky in float32, then float64 if it fails (ρ tiny next to ‖F‖), then eigh in float64.
    eigh: F = Q diag(λ) Qᵀ (λ clamped to ≥ 0) in float32, then float64; (F + ρI)⁻¹ = Q diag(1/(λ + ρ)) Qᵀ.
    Either is finite for any finite F and ρ > 0 (singular or rank-deficient F included); a non-finite F (a
    diverged run) gives a NaN inverse, so the divergence shows in the loss rather than as an exception.
    """
    dtypes = tuple(dict.fromkeys((statistics_dtype(factor), torch.float64)))
    if method == "cholesky":
        for dtype in dtypes:
            eye = torch.eye(factor.shape[0], dtype=dtype, device=factor.device)
            chol, info = torch.linalg.cholesky_ex(factor.to(dtype) + damping * eye)
            if info.item() == 0:
                inverse = torch.cholesky_inverse(chol)
                if torch.isfinite(inverse).all():
                    return inverse.to(factor.dtype)
        dtypes = (torch.float64,)
    decomposition = eigh_psd(factor, dtypes)
    if decomposition is None:
        return torch.full_like(factor, math.nan)
    lam, q = decomposition
    return ((q / (lam + damping)) @ q.T).to(factor.dtype)


class KFACLayer(Layer):
    """A Linear/Conv2d layer under K-FAC: owns its factors A [d_in, d_in], B [d_out, d_out], their damped
    inverses and the damping values used for them (``damping`` = {"A": ρ_A, "B": ρ_B})."""

    state_keys = ("A", "B", "A_inv", "B_inv", "damping")

    def __init__(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module):
        super().__init__(name, weight, bias, module)
        self.A: Tensor | None = None
        self.B: Tensor | None = None
        self.A_inv: Tensor | None = None
        self.B_inv: Tensor | None = None
        self.damping: dict[str, float] = {}

    def update_factors(self, ema_decay: float, mc: bool) -> None:
        """Fold this step's captures into A and B (each captured pass counts once; several passes between two
        steps, e.g. gradient accumulation, are averaged). Factors without captures keep their value."""
        dtype = statistics_dtype(self.weight)
        grads = self.mc_grads if mc else self.grads
        if self.inputs:
            rows = [self.input_rows(x).to(dtype) for x in self.inputs]
            a = sum(x.T @ x / x.shape[0] for x in rows) / len(rows)
            self.A = running_average(self.A, a, ema_decay)
        if grads:
            # δ = N·g with N the examples of that pass: B = (1/N) Σ δ δᵀ = N Σ g gᵀ.
            b = sum(g.shape[0] * (d.T @ d) for g, d in zip(grads, (self.grad_rows(g).to(dtype) for g in grads)))
            b = b / len(grads)
            self.B = running_average(self.B, b, ema_decay)

    def damping_values(self, rule: str, rho: float, mult_A: float, mult_B: float) -> dict[str, float]:
        """{"A": ρ_A, "B": ρ_B} of ``rule`` for the current factors (see the module docstring)."""
        if rule in ("constant", "somup"):
            return {"A": rho * mult_A, "B": rho * mult_B}
        tr_A, tr_B = self.A.trace().item(), self.B.trace().item()
        if rule == "trace":
            return {"A": finite_or(rho * tr_A, rho) * mult_A, "B": finite_or(rho * tr_B, rho) * mult_B}
        if rule == "pi":
            pi = math.sqrt((tr_A / self.d_in) / (tr_B / self.d_out)) if tr_A > 0 and tr_B > 0 else 1.0
            return {"A": math.sqrt(rho) * pi * mult_A, "B": math.sqrt(rho) / pi * mult_B}
        raise ValueError(f"unknown K-FAC damping rule {rule!r}; use one of {', '.join(DAMPING_RULES)}")

    def update_inverses(self, rule: str, rho: float, mult_A: float, mult_B: float, method: str) -> None:
        self.damping = self.damping_values(rule, rho, mult_A, mult_B)
        self.A_inv = damped_inverse(self.A, self.damping["A"], method)
        self.B_inv = damped_inverse(self.B, self.damping["B"], method)

    def precondition(self, lowrank: bool) -> Tensor:
        """(B + ρ_B I)⁻¹ G (A + ρ_A I)⁻¹ [d_out, d_in] in the parameters' dtype."""
        return self.two_sided(self.B_inv, self.A_inv, lowrank)


class KFAC(LayerwiseOptimizer):
    """K-FAC as a ``torch.optim.Optimizer`` (see the module docstring for the maths).

    Args:
        model: the network. Hooks on its Linear/Conv2d layers record inputs and output gradients.
        params: param groups, e.g. ``plan.param_groups(model, lr)``: a group with ``layer`` (a module name in
            ``model.named_modules()``, params [weight] or [weight, bias]) is preconditioned; any other group
            gets SGD. Group keys (defaults below): ``lr``, ``momentum``, ``weight_decay``, ``damping`` (ρ),
            ``damping_rule``, ``damping_A`` / ``damping_B`` (damping multipliers m_A, m_B). None: one group per
            Linear/Conv2d layer and one per other parameter, all multipliers 1.
        lr, momentum, weight_decay: as torch.optim.SGD (weight decay is added after preconditioning).
        damping: ρ. damping_rule: constant | somup | trace | pi.
        ema_decay: weight of the old factor in the running average, in [0, 1).
        curvature_interval, inverse_interval: steps between factor updates and between inverse updates.
        fisher: empirical | mc. loss: xent | mse (the predictive distribution MC samples from).
        inverse: cholesky | eigh. lowrank: allow the exact factored form of G (needs capture every step).
    """

    def __init__(self, model: nn.Module, params=None, lr: float = 0.1, momentum: float = 0.0,
                 weight_decay: float = 0.0, damping: float = 1e-3, damping_rule: str = "constant",
                 ema_decay: float = 0.95, curvature_interval: int = 1, inverse_interval: int = 1,
                 fisher: str = "empirical", loss: str = "xent", inverse: str = "cholesky", lowrank: bool = True):
        for key, value, choices in (("damping_rule", damping_rule, DAMPING_RULES), ("fisher", fisher, FISHERS),
                                    ("loss", loss, LOSSES), ("inverse", inverse, INVERSES)):
            if value not in choices:
                raise ValueError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        if not 0 <= ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.ema_decay, self.fisher, self.loss, self.inverse = ema_decay, fisher, loss, inverse
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "damping": damping,
                    "damping_rule": damping_rule, "damping_A": 1.0, "damping_B": 1.0}
        super().__init__(params, defaults, model=model,
                         statistics_interval=curvature_interval, inverse_interval=inverse_interval, lowrank=lowrank)
        if fisher == "mc":
            self._register_sampled_backward(model)

    def make_layer(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None) -> KFACLayer | None:
        if module is None:
            raise ValueError(f"group layer {name!r} is not a module of the model K-FAC was given")
        if not supported(module):
            warnings.warn(f"K-FAC does not cover layer {name!r} ({type(module).__name__} with groups): it is "
                          f"updated like SGD", UserWarning, stacklevel=4)
            return None
        return KFACLayer(name, weight, bias, module)

    def layer_direction(self, layer: KFACLayer, group: dict, update_statistics: bool,
                        update_inverse: bool) -> Tensor | None:
        if update_statistics:
            layer.update_factors(self.ema_decay, mc=self.fisher == "mc")
        if layer.A is None or layer.B is None:
            warnings.warn(f"K-FAC has no curvature for layer {layer.name!r} yet (its forward/backward ran in eval "
                          f"mode or without grad?): this step updates it like SGD", UserWarning, stacklevel=3)
            return None
        if update_inverse or layer.A_inv is None:
            layer.update_inverses(group["damping_rule"], group["damping"], group["damping_A"], group["damping_B"],
                                  self.inverse)
        return layer.precondition(self.lowrank)

    def damping(self) -> dict[str, dict[str, float]]:
        """Damping values in effect per layer: {layer name: {"A": ρ_A, "B": ρ_B}} (from the last inverse update)."""
        return {name: dict(layer.damping) for name, layer in self.layers.items() if layer.damping}

    def _register_sampled_backward(self, model: nn.Module) -> None:
        """The model's forward hook for the MC Fisher. Like the layer hooks (:meth:`Layer.attach`) it holds the
        optimizer by weak reference, removes itself once the optimizer is gone and ignores a deepcopy's forward."""
        opt = weakref.ref(self)

        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            owner = opt()
            if owner is None:
                handle.remove()
            elif module is model and model.training and torch.is_grad_enabled() and owner.is_statistics_step():
                owner._sampled_backward(output)

        handle = model.register_forward_hook(hook)

    def _sampled_backward(self, output: Tensor) -> None:
        """MC Fisher: backpropagate a loss with targets sampled from the model's prediction ``output``."""
        if not (isinstance(output, Tensor) and output.dim() == 2 and output.requires_grad):
            raise ValueError("fisher='mc' needs the model to return logits of shape [N, classes]; got "
                             f"{type(output).__name__} {tuple(getattr(output, 'shape', ()))}")
        with torch.no_grad():
            if self.loss == "xent":
                target = torch.multinomial(F.softmax(output.float(), 1), 1).squeeze(1)
            else:
                target = output + torch.randn_like(output)
        sampled = F.cross_entropy(output, target) if self.loss == "xent" \
            else 0.5 * (output - target).pow(2).sum(1).mean()
        weights = [layer.weight for layer in self.layers.values()]
        self.policy.mc_pass = True
        try:
            # w.r.t. the weights (not the layer outputs): a later in-place op on an output would otherwise cut
            # the graph before the output's hook; the weight gradients themselves are discarded.
            torch.autograd.grad(sampled, weights, retain_graph=True, allow_unused=True)
        finally:
            self.policy.mc_pass = False
