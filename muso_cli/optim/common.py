"""What K-FAC and Shampoo share: layers seen as matrices, gradient capture by hooks, the SGD update, the loop.

A preconditioned layer (``nn.Linear``, ``nn.Conv2d``, or for Shampoo any weight tensor) is one matrix
``W`` of shape [d_out, d_in]: the weight flattened as ``weight.flatten(1)`` (conv: d_in = C_in·kh·kw, in the
order of ``F.unfold``'s patch entries), augmented with the bias as its last column when there is one
(d_in = fan_in + 1), so that ``h = W [x; 1]``: weight and bias are preconditioned together.

:class:`Layer` owns that view and this step's captured activations (hooks record the layer inputs ``x`` and the
gradients ``g = ∂loss/∂h`` of its outputs); :class:`LayerwiseOptimizer` is the ``torch.optim.Optimizer`` that
builds the layers from the param groups, schedules statistics and inverse updates, and applies the update
``W ← W − lr·v, v ← momentum·v + (D + weight_decay·W)`` to the preconditioned direction D of every layer and
to the plain gradient of every other parameter (torch.optim.SGD with dampening 0). Weight decay therefore
enters *after* preconditioning (as in kfac-pytorch, where the wrapped SGD sees the preconditioned gradient):
it is a plain L2 pull, not reshaped by the curvature, and it leaves the batch gradient that the factored
form below relies on untouched.

The factored form. One forward and one backward of a batch give the gradient as a product
``G = Δᵀ X`` with X [R, d_in] the (augmented) input rows and Δ [R, d_out] the output-gradient rows
(R = batch size for an MLP; batch × positions for a conv, patches by ``F.unfold``). Products such as
``P G Q = (P Δᵀ)(X Q)`` then cost R·(d_out² + d_in² + d_out·d_in) instead of d_out·d_in·(d_out + d_in);
K-FAC and Shampoo use them when R is small enough for that to be cheaper. It is exact only when the
``.grad`` the optimizer sees is that product: one forward and one backward since the last step, nothing
added to or rescaled in the gradient afterwards (gradient accumulation, clipping, a weight used twice).
:meth:`Layer.factored_grad` checks this with one random probe vector (‖G v − Δᵀ(X v)‖ ≤ 1e-4·‖G v‖, a
matrix-vector product) and the optimizers fall back to the dense matrices when it fails.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    """decay·old + (1 − decay)·new, in place in ``old``; the first value (old None) is taken as is."""
    if old is None:
        return new
    return old.mul_(decay).add_(new, alpha=1.0 - decay)


@dataclass
class HookPolicy:
    """What the layer hooks do on the next forward/backward; set by the optimizer before every step.

    capture: record inputs and output gradients (only in training mode with grad enabled).
    mc_pass: the backward in progress is the optimizer's own (sampled-target) one, not the user's.
    """

    capture: bool = True
    mc_pass: bool = False


class Layer:
    """One preconditioned layer seen as a matrix W [d_out, d_in] (see the module docstring).

    name: the module name (or a label for a bare tensor). module: the Linear/Conv2d the tensors belong to,
    or None (no hooks: the optimizer works from ``.grad`` alone). Subclasses add the curvature statistics,
    their inverses and ``state_dict``/``load_state_dict`` for them.
    """

    state_keys: tuple[str, ...] = ()  # attributes saved by state_dict (tensors, floats, dicts of floats, None)

    def __init__(self, name: str, weight: Tensor, bias: Tensor | None = None, module: nn.Module | None = None):
        if weight.dim() < 2:
            raise ValueError(f"layer {name!r}: the weight must have at least 2 dimensions, got {tuple(weight.shape)}")
        if bias is not None and bias.shape != weight.shape[:1]:
            raise ValueError(f"layer {name!r}: bias of shape {tuple(bias.shape)} does not match the weight's "
                             f"{weight.shape[0]} outputs")
        self.name, self.weight, self.bias, self.module = name, weight, bias, module
        self.d_out = weight.shape[0]
        self.fan_in = weight[0].numel()
        self.d_in = self.fan_in + (bias is not None)
        self.path = "dense"          # which form the last step used: "dense" or "factored"
        self.inputs: list[Tensor] = []      # this step's layer inputs (detached), one per captured forward
        self.grads: list[Tensor] = []       # ∂loss/∂h of the user's backward, one per captured backward
        self.mc_grads: list[Tensor] = []    # ∂loss/∂h of the optimizer's sampled-target backward (K-FAC MC)
        self._factored: tuple[Tensor, Tensor] | None | bool = False  # cache of factored_grad (False: unknown)
        self._probe: Tensor | None = None

    def state_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.state_keys}

    def load_state_dict(self, state: dict) -> None:
        for key in self.state_keys:
            value = state[key]
            setattr(self, key, value.to(self.weight.device) if isinstance(value, Tensor) else value)

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
        """Register the capture hook on the module.

        The hook holds the layer by weak reference and removes itself once the layer is gone, so an optimizer
        that is dropped stops recording (a model outlives many optimizers in a sweep). It records only on the
        module it was registered on: a deepcopy of the model copies the hook, and the copy must not record.
        """
        layer, module = weakref.ref(self), self.module

        def hook(m: nn.Module, inputs: tuple, output: Tensor) -> None:
            owner = layer()
            if owner is None:
                handle.remove()
            elif m is module and policy.capture and m.training and torch.is_grad_enabled() and output.requires_grad:
                owner.record(inputs[0], output, policy)

        handle = module.register_forward_hook(hook)

    def record(self, x: Tensor, output: Tensor, policy: HookPolicy) -> None:
        """Keep the layer input and arrange for the gradient of the output to be kept (until the next step)."""
        self.inputs.append(x.detach())

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


def layer_groups(model: nn.Module) -> list[dict]:
    """Default param groups without a plan: one per Linear/Conv2d (``layer`` = its module name, weight then
    bias), and one per remaining parameter (updated like SGD). Multipliers are left to the optimizer's
    defaults (1).
    """
    groups, seen = [], set()
    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES) and id(module.weight) not in seen:
            params = [p for p in (module.weight, module.bias) if p is not None]
            seen.update(id(p) for p in params)
            groups.append({"params": params, "layer": name,
                           "names": [f"{name}.weight"] + ([f"{name}.bias"] if module.bias is not None else [])})
    for name, p in model.named_parameters():
        if id(p) not in seen:
            groups.append({"params": [p], "names": [name]})
    return groups


def sgd_update_(p: Tensor, direction: Tensor, state: dict, *, lr: float, momentum: float,
                weight_decay: float) -> None:
    """torch.optim.SGD's update (dampening 0, no Nesterov) with ``direction`` in place of the gradient:
    v ← momentum·v + (direction + weight_decay·p) (v = that sum on the first step), p ← p − lr·v.
    """
    d = direction.add(p, alpha=weight_decay) if weight_decay else direction
    if momentum:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = torch.clone(d).detach()
        else:
            buf.mul_(momentum).add_(d)
        d = buf
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


class LayerwiseOptimizer(torch.optim.Optimizer):
    """Base of :class:`~muso_cli.optim.kfac.KFAC` and :class:`~muso_cli.optim.shampoo.Shampoo`.

    Groups with a ``layer`` key are preconditioned by a :class:`Layer` (subclass from :meth:`make_layer`); every
    other group gets SGD with its own lr, momentum and weight decay. ``statistics_interval`` /
    ``inverse_interval``: steps between statistics (curvature) updates and between inverse updates, counted
    from step 0, where both happen. ``lowrank``: capture every step so that the factored form can be used
    (see the module docstring); without it the hooks capture only on statistics steps.
    """

    def __init__(self, params, defaults: dict, *, model: nn.Module | None, statistics_interval: int,
                 inverse_interval: int, lowrank: bool):
        for key, value in (("statistics_interval", statistics_interval), ("inverse_interval", inverse_interval)):
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"{key} must be an integer ≥ 1, got {value!r}")
        if defaults["lr"] < 0 or defaults["damping"] <= 0 or not 0 <= defaults["momentum"] < 1 \
                or defaults["weight_decay"] < 0:
            raise ValueError(f"need lr ≥ 0, damping > 0, 0 ≤ momentum < 1, weight_decay ≥ 0; got {defaults}")
        if isinstance(params, nn.Module):
            model, params = params, None
        if params is None:
            if model is None:
                raise ValueError("give the model or param groups")
            params = layer_groups(model)
        super().__init__(params, defaults)
        self.statistics_interval, self.inverse_interval, self.lowrank = statistics_interval, inverse_interval, lowrank
        self.steps = 0  # optimizer steps taken (saved in state_dict)
        self.policy = HookPolicy()
        self.layers: dict[str, Layer] = {}
        modules = dict(model.named_modules()) if model is not None else {}
        for group in self.param_groups:
            if group.get("layer") is None:
                continue
            name, params = group["layer"], group["params"]
            if len(params) > 2:
                raise ValueError(f"group of layer {name!r}: expected [weight] or [weight, bias], got "
                                 f"{len(params)} tensors")
            module = modules.get(name)
            if module is not None and (params[0] is not module.weight
                                       or (len(params) == 2 and params[1] is not module.bias)):
                raise ValueError(f"group of layer {name!r}: its params must be [{name}.weight] or "
                                 f"[{name}.weight, {name}.bias], in that order")
            layer = self.make_layer(name, params[0], params[1] if len(params) == 2 else None, module)
            if layer is None:
                continue
            self.layers[name] = layer
            if layer.module is not None:
                layer.attach(self.policy)
        self._set_policy()

    def make_layer(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None) -> Layer | None:
        """The subclass's Layer for a group (None: the group is updated like SGD)."""
        raise NotImplementedError

    def layer_direction(self, layer: Layer, group: dict, update_statistics: bool,
                        update_inverse: bool) -> Tensor | None:
        """The preconditioned direction D [d_out, d_in] of ``layer`` this step (None: use the gradient)."""
        raise NotImplementedError

    def is_statistics_step(self, step: int | None = None) -> bool:
        return (self.steps if step is None else step) % self.statistics_interval == 0

    def _set_policy(self) -> None:
        self.policy.capture = self.lowrank or self.is_statistics_step()

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter; ``closure`` (optional) re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        update_statistics = self.is_statistics_step()
        update_inverse = self.steps % self.inverse_interval == 0
        for group in self.param_groups:
            hyper = {"lr": group["lr"], "momentum": group["momentum"], "weight_decay": group["weight_decay"]}
            layer = self.layers.get(group.get("layer"))
            direction = None
            if layer is not None and layer.has_grad():
                direction = self.layer_direction(layer, group, update_statistics, update_inverse)
            if direction is not None:
                for p, d in layer.split(direction):
                    sgd_update_(p, d, self.state[p], **hyper)
                continue
            for p in group["params"]:
                if p.grad is not None:
                    sgd_update_(p, p.grad, self.state[p], **hyper)
        for layer in self.layers.values():
            layer.clear()
        self.steps += 1
        self._set_policy()
        return loss

    def state_dict(self) -> dict:
        """torch's optimizer state (momentum buffers, groups) plus ``steps`` and every layer's statistics."""
        out = super().state_dict()
        out["steps"] = self.steps
        out["layers"] = {name: layer.state_dict() for name, layer in self.layers.items()}
        return out

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        steps, layers = state_dict.pop("steps"), state_dict.pop("layers")
        super().load_state_dict(state_dict)
        self.steps = steps
        for name, layer in self.layers.items():
            layer.load_state_dict(layers[name])
        self._set_policy()

