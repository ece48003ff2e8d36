"""K-FAC (Martens & Grosse 2015; convolutions by KFC, Grosse & Martens 2016) with per-layer lr and damping.

For a layer seen as W [d_out, d_in] (bias as the last column, inputs augmented with a 1: see
:mod:`muso_cli.optim.layer`), with input rows x_r [d_in] and output-gradient rows ∂loss/∂h_r [d_out] of a
batch of N examples (r runs over the N examples, over N × positions for a conv, over N × tokens for a Linear on
[N, T, d]: the "expand" setting of Eschenhagen et al. 2023)::

    A = (1/R) Σ_r x_r x_rᵀ                   [d_in, d_in]   R = number of rows (N, N·H'·W' or N·T)
    δ_r = N · ∂loss/∂h_r                      (the loss is a mean over N examples: δ is a per-example gradient;
                                              N = the leading positions of the model's output, so a loss
                                              averaged over the N·T tokens of [N, T, C] logits has N·T)
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
group ``damping_A``, ``damping_B``: the plan's width multipliers, 1 without a plan and for adaptive rules;
docs/parameterization.md)::

    constant, somup, fanin  ρ_A = ρ·m_A,    ρ_B = ρ·m_B       (the rules differ in the plan's multipliers only)
    trace             ρ_A = ρ·tr(A)·m_A,    ρ_B = ρ·tr(B)·m_B
    pi                ρ_A = √ρ·π·m_A,       ρ_B = √ρ/π·m_B,    π = √((tr A / d_in) / (tr B / d_out))

An all-zero factor (zero inputs or gradients) has no trace to scale with: trace falls back to ρ and pi to
π = 1 (the update along that factor is then zero anyway). :meth:`KFAC.damping` returns the values in effect.

Fisher (per group): ``empirical`` uses the gradients of the training loss. ``mc`` samples targets from the
model's predictive distribution (``muso_cli.losses.LOSSES[loss].sample``: categorical(softmax(f)) for
``loss="xent"``, N(f, I) for ``loss="mse"``): a forward hook on the model fires as ``model(x)`` returns,
computes the sampled loss (a batch mean, like the training loss) and runs ``torch.autograd.grad`` of it with
``retain_graph=True``, so the user's ``loss.backward()`` that follows is untouched; the layers' output-gradient
hooks record that pass for B. It runs when some ``mc`` layer is on a curvature step and costs one extra
backward.

The update of a covered layer is then ``D = (B + ρ_B I)⁻¹ G (A + ρ_A I)⁻¹`` followed by SGD's momentum and
weight decay (weight decay added to D, after preconditioning). G is taken in factored form (exact; see
:mod:`~muso_cli.optim.layer`) when the batch is small compared with the layer. Parameters outside
Linear/Conv2d layers, and grouped convolutions, get SGD with their group's lr.

State per layer (``self.state[weight]``): ``A``, ``B``, ``A_inv``, ``B_inv`` (tensors), ``damping``
({"A": ρ_A, "B": ρ_B}) and ``step``; the momentum buffers as torch.optim.SGD keeps them.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from ..errors import HyperparameterError, check_positive
from ..losses import LOSSES
from ..parametrize import ADAPTIVE_RULES
from .base import DampedOptimizer, LayerwiseOptimizer
from .checks import check_hyperparameters, damping_checks, decay, interval, one_of, renamed
from .layer import Layer, layer_groups, supported, weak_forward_hook
from .tensors import eigh_psd, finite_or, running_average, statistics_decay, statistics_dtype

FISHERS = ("empirical", "mc")
INVERSES = ("cholesky", "eigh")
KL_CLIP = lambda key, value: check_positive(key, value, allow_zero=True, optional=True)  # noqa: E731


def cholesky_inverse(factor: Tensor, damping: float | Tensor) -> tuple[Tensor, Tensor]:
    """((F + ρ I)⁻¹, ok) by Cholesky in F's dtype, for F [..., d, d] (one matrix or a stack) and ρ a float or a
    tensor broadcasting against F ([..., 1, 1]: one ρ per matrix); ok [...] (bool) says where the factorisation
    succeeded and the inverse is finite (elsewhere the inverse is garbage)."""
    eye = torch.eye(factor.shape[-1], dtype=factor.dtype, device=factor.device)
    chol, info = torch.linalg.cholesky_ex(factor + damping * eye)
    ok = info == 0
    # a failed factorisation may hold a zero on its diagonal, which cholesky_inverse raises on
    inverse = torch.cholesky_inverse(torch.where(ok[..., None, None], chol, eye))
    return inverse, ok & torch.isfinite(inverse).flatten(-2).all(-1)


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
            inverse, ok = cholesky_inverse(factor.to(dtype), damping)
            if ok.item():
                return inverse.to(factor.dtype)
        dtypes = (torch.float64,)
    decomposition = eigh_psd(factor, dtypes)
    if decomposition is None:
        return torch.full_like(factor, math.nan)
    lam, q = decomposition
    return ((q / (lam + damping)) @ q.T).to(factor.dtype)


class KFACLayer(Layer):
    """A Linear/Conv2d layer under K-FAC. Statistics: the factors A [d_in, d_in], B [d_out, d_out]; inverses:
    their damped inverses A_inv, B_inv, with the damping used for them in state ``damping``."""

    statistics = ("A", "B")
    inverses = ("A_inv", "B_inv")

    def update_statistics(self, state: dict, group: dict) -> None:
        """Fold this step's captures into A and B (each captured pass counts once; several passes between two
        steps, e.g. gradient accumulation, are averaged). Factors without captures keep their value."""
        dtype = statistics_dtype(self.weight)
        grads = self.mc_grads if group["fisher"] == "mc" else self.grads
        if self.inputs:
            rows = [self.input_rows(x).to(dtype) for x in self.inputs]
            a = sum(x.T @ x / x.shape[0] for x in rows) / len(rows)
            state["A"] = running_average(state.get("A"), a, statistics_decay(state, group))
        if grads:
            # δ = N·g with N the examples the loss averages over (the model output's leading positions: N·T tokens
            # of a sequence loss, N images for a conv or a ViT): B = (1/N) Σ δ δᵀ = N Σ g gᵀ.
            b = sum((self.policy.examples or g.shape[0]) * (d.T @ d)
                    for g, d in zip(grads, (self.grad_rows(g).to(dtype) for g in grads)))
            state["B"] = running_average(state.get("B"), b / len(grads), statistics_decay(state, group))

    def damping_values(self, A: Tensor, B: Tensor, group: dict) -> dict[str, float]:
        """{"A": ρ_A, "B": ρ_B} of the group's rule for the factors A, B (see the module docstring)."""
        rule, rho, mult_A, mult_B = group["damping_rule"], group["damping"], group["damping_A"], group["damping_B"]
        if rule not in ADAPTIVE_RULES:  # constant, somup, fanin: the plan's multipliers only
            return {"A": rho * mult_A, "B": rho * mult_B}
        tr_A, tr_B = A.trace().item(), B.trace().item()
        if rule == "trace":
            return {"A": finite_or(rho * tr_A, rho) * mult_A, "B": finite_or(rho * tr_B, rho) * mult_B}
        pi = math.sqrt((tr_A / self.d_in) / (tr_B / self.d_out)) if tr_A > 0 and tr_B > 0 else 1.0
        return {"A": math.sqrt(rho) * pi * mult_A, "B": math.sqrt(rho) / pi * mult_B}

    def update_inverse(self, state: dict, group: dict) -> None:
        damping = state["damping"] = self.damping_values(state["A"], state["B"], group)
        state["A_inv"] = damped_inverse(state["A"], damping["A"], group["inverse"])
        state["B_inv"] = damped_inverse(state["B"], damping["B"], group["inverse"])

    def precondition(self, state: dict, group: dict) -> Tensor:
        """(B + ρ_B I)⁻¹ G (A + ρ_A I)⁻¹ [d_out, d_in] in the parameters' dtype."""
        return self.two_sided(state["B_inv"], state["A_inv"], group["factored"])


class KFAC(DampedOptimizer):
    """K-FAC as a ``torch.optim.Optimizer`` (see the module docstring for the maths).

    Args:
        params: the model (then also ``model``: every Linear/Conv2d layer preconditioned, weight and bias
            together, other parameters SGD), param groups (e.g. ``plan.param_groups(model, lr)``: a group with
            ``layer``, a module name in ``model.named_modules()`` with params [weight] or [weight, bias], is
            preconditioned, any other group gets SGD), or the model's parameters as plain or named tensors
            (grouped by their layer). Every argument below from ``lr`` on is a group key (``defaults``), as are
            the damping multipliers ``damping_A`` / ``damping_B`` (m_A, m_B; 1 unless the plan sets them).
        model: the network: hooks on its Linear/Conv2d layers record inputs and output gradients (needed
            unless ``params`` is the model).
        loss: xent | mse, the predictive distribution the MC Fisher samples from. Optimizer-wide: the model has
            one output, and the sampled backward is one pass over the whole model.
        lr, momentum, weight_decay: as torch.optim.SGD (weight decay is added after preconditioning).
        bias_weight_decay: a layer's bias's weight decay (None: ``weight_decay``).
        damping: ρ (> 0). damping_rule: constant | somup | fanin | trace | pi.
        ema_decay: weight of the old factor in the running average, in [0, 1).
        curvature_interval, inverse_interval: steps between factor updates and between inverse updates.
        fisher: empirical | mc. inverse: cholesky | eigh.
        factored: allow the exact factored form of G (needs capture every step). lowrank: deprecated alias.

    The defaults here are the textbook K-FAC (curvature and inverses every step, ρ 1e-3, no trust region), as a
    torch optimizer built by hand would expect; ``muso run``'s are conf/optimizer/kfac.yaml's (every 10 steps
    after a warm start of 20, ρ 0.3, ``kl_clip`` 0.1: docs/results.md §8 measured why). Pass those to match it.
    """

    STATISTICS_INTERVAL = "curvature_interval"
    CHECKS = {**LayerwiseOptimizer.CHECKS, **damping_checks("kfac"), "ema_decay": decay,
              "curvature_interval": interval, "fisher": one_of(FISHERS), "inverse": one_of(INVERSES)}

    def __init__(self, params, *, model: nn.Module | None = None, loss: str = "xent", lr: float = 0.1,
                 momentum: float = 0.0, weight_decay: float = 0.0, bias_weight_decay: float | None = None,
                 damping: float = 1e-3, damping_rule: str = "constant", ema_decay: float = 0.95,
                 ema_warmup: bool = True, curvature_interval: int = 1, inverse_interval: int = 1,
                 warmup_steps: int = 20, kl_clip: float | None = None, fisher: str = "empirical",
                 inverse: str = "cholesky", factored: bool = True, lowrank: bool | None = None):
        problems = check_hyperparameters({"loss": loss, "kl_clip": kl_clip},
                                         {"loss": one_of(LOSSES), "kl_clip": KL_CLIP})
        if problems:
            raise problems[0]
        self.loss = loss
        self.kl_clip = kl_clip or None
        self._output_hooked = False
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "bias_weight_decay": bias_weight_decay, "damping": damping, "damping_rule": damping_rule,
                    "damping_A": 1.0, "damping_B": 1.0, "ema_decay": ema_decay, "ema_warmup": ema_warmup,
                    "curvature_interval": curvature_interval, "inverse_interval": inverse_interval,
                    "warmup_steps": warmup_steps,
                    "fisher": fisher, "inverse": inverse, "factored": renamed("lowrank", lowrank, "factored", factored)}
        super().__init__(params, defaults, model=model)

    def tensor_groups(self, tensors: list) -> list[dict]:
        if self.model is None:
            raise HyperparameterError("model", "is needed with plain tensors: K-FAC's hooks record the inputs and "
                                      "output gradients of the model's layers.", "pass model=<the network>.")
        return layer_groups(self.model, tensors)

    def make_layer(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None) -> KFACLayer | None:
        if self.model is None:
            raise HyperparameterError("model", "is needed with param groups: K-FAC's hooks record the inputs and "
                                      "output gradients of the model's layers.", "pass model=<the network>.")
        if module is None:
            raise HyperparameterError("params", f"group layer {name!r} is not a module of the model K-FAC was "
                                      "given.", "name each group's layer as in model.named_modules().")
        if not supported(module):
            warnings.warn(f"K-FAC does not cover layer {name!r} ({type(module).__name__} with groups): it is "
                          f"updated like SGD", UserWarning, stacklevel=2)
            return None
        return KFACLayer(name, weight, bias, module)

    def schedule(self, layer: Layer, group: dict) -> None:
        super().schedule(layer, group)
        if not self._output_hooked:
            weak_forward_hook(self.model, self, KFAC._on_model_output)
            self._output_hooked = True

    def _on_model_output(self, inputs: tuple, output: Tensor) -> None:
        """Count the loss's examples of this forward (B's normalisation); MC Fisher: backpropagate a loss with
        targets sampled from the model's prediction ``output``, when some ``mc`` layer is on a curvature step."""
        if isinstance(output, Tensor) and output.dim() >= 2:
            self.policy.examples = output.shape[:-1].numel()
        due = [layer.weight for layer, group in self.layer_groups()
               if group["fisher"] == "mc" and self.statistics_due(layer, group)]
        if not due:
            return
        if not (isinstance(output, Tensor) and output.dim() >= 2 and output.requires_grad):
            raise ValueError("fisher='mc' needs the model to return logits of shape [N, classes] or [N, T, "
                             f"classes]; got {type(output).__name__} {tuple(getattr(output, 'shape', ()))}")
        if not bool(torch.isfinite(output).all()):
            return  # a diverged forward: no targets to sample (the step refuses the non-finite gradient)
        loss = LOSSES[self.loss]
        sampled = loss.value(output, loss.sample(output))
        self.policy.mc_pass = True
        try:
            # w.r.t. the weights (not the layer outputs): a later in-place op on an output would otherwise cut
            # the graph before the output's hook; the weight gradients themselves are discarded.
            torch.autograd.grad(sampled, due, retain_graph=True, allow_unused=True)
        finally:
            self.policy.mc_pass = False


__all__ = ["FISHERS", "INVERSES", "KFAC", "KFACLayer", "cholesky_inverse", "damped_inverse"]
