"""What K-FAC and Shampoo share: layers seen as matrices, gradient capture by hooks, the layer protocol, the
SGD update, the checks of their hyperparameters and the loop.

A preconditioned layer (``nn.Linear``, ``nn.Conv2d``, or for Shampoo any weight tensor) is one matrix
``W`` of shape [d_out, d_in]: the weight flattened as ``weight.flatten(1)`` (conv: d_in = C_in·kh·kw, in the
order of ``F.unfold``'s patch entries), augmented with the bias as its last column when there is one
(d_in = fan_in + 1), so that ``h = W [x; 1]``: weight and bias are preconditioned together.

The layer protocol. :class:`Layer` owns that view and this step's captured activations (hooks record the
layer inputs ``x`` and the gradients ``g = ∂loss/∂h`` of its outputs); everything that outlives a step (the
statistics, what is computed from them, the damping in effect, the layer's step count) is kept in the
optimizer's ``self.state[layer.weight]``, so that torch's ``state_dict`` holds it. With ``state`` that dict and
``group`` the layer's param group (all hyperparameters), a subclass implements::

    update_statistics(state, group)   fold this step's gradient information into the statistics
    update_inverse(state, group)      recompute what ``precondition`` applies from the statistics (damped
                                      inverses for K-FAC, inverse roots for Shampoo; an eigenbasis for SOAP)
    precondition(state, group) -> D   the update direction D [d_out, d_in] from this step's gradient

and names the keys of ``state`` that hold the statistics and the inverses (``statistics``, ``inverses``).
The optimizer (:meth:`LayerwiseOptimizer.layer_direction`) calls ``update_statistics`` on the group's statistics
steps and ``update_inverse`` on its inverse steps, each also whenever its keys are missing; a layer still without
statistics after that is updated like SGD for the step. A preconditioner without statistics (Muon: G
orthogonalised) implements ``precondition`` alone.

:class:`LayerwiseOptimizer` is the ``torch.optim.Optimizer`` that builds the layers from the param groups (at
construction and in ``add_param_group``), schedules statistics and inverse updates, and applies the update
``W ← W − lr·v, v ← momentum·v + (D + weight_decay·W)`` to the preconditioned direction D of every layer and
to the plain gradient of every other parameter (torch.optim.SGD with dampening 0). Weight decay therefore
enters *after* preconditioning (as in kfac-pytorch, where the wrapped SGD sees the preconditioned gradient):
it is a plain L2 pull, not reshaped by the curvature, and it leaves the batch gradient that the factored
form below relies on untouched. A layer's bias decays by the group's ``bias_weight_decay`` (None: by
``weight_decay``, as torch would).

The factored form. One forward and one backward of a batch give the gradient as a product
``G = Δᵀ X`` with X [R, d_in] the (augmented) input rows and Δ [R, d_out] the output-gradient rows
(R = batch size for an MLP; batch × positions for a conv, patches by ``F.unfold``). Products such as
``P G Q = (P Δᵀ)(X Q)`` then cost R·(d_out² + d_in² + d_out·d_in) instead of d_out·d_in·(d_out + d_in);
K-FAC and Shampoo use them (group key ``factored``) when R is small enough for that to be cheaper. The form is
exact, not an approximation, but only when the ``.grad`` the optimizer sees is that product: one forward and
one backward since the last step, nothing added to or rescaled in the gradient afterwards (gradient
accumulation, clipping, a weight used twice). :meth:`Layer.factored_grad` checks this with one random probe
vector (‖G v − Δᵀ(X v)‖ ≤ 1e-4·‖G v‖, a matrix-vector product) and the optimizers fall back to the dense
matrices when it fails.
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import parametrize
from ..errors import (HyperparameterError, UsageError, check_bool, check_one_of, check_positive,
                      check_unit_interval)

LAYER_TYPES = (nn.Linear, nn.Conv2d)
_PROBE_TOL = 1e-4  # relative; fp32 rounding of a batch gradient is ~1e-6, a clipped or summed one far larger


def supported(module: nn.Module | None) -> bool:
    """A module whose inputs the hooks can turn into rows of X: Linear, or Conv2d without groups."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def finite_or(value: float, default: float) -> float:
    """``value`` when it is finite and > 0, else ``default`` (adaptive damping of an all-zero factor)."""
    return value if math.isfinite(value) and value > 0 else default


def statistics_dtype(t: Tensor) -> torch.dtype:
    """Curvature statistics are kept in at least float32, whatever the parameter dtype."""
    return torch.promote_types(t.dtype, torch.float32)


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


def schedule_due(step: int, group: dict, interval_key: str) -> bool:
    """Whether a layer's (0-based) ``step`` is one of its group's ``interval_key`` steps: every step during the
    warm start (the layer's first ``warmup_steps`` steps, group key, 0 without it), then every ``interval`` steps,
    counted from the layer's step 0 (interval 10, warm start 20: steps 0, 1, …, 19, 20, 30, 40, …). The batched
    trials (muso_cli.batched) share it: their members share the step count, hence one schedule."""
    return step < group.get("warmup_steps", 0) or step % group[interval_key] == 0


def trust_region_scale(kl_clip: float, total: Tensor) -> Tensor:
    """ν = min(1, √(κ / total)) for κ = ``kl_clip`` and total = Σ_layers lr_l² ⟨D_l, G_l⟩ (float32, any shape: one
    total per member of a batched trial); a total of 0 (no gradient) gives ν = 1."""
    return (kl_clip / total.clamp(min=torch.finfo(torch.float32).tiny)).sqrt().clamp(max=1.0)


def weak_forward_hook(module: nn.Module, owner: object, fn: Callable[[Any, tuple, Any], None]) -> None:
    """Call ``fn(owner, inputs, output)`` after every forward of ``module`` in training mode with grad enabled.

    The hook holds ``owner`` by weak reference and removes itself once the owner is gone, so that a dropped
    optimizer stops recording (a model outlives many optimizers in a sweep); ``fn`` must therefore not hold the
    owner (a function, not a bound method). It fires only for the module it was registered on: a deepcopy of the
    model copies the hook, and the copy must not record.
    """
    ref = weakref.ref(owner)

    def hook(m: nn.Module, inputs: tuple, output: Any) -> None:
        alive = ref()
        if alive is None:
            handle.remove()
        elif m is module and m.training and torch.is_grad_enabled():
            fn(alive, inputs, output)

    handle = module.register_forward_hook(hook)


@dataclass
class HookPolicy:
    """Shared by an optimizer and its layers' hooks. mc_pass: the backward in progress is the optimizer's own
    (sampled-target, K-FAC's MC Fisher) one, not the user's. examples: the number of terms the training loss
    averages over in the model's last forward (its output's leading positions, N or N·T), when the optimizer
    watches the model's output (K-FAC), else None."""

    mc_pass: bool = False
    examples: int | None = None


class Layer:
    """One preconditioned layer seen as a matrix W [d_out, d_in], and the layer protocol (module docstring).

    name: the module name (or a label for a bare tensor). module: the Linear/Conv2d the tensors belong to,
    or None (no hooks: the optimizer works from ``.grad`` alone). capture: whether the hook records the next
    forward (set by the optimizer's schedule).
    """

    statistics: tuple[str, ...] = ()  # keys of the layer's state holding its statistics
    inverses: tuple[str, ...] = ()    # keys holding what update_inverse computes

    def __init__(self, name: str, weight: Tensor, bias: Tensor | None = None, module: nn.Module | None = None):
        if weight.dim() < 2:
            raise HyperparameterError("params", f"layer {name!r}: the weight must have at least 2 dimensions, got "
                                      f"{tuple(weight.shape)}.", "give a 1-D tensor a group without 'layer'.")
        if bias is not None and bias.shape != weight.shape[:1]:
            raise HyperparameterError("params", f"layer {name!r}: bias of shape {tuple(bias.shape)} does not match "
                                      f"the weight's {weight.shape[0]} outputs.", "group a layer as [weight, bias].")
        self.name, self.weight, self.bias, self.module = name, weight, bias, module
        self.d_out = weight.shape[0]
        self.fan_in = weight[0].numel()
        self.d_in = self.fan_in + (bias is not None)
        self.path = "dense"          # which form the last step used: "dense" or "factored"
        self.capture = True
        self.policy = HookPolicy()
        self.inputs: list[Tensor] = []      # this step's layer inputs (detached), one per captured forward
        self.grads: list[Tensor] = []       # ∂loss/∂h of the user's backward, one per captured backward
        self.mc_grads: list[Tensor] = []    # ∂loss/∂h of the optimizer's sampled-target backward (K-FAC MC)
        self._factored: tuple[Tensor, Tensor] | None | bool = False  # cache of factored_grad (False: unknown)
        self._probe: Tensor | None = None

    # -- the protocol ----------------------------------------------------------------------------------------

    def update_statistics(self, state: dict, group: dict) -> None:
        """Fold this step's gradient information into the statistics in ``state`` (none by default)."""

    def update_inverse(self, state: dict, group: dict) -> None:
        """Recompute from the statistics what :meth:`precondition` applies (nothing by default)."""

    def precondition(self, state: dict, group: dict) -> Tensor:
        """The update direction D [d_out, d_in] of this step, in the parameters' dtype."""
        raise NotImplementedError

    def has_statistics(self, state: dict) -> bool:
        return all(state.get(key) is not None for key in self.statistics)

    def has_inverse(self, state: dict) -> bool:
        return all(state.get(key) is not None for key in self.inverses)

    @property
    def params(self) -> list[Tensor]:
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def has_grad(self) -> bool:
        return any(p.grad is not None for p in self.params)

    # -- the matrix view ---------------------------------------------------------------------------------

    def grad_matrix(self) -> Tensor:
        """∂loss/∂W [d_out, d_in] from the parameters' ``.grad`` (a missing gradient counts as zero)."""
        w = self.weight.grad.flatten(1) if self.weight.grad is not None else torch.zeros_like(self.weight).flatten(1)
        if self.bias is None:
            return w
        b = self.bias.grad if self.bias.grad is not None else torch.zeros_like(self.bias)
        return torch.cat([w, b[:, None]], 1)

    def split(self, matrix: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """(parameter, its block of ``matrix`` [d_out, d_in] shaped like it)."""
        yield self.weight, matrix[:, :self.fan_in].reshape(self.weight.shape)
        if self.bias is not None:
            yield self.bias, matrix[:, -1]

    # -- capture -------------------------------------------------------------------------------------------

    def attach(self, policy: HookPolicy) -> None:
        """Register the capture hook on the module (held weakly: see :func:`weak_forward_hook`)."""
        self.policy = policy
        weak_forward_hook(self.module, self, Layer.on_forward)

    def on_forward(self, inputs: tuple, output: Tensor) -> None:
        if self.capture and output.requires_grad:
            self.record(inputs[0], output)

    def record(self, x: Tensor, output: Tensor) -> None:
        """Keep the layer input and arrange for the gradient of the output to be kept (until the next step)."""
        self.inputs.append(x.detach())
        policy = self.policy

        def on_grad(g: Tensor) -> None:
            (self.mc_grads if policy.mc_pass else self.grads).append(g.detach())

        # A tensor hook (not a module backward hook): it sees the gradient of h even when a later in-place op
        # (ReLU(inplace=True)) modifies h, and it costs nothing when no backward reaches h.
        output.register_hook(on_grad)

    def clear(self) -> None:
        """Forget this step's captures (called by the optimizer at the end of every step)."""
        self.inputs.clear()
        self.grads.clear()
        self.mc_grads.clear()
        self._factored = False

    def input_rows(self, x: Tensor) -> Tensor:
        """Rows of X [R, d_in] for one captured input: conv patches by unfold, a trailing 1 with a bias.

        Linear: x [N, ..., fan_in] → [N·…, fan_in]. Conv2d: x [N, C, H, W] → patches [N·H'·W', C·kh·kw], padded
        exactly as the layer pads (its own padding mode), so that conv(x) = patches @ weight.flatten(1)ᵀ.
        """
        m = self.module
        if isinstance(m, nn.Conv2d):
            # _reversed_padding_repeated_twice is the F.pad form of the layer's padding (also for 'same').
            mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
            x = F.pad(x, m._reversed_padding_repeated_twice, mode=mode)
            x = F.unfold(x, m.kernel_size, dilation=m.dilation, stride=m.stride).transpose(1, 2)
        rows = x.reshape(-1, self.fan_in)
        if self.bias is not None:
            rows = torch.cat([rows, rows.new_ones(rows.shape[0], 1)], 1)
        return rows

    def grad_rows(self, g: Tensor) -> Tensor:
        """Rows of Δ [R, d_out] for one captured output gradient (conv: one row per example and position)."""
        if isinstance(self.module, nn.Conv2d):
            g = g.movedim(1, -1)
        return g.reshape(-1, self.d_out)

    def captured_rows(self) -> int | None:
        """R of this step's single forward/backward pair (None when there is not exactly one of each)."""
        if len(self.inputs) != 1 or len(self.grads) != 1:
            return None
        return self.grads[0].numel() // self.d_out

    def factored_grad(self) -> tuple[Tensor, Tensor] | None:
        """(Δ [R, d_out], X [R, d_in]) with ``grad_matrix() == Δᵀ X``, or None when that does not hold.

        Checked with a fixed random probe vector v: ‖G v − Δᵀ(X v)‖ ≤ 1e-4·‖G v‖, O(d_out·d_in) work.
        """
        if self._factored is not False:
            return self._factored
        self._factored = None
        if self.captured_rows() is None or not self.has_grad():
            return None
        x, d = self.input_rows(self.inputs[0]), self.grad_rows(self.grads[0])
        if x.dtype != self.weight.dtype or d.dtype != self.weight.dtype:
            return None
        if self._probe is None or self._probe.device != self.weight.device:
            g = torch.Generator().manual_seed(0)
            self._probe = torch.randn(self.d_in, generator=g, dtype=self.weight.dtype).to(self.weight.device)
        v = self._probe
        gv = (self.weight.grad.flatten(1) @ v[:self.fan_in] if self.weight.grad is not None
              else v.new_zeros(self.d_out))
        if self.bias is not None and self.bias.grad is not None:
            gv = gv + self.bias.grad * v[-1]
        err = torch.linalg.vector_norm(gv - d.T @ (x @ v))
        if err <= _PROBE_TOL * torch.linalg.vector_norm(gv) + torch.finfo(v.dtype).tiny:
            self._factored = (d, x)
        return self._factored

    def factored_if_cheaper(self, use_factored: bool, cost: Callable[[int], int]) -> tuple[Tensor, Tensor] | None:
        """The exact factored gradient (Δ, X) when ``use_factored``, this step has one forward/backward pair and
        ``cost(R)`` (the factored computation's flops for R rows) is below the dense d_out·d_in·(d_out + d_in)."""
        rows = self.captured_rows() if use_factored else None
        if rows is None or cost(rows) >= self.d_out * self.d_in * (self.d_out + self.d_in):
            return None
        return self.factored_grad()

    def two_sided(self, left: Tensor, right: Tensor, use_factored: bool) -> Tensor:
        """left @ G @ right [d_out, d_in] in the parameters' dtype, for left [d_out, d_out] and right [d_in, d_in]
        (statistics may be kept in a wider dtype than the parameters: the product is then formed in theirs).

        With ``use_factored`` and an exact factored gradient, computes (left Δᵀ)(X right) when that is cheaper.
        Sets ``self.path`` to the form used.
        """
        if left.dtype != self.weight.dtype:
            self.path = "dense"
            return (left @ self.grad_matrix().to(left.dtype) @ right).to(self.weight.dtype)
        pair = self.factored_if_cheaper(
            use_factored, lambda rows: rows * (self.d_out ** 2 + self.d_in ** 2 + self.d_out * self.d_in))
        if pair is not None:
            d, x = pair
            self.path = "factored"
            return (left @ d.T) @ (x @ right)
        self.path = "dense"
        return left @ self.grad_matrix() @ right


def _name(prefix: str, attr: str) -> str:
    return f"{prefix}.{attr}" if prefix else attr


def layer_groups(model: nn.Module, tensors: Iterable | None = None) -> list[dict]:
    """Default param groups without a plan: one per Linear/Conv2d (``layer`` = its module name, weight then
    bias), and one per remaining parameter (updated like SGD), all named (torch's ``param_names``).
    Multipliers are left to the optimizer's defaults (1). With ``tensors`` (tensors or (name, tensor) pairs of
    ``model``), only those: a layer whose weight is not among them has no group.
    """
    parameters = {id(p): p for p in model.parameters()}
    keep = None
    if tensors is not None:
        keep = {id(t[1] if isinstance(t, tuple) else t) for t in tensors}
        if not keep <= parameters.keys():
            raise HyperparameterError("params", "holds tensors that are not parameters of the model.",
                                      "give the model's parameters, or param groups.")
    wanted = lambda p: p is not None and (keep is None or id(p) in keep)  # noqa: E731
    groups, seen = [], set()
    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES) and wanted(module.weight) and id(module.weight) not in seen:
            params = [(_name(name, a), p) for a, p in (("weight", module.weight), ("bias", module.bias)) if wanted(p)]
            seen.update(id(p) for _, p in params)
            groups.append({"params": params, "layer": name})
    for name, p in model.named_parameters():
        if id(p) not in seen and wanted(p):
            groups.append({"params": [(name, p)]})
    return groups


def sgd_update_(p: Tensor, direction: Tensor, state: dict, *, lr: float | Tensor, momentum: float,
                weight_decay: float, nesterov: bool = False) -> None:
    """torch.optim.SGD's update (dampening 0) with ``direction`` in place of the gradient:
    v ← momentum·v + (direction + weight_decay·p) (v = that sum on the first step), p ← p − lr·v
    (Nesterov: p ← p − lr·(direction + weight_decay·p + momentum·v)).

    ``lr``: a float, or a tensor that broadcasts against ``p`` (batched trials, muso_cli.batched: [N, 1, …], one
    lr per member of a stack of N).
    """
    d = direction.add(p, alpha=weight_decay) if weight_decay else direction
    if momentum:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.clone(d).detach()
        else:
            buf.mul_(momentum).add_(d)
        d = d.add(buf, alpha=momentum) if nesterov else buf
    if isinstance(lr, Tensor):
        p.sub_(d * lr)
    else:
        p.add_(d, alpha=-lr)


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


# ------------------------------------------------------------------------------------------------------
# Hyperparameter checks: one per fact, as data (key → check). A check returns None or the UsageError of the
# ground layer (muso_cli.errors), which check_hyperparameters raises as the HyperparameterError of that key.

Check = Callable[[str, Any], UsageError | None]


def non_negative(key: str, value: Any) -> UsageError | None:
    return check_positive(key, value, allow_zero=True)


def positive(key: str, value: Any) -> UsageError | None:
    return check_positive(key, value)


def interval(key: str, value: Any) -> UsageError | None:
    return check_positive(key, value, integer=True)


def decay(key: str, value: Any) -> UsageError | None:
    return check_unit_interval(key, value, 0.95)


def one_of(choices: Iterable[str]) -> Check:
    choices = tuple(choices)
    return lambda key, value: check_one_of(key, value, choices)


def check_hyperparameters(values: dict, checks: dict[str, Check], where: str = "") -> None:
    """Raise :class:`~muso_cli.errors.HyperparameterError` for the first of ``values`` its check refuses
    (keys without a check pass). ``where`` is appended to the problem (e.g. which param group)."""
    for key, value in values.items():
        error = checks[key](key, value) if key in checks else None
        if error is not None:
            raise HyperparameterError(key, f"{error.problem.rstrip('.')}{where}.", error.fix)


def damping_checks(optimizer: str) -> dict[str, Check]:
    """The damping hyperparameters of ``optimizer``'s column of the damping table (muso_cli.parametrize):
    ρ > 0, one of its rules, and its per-layer multipliers ``damping_<factor>`` > 0."""
    rules = parametrize.DAMPING[optimizer]
    factors = dict.fromkeys(factor for rule in rules.values() for factor in rule)
    return {"damping": positive, "damping_rule": one_of(rules), **{f"damping_{f}": positive for f in factors}}


def renamed(old: str, old_value: Any, new: str, new_value: Any) -> Any:
    """The value of argument ``new``, or of its deprecated alias ``old`` when that was given (FutureWarning)."""
    if old_value is None:
        return new_value
    warnings.warn(f"{old} is deprecated: it was renamed {new} (same meaning)", FutureWarning, stacklevel=3)
    return old_value


class LayerwiseOptimizer(torch.optim.Optimizer):
    """Base of :class:`~muso_cli.optim.kfac.KFAC` and :class:`~muso_cli.optim.shampoo.Shampoo`: a torch
    optimizer whose param groups with a ``layer`` key are preconditioned by a :class:`Layer` (the layer protocol,
    module docstring) and whose other groups get SGD.

    ``params``: the model (then also ``model``; groups from :func:`layer_groups`), param groups, or plain or
    named tensors (grouped by :meth:`tensor_groups`). Every hyperparameter is in ``defaults`` and may be set per
    group; checked by ``CHECKS`` (defaults once, then what each group sets itself). Every group has at least
    ``lr``, ``momentum``, ``weight_decay``, ``bias_weight_decay``, ``inverse_interval``, the statistics interval
    (key ``STATISTICS_INTERVAL``), and ``factored`` (capture every step so that the factored form can be used;
    without it the hooks capture only on statistics steps). Schedules are counted per layer from the step its
    group was added (``self.state[weight]["step"]``); statistics and inverses are both updated at its step 0, and
    at every step of the warm start when the group has ``warmup_steps`` (:meth:`due`). Optional group keys read
    here: ``warmup_steps``, ``ema_warmup`` (:func:`statistics_decay`). The step is atomic and refuses non-finite
    values (:meth:`step`, :attr:`diverged`); a subclass may set :attr:`kl_clip` (the trust region).
    """

    STATISTICS_INTERVAL = "statistics_interval"
    CHECKS: dict[str, Check] = {
        "lr": non_negative, "momentum": lambda key, value: check_unit_interval(key, value, 0.9),
        "weight_decay": non_negative,
        "bias_weight_decay": lambda key, value: check_positive(key, value, allow_zero=True, optional=True),
        "inverse_interval": interval, "factored": check_bool, "ema_warmup": check_bool,
        "warmup_steps": lambda key, value: check_positive(key, value, integer=True, allow_zero=True)}

    def __init__(self, params, defaults: dict, *, model: nn.Module | None):
        check_hyperparameters(defaults, self.CHECKS)
        if isinstance(params, nn.Module):
            if model is not None and model is not params:
                raise HyperparameterError("model", "differs from the model given as params.",
                                          "give the model once: as params, or as model= with param groups.")
            model, params = params, layer_groups(params)
        self.model = model
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = self.tensor_groups(params)
        self.policy = HookPolicy()
        self.layers: dict[str, Layer] = {}
        self._modules_by_name: dict[str, nn.Module] = {}
        super().__init__(params, defaults)  # calls add_param_group for every group

    # -- what a subclass provides --------------------------------------------------------------------------

    def tensor_groups(self, tensors: list) -> list[dict]:
        """Param groups for plain tensors or (name, tensor) pairs: each matrix a layer of its own, vectors updated
        like SGD (what Shampoo and SOAP do; K-FAC needs the model's modules and overrides this)."""
        groups = []
        for i, t in enumerate(tensors):
            name, p = t if isinstance(t, tuple) else (f"tensor{i}", t)
            groups.append({"params": [t], "layer": name} if p.dim() >= 2 else {"params": [t]})
        return groups

    def make_layer(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None) -> Layer | None:
        """The subclass's Layer for a group (None: the group is updated like SGD)."""
        raise NotImplementedError

    # -- groups ----------------------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        """torch's, and then: the hyperparameters the group sets are checked, and a group with ``layer``
        (params [weight] or [weight, bias] of that module of ``model``) is preconditioned from its next step on
        (its Layer made, the capture hook attached); a group without ``layer`` gets SGD."""
        label = (f" (param group of layer {param_group['layer']!r})" if param_group.get("layer") is not None
                 else f" (param group {len(self.param_groups)})")
        check_hyperparameters(param_group, self.CHECKS, label)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group.get("layer") is None:
            return
        try:
            layer = self._make_layer(group)
        except Exception:
            self.param_groups.pop()
            raise
        if layer is not None:
            self.layers[layer.name] = layer
            if layer.module is not None:
                layer.attach(self.policy)
            self.schedule(layer, group)

    def _make_layer(self, group: dict) -> Layer | None:
        name, params = group["layer"], group["params"]
        if name in self.layers:
            raise HyperparameterError("params", f"has two param groups for layer {name!r}.",
                                      "give each layer one group.")
        if len(params) > 2:
            raise HyperparameterError("params", f"group of layer {name!r}: expected [weight] or [weight, bias], got "
                                      f"{len(params)} tensors.", "give every other tensor a group without 'layer'.")
        if name not in self._modules_by_name and self.model is not None:  # a module added since the last look
            self._modules_by_name = dict(self.model.named_modules())
        module = self._modules_by_name.get(name)
        if module is not None and (params[0] is not module.weight or (len(params) == 2 and params[1] is not module.bias)):
            raise HyperparameterError("params", f"group of layer {name!r}: its params must be [{name}.weight] or "
                                      f"[{name}.weight, {name}.bias], in that order.", "reorder the group's params.")
        return self.make_layer(name, params[0], params[1] if len(params) == 2 else None, module)

    def layer_groups(self) -> Iterator[tuple[Layer, dict]]:
        """(layer, its param group) for every preconditioned layer."""
        for group in self.param_groups:
            layer = self.layers.get(group.get("layer"))
            if layer is not None:
                yield layer, group

    # -- the schedule ----------------------------------------------------------------------------------------

    def layer_step(self, layer: Layer) -> int:
        """Steps taken since ``layer``'s group was added (a refused step does not count)."""
        return self.state.get(layer.weight, {}).get("step", 0)

    def due(self, layer: Layer, group: dict, interval_key: str) -> bool:
        """Whether ``layer``'s step is one of its group's ``interval_key`` steps (:func:`schedule_due`)."""
        return schedule_due(self.layer_step(layer), group, interval_key)

    def statistics_due(self, layer: Layer, group: dict) -> bool:
        return self.due(layer, group, self.STATISTICS_INTERVAL)

    def inverse_due(self, layer: Layer, group: dict) -> bool:
        return self.due(layer, group, "inverse_interval")

    def schedule(self, layer: Layer, group: dict) -> None:
        """Set what ``layer``'s hook records on the next forward: on its statistics steps, and on every step when
        the factored form may be used. Called after every step, for an added group and after loading a state."""
        layer.capture = group["factored"] or self.statistics_due(layer, group)

    def layer_direction(self, layer: Layer, group: dict, state: dict) -> Tensor | None:
        """The preconditioned direction D [d_out, d_in] of ``layer`` this step, or None (update it like SGD):
        the layer protocol on the group's schedule, working on ``state`` (the step's copy of the layer's state,
        kept only when the whole step is finite). Counts the statistics updates (``statistics_updates``, read by
        :func:`statistics_decay`)."""
        if layer.statistics and (self.statistics_due(layer, group) or not layer.has_statistics(state)):
            state["statistics_updates"] = state.get("statistics_updates", 0) + 1
            layer.update_statistics(state, group)
        if not layer.has_statistics(state):
            warnings.warn(f"{type(self).__name__} has no curvature for layer {layer.name!r} yet (its forward/"
                          f"backward ran in eval mode or without grad?): this step updates it like SGD",
                          UserWarning, stacklevel=3)
            return None
        if self.inverse_due(layer, group) or not layer.has_inverse(state):
            layer.update_inverse(state, group)
        return layer.precondition(state, group)

    # -- the step --------------------------------------------------------------------------------------------

    kl_clip: float | None = None   # the trust region's κ (K-FAC sets it; None: no clipping)
    diverged: str | None = None    # why the first refused step was refused (None: no step was refused)
    clip_factor: Tensor | None = None  # ν of the last step (a 0-d tensor; None: no trust region)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter; ``closure`` (optional) re-evaluates and returns the loss.

        Atomic: every layer's direction (statistics and inverses updated on a copy of its state) is computed
        first; when any direction or any statistic or inverse updated this step is not finite (NaN/inf in the
        gradient, the inputs, or a factor), nothing is updated, the state keeps its previous values, the step is
        refused with a warning and :attr:`diverged` says why (a training loop should end the run there; muso's
        does). Otherwise the statistics are kept, the trust region (``kl_clip``) scales the directions, and
        every parameter is updated.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        updates: list[tuple[dict, Layer | None, Tensor | None]] = []
        pending: dict[Tensor, dict] = {}  # layer weight → its state after this step
        for group in self.param_groups:
            layer = self.layers.get(group.get("layer"))
            direction = None
            if layer is not None and layer.has_grad():
                state = pending[layer.weight] = dict(self.state[layer.weight])
                direction = self.layer_direction(layer, group, state)
            updates.append((group, layer, direction))
        reason = self.nonfinite(updates, pending)
        if reason is None:
            for weight, state in pending.items():
                self.state[weight].update(state)  # the copy holds every key of the old state
            nu = self.clip_factor = self.trust_region(updates)
            for group, layer, direction in updates:
                self.apply(group, layer, direction if direction is None or nu is None else direction * nu)
        else:
            self.refuse(reason)
        for layer, group in self.layer_groups():
            layer.clear()
            if reason is None:
                self.state[layer.weight]["step"] = self.layer_step(layer) + 1
            self.schedule(layer, group)
        return loss

    def apply(self, group: dict, layer: Layer | None, direction: Tensor | None) -> None:
        """SGD's update of the group's parameters with ``direction`` (a layer's, split into weight and bias) or,
        for None, their gradients; a layer's bias decays by ``bias_weight_decay`` when set."""
        hyper = {"lr": group["lr"], "momentum": group["momentum"]}
        decays = [group["weight_decay"]] * len(group["params"])
        if group.get("layer") is not None and len(decays) == 2 and group["bias_weight_decay"] is not None:
            decays[1] = group["bias_weight_decay"]
        if direction is not None:
            for (p, d), wd in zip(layer.split(direction), decays):
                sgd_update_(p, d, self.state[p], weight_decay=wd, **hyper)
            return
        for p, wd in zip(group["params"], decays):
            if p.grad is not None:
                sgd_update_(p, p.grad, self.state[p], weight_decay=wd, **hyper)

    def trust_region(self, updates: list) -> Tensor | None:
        """ν = min(1, √(κ / Σ_layers lr_l² ⟨D_l, G_l⟩)) for κ = ``kl_clip`` (kfac-pytorch's KL clipping), a
        0-d tensor on the parameters' device (no synchronisation), or None without a trust region. A sum of 0
        (no gradient) gives ν = 1."""
        if not self.kl_clip:
            return None
        terms = [group["lr"] ** 2 * torch.stack([torch.sum(d * p.grad, dtype=torch.float32)
                                                 for p, d in layer.split(direction) if p.grad is not None]).sum()
                 for group, layer, direction in updates if direction is not None]
        if not terms:
            return None
        return trust_region_scale(self.kl_clip, torch.stack(terms).sum())

    def nonfinite(self, updates: list, pending: dict) -> str | None:
        """Why this step must be refused (None: every direction, and every statistic and inverse updated this
        step, is finite). One synchronisation per step."""
        checked: list[tuple[Layer, str, Tensor]] = []
        for _, layer, direction in updates:
            if direction is None:
                continue
            old, new = self.state[layer.weight], pending[layer.weight]
            checked += [(layer, key, value) for key, value in new.items()
                        if isinstance(value, Tensor) and value.is_floating_point() and value is not old.get(key)]
            checked.append((layer, "direction", direction))
        if not checked:
            return None
        flags = torch.stack([torch.isfinite(t).all() for _, _, t in checked])
        if bool(flags.all()):
            return None
        layer, key, _ = checked[int((~flags).nonzero()[0, 0])]
        where = f"at layer {layer.name!r}'s step {self.layer_step(layer)}"
        if not bool(torch.isfinite(layer.grad_matrix()).all()):
            return f"the gradient of layer {layer.name!r} is not finite {where} (the loss or its backward overflowed)"
        if key in layer.statistics:
            return (f"the curvature statistic {key} is not finite {where} (the layer's inputs or output gradients "
                    "overflowed)")
        if key == "direction":
            return f"the preconditioned direction is not finite {where}"
        return f"{key} is not finite {where}"

    def refuse(self, reason: str) -> None:
        """Record (the first) and warn about a refused step."""
        reason = f"{type(self).__name__}: {reason}; the step was refused (nothing updated)"
        if self.diverged is None:
            self.diverged = reason
        warnings.warn(reason, RuntimeWarning, stacklevel=3)

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's, except that a layer's curvature tensors keep their dtype (torch casts every floating-point
        state tensor to its parameter's; statistics are kept in at least float32, see :func:`statistics_dtype`).
        The saved groups must be for the same layers, in the same order."""
        saved_layers = [g.get("layer") for g in state_dict["param_groups"]]
        if saved_layers != [g.get("layer") for g in self.param_groups]:
            raise ValueError(f"loaded state dict has param groups for the layers {saved_layers}, this optimizer "
                             f"for {[g.get('layer') for g in self.param_groups]}")
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        weights = {layer.weight for layer in self.layers.values()}
        for i, p in zip(ids, params):
            if p in weights and i in saved:
                for key, value in saved[i].items():
                    if key != "momentum_buffer" and isinstance(value, Tensor) and value.is_floating_point():
                        self.state[p][key] = value.to(device=p.device, dtype=statistics_dtype(p))
        for layer, group in self.layer_groups():
            self.schedule(layer, group)


class DampedOptimizer(LayerwiseOptimizer):
    """A layerwise optimizer with damping (K-FAC, Shampoo): its groups carry ``damping`` (ρ or ε),
    ``damping_rule`` and the plan's multipliers (checked by :func:`damping_checks`), and each layer's state
    ``"damping"`` the values in effect, from its last inverse update."""

    def damping(self) -> dict[str, dict[str, float]]:
        """Damping values in effect per layer: {layer name: {factor: value}}."""
        out = {}
        for name, layer in self.layers.items():
            values = self.state.get(layer.weight, {}).get("damping")
            if values:
                out[name] = dict(values)
        return out


__all__ = ["Check", "DampedOptimizer", "HookPolicy", "LAYER_TYPES", "Layer", "LayerwiseOptimizer",
           "check_hyperparameters", "damping_checks", "decay", "eigh_psd", "finite_or", "interval", "layer_groups",
           "non_negative", "one_of", "positive", "renamed", "running_average", "schedule_due", "sgd_update_",
           "statistics_decay", "statistics_dtype", "supported", "trust_region_scale", "weak_forward_hook"]
