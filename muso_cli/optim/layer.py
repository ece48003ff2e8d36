"""A preconditioned layer seen as one matrix, the hooks that capture its inputs and output gradients, and the
layer's side of the layer protocol (the optimizer's side: :mod:`muso_cli.optim.base`).

The matrix view. A preconditioned layer (``nn.Linear``, ``nn.Conv2d``, or for Shampoo and SOAP any weight tensor)
is one matrix ``W`` of shape [d_out, d_in]: the weight flattened as ``weight.flatten(1)`` (conv: d_in =
C_in·kh·kw, in the order of ``F.unfold``'s patch entries), augmented with the bias as its last column when there
is one (d_in = fan_in + 1), so that ``h = W [x; 1]``: weight and bias are preconditioned together.

The layer protocol. :class:`Layer` owns that view and this step's captured activations (hooks record the
layer inputs ``x`` and the gradients ``g = ∂loss/∂h`` of its outputs); everything that outlives a step (the
statistics, what is computed from them, the damping in effect, the layer's step count) is kept in the
optimizer's ``self.state[layer.weight]``, so that torch's ``state_dict`` holds it. With ``state`` that dict and
``group`` the layer's param group (all hyperparameters), a preconditioner (K-FAC, Shampoo, SOAP) subclasses
Layer and implements::

    update_statistics(state, group)   fold this step's gradient information into the statistics
    update_inverse(state, group)      recompute what ``precondition`` applies from the statistics (damped
                                      inverses for K-FAC, inverse roots for Shampoo, an eigenbasis for SOAP)
    precondition(state, group) -> D   the update direction D [d_out, d_in] from this step's gradient

and names the keys of ``state`` that hold the statistics and the inverses (``statistics``, ``inverses``). A
preconditioner without statistics implements ``precondition`` alone (tests/test_optim_protocol.py has one: D = G,
which is SGD). When each is called, and what is done with D, is the optimizer's
(:class:`~muso_cli.optim.base.LayerwiseOptimizer`).

The factored form. One forward and one backward of a batch give the gradient as a product
``G = Δᵀ X`` with X [R, d_in] the (augmented) input rows and Δ [R, d_out] the output-gradient rows
(R = batch size for an MLP; batch × positions for a conv, patches by ``F.unfold``). Products such as
``P G Q = (P Δᵀ)(X Q)`` then cost R·(d_out² + d_in² + d_out·d_in) instead of d_out·d_in·(d_out + d_in);
K-FAC, Shampoo and SOAP use them (group key ``factored``) when R is small enough for that to be cheaper. The form
is exact, not an approximation, but only when the ``.grad`` the optimizer sees is that product: one forward and
one backward since the last step, nothing added to or rescaled in the gradient afterwards (gradient
accumulation, clipping, a weight used twice). :meth:`Layer.factored_grad` checks this with one random probe
vector (‖G v − Δᵀ(X v)‖ ≤ 1e-4·‖G v‖, a matrix-vector product) and the optimizers fall back to the dense
matrices when it fails.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import HyperparameterError
from ..parametrize import LAYER_TYPES

_PROBE_TOL = 1e-4  # relative; fp32 rounding of a batch gradient is ~1e-6, a clipped or summed one far larger


def supported(module: nn.Module | None) -> bool:
    """A module whose inputs the hooks can turn into rows of X: Linear, or Conv2d without groups."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


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
    bias), and one per remaining parameter (updated by the optimizer's rest update, see
    :meth:`~muso_cli.optim.base.LayerwiseOptimizer.rest_direction`), all named (torch's ``param_names``).
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


__all__ = ["HookPolicy", "Layer", "layer_groups", "supported", "weak_forward_hook"]
