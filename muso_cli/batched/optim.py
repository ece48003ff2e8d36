"""The optimizers of a stack of N members: SGD, Adam(W), K-FAC and Shampoo on parameters [N, *shape].

Every member keeps its own param groups: those of ``plan.param_groups`` for its own model and lr, exactly the
groups its single trial's optimizer gets (muso_cli.optim). Across members a group differs only in its lr; that
lr is a tensor [N] (and the damping of K-FAC / Shampoo, ``optimizer.damping``, a tensor [N]); every other
hyperparameter is one value. All state (momentum, Adam's moments, K-FAC's A, B and their inverses, Shampoo's
L, R and their roots) is stacked [N, …], so a member can leave the stack (:meth:`Optimizer.keep`) or be saved
and restored alone (:meth:`member_state`, :meth:`load_member_state`).

The layer math is the single trial's: the SGD update is ``muso_cli.optim.common.sgd_update_`` (which takes a
tensor lr), running averages are ``running_average`` with ``statistics_decay`` (ema_warmup) / Shampoo's
``accumulate``, the schedule of statistics and inverse updates is ``schedule_due`` (warmup_steps; the members
share the step count, so one schedule serves them all), and the trust region (K-FAC's ``kl_clip``) is the single
trial's ν, one per member. The damped inverses and inverse roots are computed for the whole stack at once
(``muso_cli.optim.kfac.cholesky_inverse``, a batched ``eigh`` raised to ``shampoo.eigen_power``: the first
attempt of the single trial's ``damped_inverse`` / ``inverse_root``), and a member whose batched attempt fails
goes through the single trial's function itself, with its whole fallback chain (float64). The K-FAC and
Shampoo update is the dense form ``left @ G @ right``; the single trial may use the exact factored form
instead (same numbers up to rounding).

What is not implemented here is refused by :func:`supports` (the trial then runs alone): K-FAC's MC Fisher and
the trace / pi damping rules, Shampoo's grafting (and so a late start_preconditioning_step), and any optimizer
option this module does not know. Not implemented either: the single trial's refusal of a step with non-finite
curvature (a member's non-finite statistics show in its next loss, which the divergence rule catches).
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..optim.common import (running_average, schedule_due, sgd_update_, statistics_decay, statistics_dtype,
                            trust_region_scale)
from ..optim.kfac import cholesky_inverse, damped_inverse
from ..optim.shampoo import EIGH_DTYPES, accumulate, eigen_power, epsilon, inverse_root

# The options each optimizer's batched update implements: key → the values it accepts (None: any value).
OPTIONS: dict[str, dict[str, tuple | None]] = {
    "sgd": {"lr": None, "momentum": None, "nesterov": None, "weight_decay": None},
    "adam": {"lr": None, "beta1": None, "beta2": None, "eps": None, "weight_decay": None},
    "kfac": {"lr": None, "damping": None, "damping_rule": None, "momentum": None, "weight_decay": None,
             "ema_decay": None, "ema_warmup": None, "curvature_interval": None, "inverse_interval": None,
             "warmup_steps": None, "kl_clip": None, "fisher": ("empirical",), "inverse": None, "factored": None,
             "lowrank": (None,)},
    # start_preconditioning_step, graft_beta2 and graft_eps do nothing without grafting
    "shampoo": {"lr": None, "damping": None, "damping_rule": None, "exponent": None, "momentum": None,
                "weight_decay": None, "statistics": None, "ema_decay": None, "ema_warmup": None,
                "statistics_interval": None, "inverse_interval": None, "warmup_steps": None,
                "start_preconditioning_step": (0,), "grafting": ("none",), "graft_beta2": None, "graft_eps": None,
                "eigh_dtype": None, "factored": None, "lowrank": (None,)},
}
DAMPING_RULES = {"kfac": ("constant", "somup"), "shampoo": ("constant", "somup", "relative")}  # as resolved
_NOT_GROUP_KEYS = ("params", "param_names", "role")


def supports(opt: dict, damping_rule: str | None) -> str | None:
    """Why the optimizer config ``opt`` (with the plan's resolved ``damping_rule``) cannot be batched, or None."""
    options = OPTIONS.get(opt["name"])
    if options is None:
        return f"optimizer={opt['name']} has no batched update"
    for key, value in opt.items():
        if key == "name":
            continue
        if key not in options:
            return f"optimizer.{key} is not implemented by the batched {opt['name']}"
        if options[key] is not None and value not in options[key]:
            return f"optimizer.{key}={value} is not implemented by the batched {opt['name']}"
    if opt["name"] in DAMPING_RULES and damping_rule not in DAMPING_RULES[opt["name"]]:
        return f"the {damping_rule} damping rule is not implemented by the batched {opt['name']}"
    return None


def _per_member(values: list[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=torch.float64, device=like.device)


def _view(v: Tensor, like: Tensor) -> Tensor:
    """v [N] as [N, 1, …] against like [N, …], in like's dtype."""
    return v.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


class Optimizer:
    """One optimizer over the stacked parameters of N members.

    opt: the (shared) optimizer config, as a dict. groups: every member's param groups (``plan.param_groups``
    of its model, its lr and ``weight_decay``), same structure across members. damping: each member's
    ``optimizer.damping`` (K-FAC, Shampoo). params: the stack's parameters {name: [N, *shape]}.
    """

    def __init__(self, opt: dict, groups: list[list[dict]], damping: list[float] | None, params: dict[str, Tensor]):
        self.name, like = opt["name"], next(iter(params.values()))
        shared = {k: v for k, v in opt.items() if k not in ("name", "lr", "damping", "damping_rule")}
        self.groups = []
        for member_groups in zip(*groups):
            first = member_groups[0]
            group = {**shared, **{k: v for k, v in first.items() if k not in (*_NOT_GROUP_KEYS, "lr")}}
            group["names"] = list(first["param_names"])
            group["lr"] = _per_member([g["lr"] for g in member_groups], like)
            self.groups.append(group)
        self.damping = _per_member(damping, like) if damping is not None else None
        self.kl_clip = opt.get("kl_clip") or None  # K-FAC's trust region κ (None: off)
        # param or layer name → its state: stacked tensors [N, …], and a layer's count of statistics updates
        # (an int: the members share it, as they share the schedule)
        self.state: dict[str, dict[str, Tensor | int]] = {}

    # -- the schedule ----------------------------------------------------------------------------------------

    def needs_capture(self, step: int) -> bool:
        """Whether the forward of ``step`` must record the layers' inputs and output gradients (K-FAC's factors).
        Step 0 is on every schedule and a resumed member brings its state, so the schedule alone decides (here and
        for every statistics and inverse update below)."""
        return self.name == "kfac" and any(schedule_due(step, g, "curvature_interval")
                                           for g in self.groups if g.get("layer") is not None)

    # -- the step --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor], step: int, factor: float,
             captured: dict[str, tuple[Tensor, Tensor]], examples: int) -> None:
        """Update every member's parameters in place: update number ``step + 1`` (0-based ``step``, the layer
        schedules'), the schedule's lr ``factor``; captured: {layer: (X [N, R, d_in], Δ [N, R, d_out])}; examples:
        the number of terms each member's loss averages over (K-FAC's B)."""
        updates = []  # (group, its lr [N] this step, its layer's preconditioned directions or None)
        for group in self.groups:
            directions = None
            if self.name in ("kfac", "shampoo") and group.get("layer") is not None:
                directions = self._layer_directions(group, [params[n] for n in group["names"]],
                                                    [grads[n] for n in group["names"]], step,
                                                    captured.get(group["layer"]), examples)
            updates.append((group, group["lr"] * factor, directions))
        nu = self._trust_region(updates, grads)
        for group, lr, directions in updates:
            names = group["names"]
            decays = [group["weight_decay"]] * len(names)
            if group.get("layer") is not None and len(names) == 2 and group.get("bias_weight_decay") is not None:
                decays[1] = group["bias_weight_decay"]
            if self.name == "adam":
                for name, wd in zip(names, decays):
                    self._adam(params[name], grads[name], self.state.setdefault(name, {}), lr, wd, group, step + 1)
                continue
            if directions is None:
                directions = [grads[n] for n in names]
            elif nu is not None:
                directions = [d * _view(nu, d) for d in directions]
            nesterov = self.name == "sgd" and bool(group["nesterov"]) and group["momentum"] > 0
            for name, d, wd in zip(names, directions, decays):
                p = params[name]
                sgd_update_(p, d, self.state.setdefault(name, {}), lr=_view(lr, p), momentum=group["momentum"],
                            weight_decay=wd, nesterov=nesterov)

    def _trust_region(self, updates: list, grads: dict[str, Tensor]) -> Tensor | None:
        """ν [N] = min(1, √(κ / Σ_layers lr_l² ⟨D_l, G_l⟩)) of every member, over its whole model (the single
        trial's LayerwiseOptimizer.trust_region, in its float32), or None without a trust region."""
        if not self.kl_clip:
            return None
        terms = [(lr ** 2).float() * sum((d * grads[n]).flatten(1).sum(1, dtype=torch.float32)
                                         for d, n in zip(directions, group["names"]))
                 for group, lr, directions in updates if directions is not None]
        if not terms:
            return None
        return trust_region_scale(self.kl_clip, torch.stack(terms).sum(0))

    @staticmethod
    def _adam(p: Tensor, g: Tensor, state: dict, lr: Tensor, wd: float, group: dict, t: int) -> None:
        """torch.optim.AdamW's single-tensor update (its CPU default), with one lr per member."""
        beta1, beta2 = group["beta1"], group["beta2"]
        if "exp_avg" not in state:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
        if wd:
            p.mul_(1 - _view(lr, p) * wd)
        state["exp_avg"].lerp_(g, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_size = lr / (1 - beta1 ** t)
        denom = (state["exp_avg_sq"].sqrt() / (1 - beta2 ** t) ** 0.5).add_(group["eps"])
        p.sub_(state["exp_avg"] / denom * _view(step_size, p))

    def _layer_directions(self, group: dict, params: list[Tensor], grads: list[Tensor], step: int,
                          captured: tuple[Tensor, Tensor] | None, examples: int) -> list[Tensor]:
        """The preconditioned directions of a layer's [weight, bias]: D [N, d_out, d_in] split back."""
        weight = params[0]
        g = grads[0].flatten(2)
        fan_in = g.shape[-1]
        if len(grads) == 2:
            g = torch.cat([g, grads[1][..., None]], -1)
        state = self.state.setdefault(group["layer"], {})
        if self.name == "kfac":
            left, right = self._kfac(state, group, captured, step, examples)
        else:
            left, right = self._shampoo(state, group, g, step)
        d = left @ g @ right
        out = [d[..., :fan_in].reshape(weight.shape)]
        if len(grads) == 2:
            out.append(d[..., -1])
        return out

    def _kfac(self, state: dict, group: dict, captured, step: int, examples: int) -> tuple[Tensor, Tensor]:
        """(B_inv, A_inv) [N, d, d] of K-FAC's factors on the group's schedule (muso_cli.optim.kfac)."""
        if schedule_due(step, group, "curvature_interval"):
            x, d = captured
            dtype = statistics_dtype(x)
            x, d = x.to(dtype), d.to(dtype)
            decay = _count_statistics_update(state, group)
            state["A"] = running_average(state.get("A"), x.mT @ x / x.shape[1], decay)
            state["B"] = running_average(state.get("B"), examples * (d.mT @ d), decay)
        if schedule_due(step, group, "inverse_interval"):
            # constant and somup: ρ·m per factor (the plan's multipliers)
            state["A_inv"] = stacked_damped_inverse(state["A"], self.damping * group["damping_A"], group["inverse"])
            state["B_inv"] = stacked_damped_inverse(state["B"], self.damping * group["damping_B"], group["inverse"])
        return state["B_inv"], state["A_inv"]

    def _shampoo(self, state: dict, group: dict, g: Tensor, step: int) -> tuple[Tensor, Tensor]:
        """(L_root, R_root) [N, d, d] of Shampoo's statistics on the group's schedule (muso_cli.optim.shampoo)."""
        if schedule_due(step, group, "statistics_interval"):
            dtype = statistics_dtype(g)
            _count_statistics_update(state, group)
            state["L"] = accumulate(state, "L", (g @ g.mT).to(dtype), group)
            state["R"] = accumulate(state, "R", (g.mT @ g).to(dtype), group)
        if schedule_due(step, group, "inverse_interval"):
            state["L_root"] = stacked_inverse_root(state["L"], self.damping, group)
            state["R_root"] = stacked_inverse_root(state["R"], self.damping, group)
        return state["L_root"], state["R_root"]

    # -- members leaving, saved and restored ------------------------------------------------------------------

    def keep(self, members: Tensor) -> None:
        """Keep only the members at ``members`` (indices [K])."""
        for group in self.groups:
            group["lr"] = group["lr"][members]
        if self.damping is not None:
            self.damping = self.damping[members]
        self.state = {k: {key: _members(v, members) for key, v in s.items()} for k, s in self.state.items()}

    def member_state(self, k: int) -> dict[str, dict[str, Tensor | int]]:
        return {name: {key: v[k].clone() if isinstance(v, Tensor) else v for key, v in s.items()}
                for name, s in self.state.items()}

    def load_member_states(self, states: list[dict[str, dict[str, Tensor | int]]]) -> None:
        """Every member's saved state (one dict per member, in stack order, all with the same keys; the counts,
        shared, from the first)."""
        self.state = {name: {key: torch.stack([s[name][key] for s in states]) if isinstance(value, Tensor) else value
                             for key, value in states[0][name].items()}
                      for name in states[0]}


def _members(value: Tensor | int, members: Tensor) -> Tensor | int:
    return value[members] if isinstance(value, Tensor) else value


def _count_statistics_update(state: dict, group: dict) -> float:
    """Count a layer's statistics update (``statistics_updates``, before the update, as the single trial's
    LayerwiseOptimizer.layer_direction does) and return the old statistic's weight, ``statistics_decay``."""
    state["statistics_updates"] = state.get("statistics_updates", 0) + 1
    return statistics_decay(state, group)


def stacked_damped_inverse(factors: Tensor, damping: Tensor, method: str) -> Tensor:
    """(F + ρ I)⁻¹ [N, d, d] of every member's factor F [N, d, d] with its ρ [N]: batched Cholesky in the
    factor's dtype (the single trial's first attempt, muso_cli.optim.kfac.cholesky_inverse), then
    muso_cli.optim.kfac.damped_inverse, the single trial's full chain, for each member it failed for (and for
    every member with ``method="eigh"``)."""
    if method == "cholesky":
        inverse, ok = cholesky_inverse(factors, _view(damping, factors))
    else:
        inverse, ok = torch.empty_like(factors), torch.zeros(factors.shape[0], dtype=torch.bool, device=factors.device)
    for k in (~ok).nonzero().flatten().tolist():
        inverse[k] = damped_inverse(factors[k], damping[k].item(), method)
    return inverse


def stacked_inverse_root(stats: Tensor, eps: Tensor, group: dict) -> Tensor:
    """(S + ε I)^-exponent [N, d, d] of every member's statistic S [N, d, d] with its base ε [N] under the
    group's rule: one batched eigh in the first of the group's ``eigh_dtype`` dtypes, each member's ε
    (muso_cli.optim.shampoo.epsilon) and root (eigen_power), then inverse_root itself, the single trial's
    whole chain (float64 after float32), for each member whose eigenvalues are not finite."""
    try:
        lam, q = torch.linalg.eigh(stats.to(EIGH_DTYPES[group["eigh_dtype"]][0]))
    except torch.linalg.LinAlgError:  # some member did not converge: every member goes alone
        lam = q = None
    if lam is None:
        root, ok = torch.empty_like(stats), torch.zeros(stats.shape[0], dtype=torch.bool, device=stats.device)
    else:
        ok = torch.isfinite(lam).all(1)
        lam = lam.clamp(min=0)
        values = [epsilon(top, base, group) for top, base in zip(lam[:, -1].tolist(), eps.tolist())]
        root = eigen_power(lam, q, torch.tensor(values, dtype=lam.dtype, device=lam.device)[:, None],
                           group["exponent"], stats.dtype)
    for k in (~ok).nonzero().flatten().tolist():
        root[k] = inverse_root(stats[k], {**group, "damping": eps[k].item()})[0]
    return root


__all__ = ["OPTIONS", "Optimizer", "stacked_damped_inverse", "stacked_inverse_root", "supports"]
