"""Muon (Jordan et al. 2024) with per-layer lr, for width transfer: torch.optim.Muon's update for the weights of
Linear/Conv2d layers and torch.optim.AdamW's for every other parameter, as one torch optimizer.

The Muon recipe: a layer's weight, seen as the matrix W = weight.flatten(1) [d_out, fan_in] (conv: fan_in =
C_in·kh·kw, as in K-FAC and Shampoo), is updated as torch.optim.Muon updates a matrix::

    B ← μ·B + (1 − μ)·G                        (torch's momentum, an average; B = 0 before the first step)
    U = (1 − μ)·G + μ·B  (nesterov)  or  B     O = NS(U) ≈ U's orthogonal factor (torch's quintic Newton–Schulz)
    W ← (1 − lr·λ)·W − lr·a·O

with torch's Newton–Schulz coefficients and ε, in ``ns_dtype``: bfloat16 as torch (the default on CUDA; the
update is then torch's bit for bit, tests/test_muon.py) or float32 (the default on CPU, where a bfloat16 matmul
of 1024 × 1024 took 35× as long as a float32 one on the machines muso is tested on: 71 s per orthogonalisation);

and every other parameter (biases, norm gains, embeddings, bare tensors) by torch.optim.AdamW's (betas
(beta1, beta2), ε ``eps``, decoupled decay λ). Which parameter gets which is the group's ``algorithm``
(``muon`` | ``adam``), set by the plan (muso_cli.parametrize.UPDATED_LIKE: a layer's weight is Muon's, the rest AdamW's)
or, for plain tensors, by their shape (≥ 2 dimensions: Muon), as torch's documentation splits them.

The width scaling is the table's alone: ``a`` is torch's ``adjust_lr_fn`` shape factor, 1 here by default
(``adjust_lr_fn="none"``), so that each layer's lr is its group's lr, the base lr times the table's multiplier
(second-order µP: m^½ / 1 / m^-½ for input / hidden / readout, docs/parameterization.md). ``original``
(√max(1, d_out/fan_in), Keller Jordan's) and ``match_rms_adamw`` (0.2·√max(d_out, fan_in), Moonshot's)
multiply torch's own shape rules on top, to compare with them; they are width rules outside the table.

Why not torch.optim.Muon itself (muso keeps its update, coefficients, ε and momentum, and its functional AdamW):
it takes 2-D parameters only (a conv weight would need a reshaped copy and its state kept apart from the weight
muso checkpoints), it runs Newton–Schulz in bfloat16 unconditionally (the CPU cost above: a width-2048 coordinate
check would take hours), and one optimizer must update a model's every parameter so that `muso run`, the
schedulers and the checkpoints see one state_dict. ``orthogonalize`` is torch's ``_zeropower_via_newtonschulz``
with the dtype as a parameter; with ``ns_dtype=bfloat16`` the step is torch's to the bit (tests/test_muon.py).

State, in torch's ``self.state[p]``: ``momentum_buffer`` (Muon; shaped like p) or ``step``, ``exp_avg``,
``exp_avg_sq`` (AdamW, as torch.optim.AdamW keeps them): tensors only, so checkpoints load with weights_only.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, EPS
from torch.optim.adamw import adamw

from ..errors import HyperparameterError, check_bool, check_positive, check_unit_interval
from ..parametrize import LAYER_TYPES
from .checks import check_hyperparameters, non_negative, one_of

ALGORITHMS = ("muon", "adam")
# torch's adjust_lr_fn names; "none" is not one of torch's: its shape factor is 1 (the table's lr as is)
ADJUST_LR_FNS = ("none", "original", "match_rms_adamw")
NS_DTYPES = {"auto": None, "bfloat16": torch.bfloat16, "float32": torch.float32}  # auto: bfloat16 on CUDA only


def orthogonalize(u: Tensor, steps: int, dtype: torch.dtype) -> Tensor:
    """torch.optim.Muon's Newton–Schulz orthogonalisation of ``u`` [d_out, d_in] (its coefficients, ε and order
    of operations) in ``dtype``: ≈ U S' Vᵀ with S' ∈ (0.5, 1.5), U Vᵀ the orthogonal factor of u."""
    x = u.to(dtype)
    tall = u.shape[0] > u.shape[1]
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=EPS))  # spectral norm ≤ 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=DEFAULT_B, alpha=DEFAULT_C), x, beta=DEFAULT_A)
    return x.T if tall else x


def shape_factor(adjust_lr_fn: str, d_out: int, d_in: int) -> float:
    """torch's ``adjust_lr_fn`` factor on the lr of a [d_out, d_in] matrix (1 for ``none``)."""
    if adjust_lr_fn == "original":
        return math.sqrt(max(1.0, d_out / d_in))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(d_out, d_in))
    return 1.0


def muon_groups(model: nn.Module) -> list[dict]:
    """Default groups without a plan: the weights of every Linear/Conv2d layer (Muon), then the rest (AdamW),
    named (torch's ``param_names``); tied weights once."""
    weights, seen = [], set()
    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            weights.append((f"{name}.weight" if name else "weight", module.weight))
    rest = [(n, p) for n, p in model.named_parameters() if id(p) not in seen]
    return [g for g in ({"params": weights, "algorithm": "muon"}, {"params": rest, "algorithm": "adam"})
            if g["params"]]


class Muon(torch.optim.Optimizer):
    """Muon for the weights of Linear/Conv2d layers, AdamW for the rest (module docstring), as a
    ``torch.optim.Optimizer``.

    Args:
        params: the model (Linear/Conv2d weights Muon, the rest AdamW), param groups (e.g.
            ``plan.param_groups(model, lr, rest_lr=adamw_lr)``, whose groups carry ``algorithm``), or plain or
            named tensors (≥ 2 dimensions: Muon, else AdamW). Every argument below is a group key
            (``defaults``); a group's ``algorithm`` is ``muon`` or ``adam``.
        lr: Muon's learning rate (torch's ``lr``). momentum, nesterov, ns_steps: torch.optim.Muon's.
        ns_dtype: auto (bfloat16 on CUDA, float32 elsewhere) | bfloat16 | float32: Newton–Schulz's dtype.
        adjust_lr_fn: none (default: no shape factor) | original | match_rms_adamw (torch's, see above).
        weight_decay: decoupled weight decay λ, both parts: W ← (1 − lr·λ)·W.
        adamw_lr: the learning rate of an ``adam`` group that does not set its own ``lr``.
        beta1, beta2, eps: AdamW's.
    """

    CHECKS = {"lr": non_negative, "adamw_lr": non_negative, "weight_decay": non_negative,
              "momentum": lambda key, value: check_unit_interval(key, value, 0.95), "nesterov": check_bool,
              "ns_steps": lambda key, value: check_positive(key, value, integer=True) or (
                  None if value < 100 else check_positive(key, -1, integer=True)),
              "adjust_lr_fn": one_of(ADJUST_LR_FNS), "ns_dtype": one_of(NS_DTYPES), "algorithm": one_of(ALGORITHMS),
              "beta1": lambda key, value: check_unit_interval(key, value, 0.9),
              "beta2": lambda key, value: check_unit_interval(key, value, 0.999), "eps": non_negative}

    def __init__(self, params, *, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, ns_dtype: str = "auto", adjust_lr_fn: str = "none", weight_decay: float = 0.0,
                 adamw_lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "ns_steps": ns_steps,
                    "ns_dtype": ns_dtype, "adjust_lr_fn": adjust_lr_fn, "weight_decay": weight_decay,
                    "adamw_lr": adamw_lr, "beta1": beta1, "beta2": beta2, "eps": eps}
        problems = check_hyperparameters(defaults, self.CHECKS)
        if problems:
            raise problems[0]
        if isinstance(params, nn.Module):
            params = muon_groups(params)
        params = list(params)
        if params and not isinstance(params[0], dict):
            params = [{"params": [p]} for p in params]
        super().__init__(params, defaults)  # calls add_param_group for every group

    def add_param_group(self, param_group: dict) -> None:
        """torch's, and then: a group without ``algorithm`` gets it from its tensors' shape (≥ 2 dimensions:
        muon), an ``adam`` group without ``lr`` gets ``adamw_lr``; the hyperparameters it sets are checked."""
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        param_group["params"] = params
        tensors = [p[1] if isinstance(p, tuple) else p for p in params]
        label = f" (param group {len(self.param_groups)})"
        if "algorithm" not in param_group:
            kinds = {"muon" if t.dim() >= 2 else "adam" for t in tensors}
            if len(kinds) > 1:
                raise HyperparameterError("params", f"group mixes matrices and vectors{label}.",
                                          "give matrices and 1-D tensors separate groups, or set 'algorithm'.")
            param_group["algorithm"] = kinds.pop() if kinds else "adam"
        if param_group["algorithm"] == "adam":
            param_group.setdefault("lr", param_group.get("adamw_lr", self.defaults["adamw_lr"]))
        problems = check_hyperparameters(param_group, self.CHECKS, label)
        if problems:
            raise problems[0]
        if param_group["algorithm"] == "muon" and any(t.dim() < 2 for t in tensors):
            raise HyperparameterError("params", f"a muon group holds a tensor of fewer than 2 dimensions{label}.",
                                      "give biases and norm gains a group with algorithm 'adam'.")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter; ``closure`` (optional) re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                (self._muon if group["algorithm"] == "muon" else self._adamw)(group, params)
        return loss

    def step_lr(self, group: dict, p: Tensor) -> float:
        """The learning rate ``p`` is stepped with: its group's ``lr``, times torch's ``adjust_lr_fn`` shape
        factor for a Muon matrix [d_out, fan_in] (1 with ``none``, the default: the table alone scales it)."""
        if group["algorithm"] != "muon":
            return group["lr"]
        return group["lr"] * shape_factor(group["adjust_lr_fn"], p.shape[0], p[0].numel())

    def _muon(self, group: dict, params: list[Tensor]) -> None:
        """torch.optim.Muon's update of each weight as the matrix [d_out, fan_in] (a view: same storage)."""
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            w, g = p.view(p.shape[0], -1), p.grad.reshape(p.shape[0], -1)
            buf = state["momentum_buffer"].view_as(w)
            buf.lerp_(g, 1 - momentum)
            u = g.lerp(buf, momentum) if group["nesterov"] else buf
            dtype = NS_DTYPES[group["ns_dtype"]] or (torch.bfloat16 if p.is_cuda else torch.float32)
            update = orthogonalize(u, group["ns_steps"], dtype)
            w.mul_(1 - lr * wd)
            w.add_(update, alpha=-self.step_lr(group, p))

    def _adamw(self, group: dict, params: list[Tensor]) -> None:
        """torch.optim.AdamW's update (its state, lazily created as torch creates it)."""
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        adamw(params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
              [], [s["step"] for s in states], amsgrad=False, beta1=group["beta1"], beta2=group["beta2"],
              lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


__all__ = ["ADJUST_LR_FNS", "ALGORITHMS", "Muon", "NS_DTYPES", "muon_groups", "orthogonalize", "shape_factor"]
