"""N models of one architecture as one stacked model: every parameter [N, *shape], the forward vmapped.

Members are built (and initialised from their own seeds) as ordinary models, then stacked with
``torch.func.stack_module_state``; the forward is ``torch.func.functional_call`` of one parameter-free copy of
the model (on the meta device) under ``torch.func.vmap`` over the member dimension, so a Linear layer becomes a
batched matmul over the N members and no operation mixes two members. One loss per member comes out; the
gradient of their sum with respect to the stacked parameters is every member's own gradient, slice by slice.

Capture (K-FAC's factors): on request the forward records every Linear layer's input and adds a zero "probe"
tensor to its output, so that the gradient of the loss with respect to the probe is ∂loss/∂h of that layer —
the same rows X and Δ that K-FAC's hooks record in a single run (muso_cli.optim.common).
"""
from __future__ import annotations

import copy
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap


class Stack:
    """The stacked members. params: {name: [N, *shape]} leaves (the names of ``model.named_parameters()``)."""

    def __init__(self, models: list[nn.Module]):
        params, buffers = stack_module_state(models)
        if buffers:  # a vmapped forward cannot update per-member buffers in place (batch norm statistics)
            raise ValueError(f"models with buffers cannot be stacked ({', '.join(buffers)})")
        self.params: dict[str, Tensor] = params
        self.template = copy.deepcopy(models[0]).to("meta")
        self.layers = {name: m for name, m in self.template.named_modules() if isinstance(m, nn.Linear)}
        self._capture: tuple[dict, dict] | None = None  # (inputs recorded, probes added) during a forward
        for name, module in self.layers.items():
            module.register_forward_hook(partial(self._on_layer, name))

    @property
    def size(self) -> int:
        return next(iter(self.params.values())).shape[0]

    def _on_layer(self, name: str, module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
        if self._capture is None:
            return None
        recorded, probes = self._capture
        recorded[name] = inputs[0].detach()
        return output + probes[name]

    def _member(self, params: dict, x: Tensor, probes: dict | None) -> tuple[Tensor, dict]:
        """One member's output for x (inside vmap: params, x and probes are that member's slices)."""
        recorded: dict[str, Tensor] = {}
        self._capture = None if probes is None else (recorded, probes)
        try:
            return functional_call(self.template, params, (x,)), recorded
        finally:
            self._capture = None

    def output_shapes(self, x_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """The output shape of every Linear layer for one member's input of shape ``x_shape`` (a meta forward)."""
        shapes: dict[str, tuple[int, ...]] = {}
        handles = [m.register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
                   for n, m in self.layers.items()]
        try:
            with torch.no_grad():
                self.template(torch.empty(x_shape, device="meta"))
        finally:
            for h in handles:
                h.remove()
        return shapes

    def losses(self, x: Tensor, y: Tensor, loss_fn, capture: bool = False
               ) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(loss [N], logits [N, B, …, C], layer inputs {layer: [N, B, …, d_in]}, probes {layer: [N, B, …, d_out]})
        for each member's batch x [N, B, …], y [N, B, …]; inputs and probes are empty unless ``capture``."""
        probes = {}
        if capture:
            shapes = self.output_shapes(tuple(x.shape[1:]))
            probes = {n: torch.zeros((self.size, *s), dtype=x.dtype, device=x.device, requires_grad=True)
                      for n, s in shapes.items()}

        def member(params, x, y, probes):
            out, recorded = self._member(params, x, probes or None)
            return loss_fn(out, y), out, recorded

        loss, out, recorded = vmap(member)(self.params, x, y, probes)
        return loss, out, recorded, probes

    def gradients(self, loss: Tensor, probes: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """({name: ∂loss_n/∂param_n [N, *shape]}, {layer: ∂loss_n/∂h_n [N, B, …, d_out]}): each member's own
        gradients (the members share no operation, so the gradient of Σ_n loss_n is theirs slice by slice)."""
        names, tensors = list(self.params), [*self.params.values(), *probes.values()]
        grads = torch.autograd.grad(loss.sum(), tensors, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads)]
        return dict(zip(names, grads[:len(names)])), dict(zip(probes, grads[len(names):]))

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor, loss_fn, batch_size: int) -> list[tuple[float, float]]:
        """(mean loss, accuracy) of every member on the same x [M, …], y [M, …], in chunks of ``batch_size``:
        the arithmetic of muso_cli.train.evaluate, member by member."""
        forward = vmap(lambda params, x: self._member(params, x, None)[0], in_dims=(0, None))
        n = self.size
        total, correct, positions = [0.0] * n, [0] * n, 0
        for i in range(0, len(y), batch_size):
            logits, target = forward(self.params, x[i:i + batch_size]), y[i:i + batch_size]
            losses = vmap(loss_fn, in_dims=(0, None))(logits, target).tolist()
            labels = target.argmax(-1) if target.is_floating_point() else target
            hits = (logits.argmax(-1) == labels).flatten(1).sum(1).tolist()
            for k in range(n):
                total[k] += losses[k] * len(target)
                correct[k] += hits[k]
            positions += labels.numel()
        return [(total[k] / len(y), correct[k] / positions) for k in range(n)]

    def keep(self, members: Tensor) -> None:
        """Keep only the members at ``members`` (indices [K], in that order): the others leave the stack."""
        self.params = {k: v.detach()[members].requires_grad_() for k, v in self.params.items()}

    def member(self, k: int) -> dict[str, Tensor]:
        """Member k's parameters {name: tensor}, as its model's state_dict would hold them."""
        return {name: v.detach()[k].clone() for name, v in self.params.items()}

    def load_member(self, k: int, params: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name, v in self.params.items():
                v[k].copy_(params[name])


__all__ = ["Stack"]
