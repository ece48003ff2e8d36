"""The optimizer's side of the layer protocol (the layer's side: :mod:`muso_cli.optim.layer`): the torch optimizer
K-FAC, Shampoo and SOAP are, which builds a :class:`~muso_cli.optim.layer.Layer` for every param group with a
``layer`` key, schedules its statistics and inverse updates, and applies one SGD update to every parameter.
(Muon is not on this protocol: its own ``torch.optim.Optimizer``, muso_cli.optim.muon.)

The schedule (:meth:`LayerwiseOptimizer.layer_direction`): ``update_statistics`` on the group's statistics
steps and ``update_inverse`` on its inverse steps, each also whenever its keys are missing, then ``precondition``;
a layer still without statistics after that is updated along its gradient for the step. Every step is atomic: it
is computed on a copy of each layer's state and refused whole (no parameter and no state moves, the rest's
included) when a layer's direction, statistic or inverse is not finite (:meth:`LayerwiseOptimizer.step`).

The update. ``W ← W − lr·v, v ← momentum·v + (D + weight_decay·W)`` (torch.optim.SGD with dampening 0) with D
the preconditioned direction [d_out, d_in] of every layer, and, for every other parameter (the rest), the
direction :meth:`LayerwiseOptimizer.rest_direction` gives: its gradient (SGD) for K-FAC and Shampoo, Adam's
direction for SOAP. Weight decay therefore enters *after* preconditioning (as in kfac-pytorch, where the wrapped
SGD sees the preconditioned gradient): it is a plain L2 pull, not reshaped by the curvature, and it leaves the
batch gradient that the factored form relies on untouched. A layer's bias decays by the group's
``bias_weight_decay`` (None: by ``weight_decay``, as torch would).
"""
from __future__ import annotations

import warnings
from itertools import chain
from typing import Iterator

import torch
from torch import Tensor, nn

from ..errors import HyperparameterError, check_bool, check_positive, check_unit_interval
from .checks import Check, check_hyperparameters, interval, non_negative
from .layer import HookPolicy, Layer, layer_groups
from .tensors import sgd_update_, statistics_dtype


class LayerwiseOptimizer(torch.optim.Optimizer):
    """Base of :class:`~muso_cli.optim.kfac.KFAC`, :class:`~muso_cli.optim.shampoo.Shampoo` and
    :class:`~muso_cli.optim.soap.SOAP`: a torch optimizer whose param groups with a ``layer`` key are
    preconditioned by a :class:`~muso_cli.optim.layer.Layer` (the layer protocol: module docstrings) and whose
    other parameters, the rest, are updated along :meth:`rest_direction` (their gradient: SGD, by default).

    ``params``: the model (then also ``model``; groups from :func:`~muso_cli.optim.layer.layer_groups`), param
    groups, or plain or named tensors (grouped by :meth:`tensor_groups`). Every hyperparameter is in ``defaults``
    and may be set per group; checked by ``CHECKS`` (defaults once, then what each group sets itself). Every group
    has at least ``lr``, ``momentum``, ``weight_decay``, ``bias_weight_decay``, ``inverse_interval``, the
    statistics interval (key ``STATISTICS_INTERVAL``), and ``factored`` (capture every step so that the factored
    form can be used; without it the hooks capture only on statistics steps). Schedules are counted per layer from
    the step its group was added (``self.state[weight]["step"]``); statistics and inverses are both updated at its
    step 0, and at every step of the warm start when the group has ``warmup_steps`` (:meth:`due`). Optional group
    keys read here: ``warmup_steps``, ``ema_warmup`` (:func:`~muso_cli.optim.tensors.statistics_decay`). The step
    is atomic and refuses non-finite values (:meth:`step`, :attr:`diverged`); a subclass may set :attr:`kl_clip`
    (the trust region).
    """

    STATISTICS_INTERVAL = "statistics_interval"
    CHECKS: dict[str, Check] = {
        "lr": non_negative, "momentum": lambda key, value: check_unit_interval(key, value, 0.9),
        "weight_decay": non_negative,
        "bias_weight_decay": lambda key, value: check_positive(key, value, allow_zero=True, optional=True),
        "inverse_interval": interval, "factored": check_bool, "ema_warmup": check_bool,
        "warmup_steps": lambda key, value: check_positive(key, value, integer=True, allow_zero=True)}

    def __init__(self, params, defaults: dict, *, model: nn.Module | None):
        problems = check_hyperparameters(defaults, self.CHECKS)
        if problems:
            raise problems[0]
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
        """Param groups for plain tensors or (name, tensor) pairs: each matrix a layer of its own, vectors the rest
        (what Shampoo and SOAP do; K-FAC needs the model's modules and overrides this)."""
        groups = []
        for i, t in enumerate(tensors):
            name, p = t if isinstance(t, tuple) else (f"tensor{i}", t)
            groups.append({"params": [t], "layer": name} if p.dim() >= 2 else {"params": [t]})
        return groups

    def make_layer(self, name: str, weight: Tensor, bias: Tensor | None, module: nn.Module | None) -> Layer | None:
        """The subclass's Layer for a group (None: the group's parameters are the rest)."""
        raise NotImplementedError

    def rest_direction(self, group: dict, p: Tensor, state: dict) -> Tensor:
        """The direction (shaped like ``p``) that the update of :meth:`apply` takes for a parameter of the rest:
        one in a group without a preconditioned layer (biases and gains of other modules, embeddings, 1-D
        tensors, a layer the subclass does not cover). ``state`` is ``self.state[p]``, which the direction may
        update (SOAP's Adam moments): it is called once per accepted step for every such ``p`` with a gradient,
        never on a refused one. Its gradient by default, hence SGD."""
        return p.grad

    # -- groups ----------------------------------------------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        """torch's, and then: the hyperparameters the group sets are checked, and a group with ``layer``
        (params [weight] or [weight, bias] of that module of ``model``) is preconditioned from its next step on
        (its Layer made, the capture hook attached); the parameters of a group without ``layer`` are the rest."""
        label = (f" (param group of layer {param_group['layer']!r})" if param_group.get("layer") is not None
                 else f" (param group {len(self.param_groups)})")
        problems = check_hyperparameters(param_group, self.CHECKS, label)
        if problems:
            raise problems[0]
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
        if module is not None and (params[0] is not module.weight
                                   or (len(params) == 2 and params[1] is not module.bias)):
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
        """Whether ``layer``'s (0-based) step is one of its group's ``interval_key`` steps: every step during the
        warm start (the layer's first ``warmup_steps`` steps, group key, 0 without it), then every ``interval``
        steps, counted from the layer's step 0 (interval 10, warm start 20: steps 0, 1, …, 19, 20, 30, 40, …)."""
        step = self.layer_step(layer)
        return step < group.get("warmup_steps", 0) or step % group[interval_key] == 0

    def statistics_due(self, layer: Layer, group: dict) -> bool:
        return self.due(layer, group, self.STATISTICS_INTERVAL)

    def inverse_due(self, layer: Layer, group: dict) -> bool:
        return self.due(layer, group, "inverse_interval")

    def schedule(self, layer: Layer, group: dict) -> None:
        """Set what ``layer``'s hook records on the next forward: on its statistics steps, and on every step when
        the factored form may be used. Called after every step, for an added group and after loading a state."""
        layer.capture = group["factored"] or self.statistics_due(layer, group)

    def layer_direction(self, layer: Layer, group: dict, state: dict) -> Tensor | None:
        """The preconditioned direction D [d_out, d_in] of ``layer`` this step, or None (update it along its
        gradient, like SGD):
        the layer protocol on the group's schedule, working on ``state`` (the step's copy of the layer's state,
        kept only when the whole step is finite). Counts the statistics updates (``statistics_updates``, read by
        :func:`~muso_cli.optim.tensors.statistics_decay`)."""
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
        every parameter is updated (:meth:`apply`).

        The rest is part of that step: its update (and :meth:`rest_direction`'s state) happens only when the
        step is accepted, so that a refused step leaves every parameter and every state as it was. Its gradients
        are not checked: a rest gradient that is not finite shows in the next step's loss and layer gradients,
        which that step refuses.
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
        """SGD's update (:func:`~muso_cli.optim.tensors.sgd_update_`, the group's lr, momentum and weight decay) of
        the group's parameters along ``direction`` (a layer's, split into weight and bias), or, for None, along
        their gradients (a layer without curvature yet) or :meth:`rest_direction` (``layer`` None: the rest); a
        layer's bias decays by ``bias_weight_decay`` when set."""
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
                state = self.state[p]
                d = p.grad if layer is not None else self.rest_direction(group, p, state)
                sgd_update_(p, d, state, weight_decay=wd, **hyper)

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
        total = torch.stack(terms).sum()
        return (self.kl_clip / total.clamp(min=torch.finfo(torch.float32).tiny)).sqrt().clamp(max=1.0)

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
        """torch's, except that state tensors other than momentum buffers (a layer's statistics and inverses, the
        moments of SOAP's rest) keep the dtype they are kept in, at least float32 (torch casts every floating-point
        state tensor to its parameter's: a bfloat16 model would lose them; see
        :func:`~muso_cli.optim.tensors.statistics_dtype`). The saved groups must be for the same layers, in the
        same order."""
        saved_layers = [g.get("layer") for g in state_dict["param_groups"]]
        if saved_layers != [g.get("layer") for g in self.param_groups]:
            raise ValueError(f"loaded state dict has param groups for the layers {saved_layers}, this optimizer "
                             f"for {[g.get('layer') for g in self.param_groups]}")
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for i, p in zip(ids, params):
            for key, value in saved.get(i, {}).items():
                if key != "momentum_buffer" and isinstance(value, Tensor) and value.is_floating_point():
                    self.state[p][key] = value.to(device=p.device, dtype=statistics_dtype(p))
        for layer, group in self.layer_groups():
            self.schedule(layer, group)


class DampedOptimizer(LayerwiseOptimizer):
    """A layerwise optimizer with damping (K-FAC, Shampoo): its groups carry ``damping`` (ρ or ε),
    ``damping_rule`` and the plan's multipliers (checked by :func:`~muso_cli.optim.checks.damping_checks`), and
    each layer's state
    ``"damping"`` the values in effect, from its last inverse update."""

    def damping(self) -> dict[str, dict[str, float]]:
        """Damping values in effect per layer: {layer name: {factor: value}}."""
        out = {}
        for name, layer in self.layers.items():
            values = self.state.get(layer.weight, {}).get("damping")
            if values:
                out[name] = dict(values)
        return out


__all__ = ["DampedOptimizer", "LayerwiseOptimizer"]
