"""Which trials a launcher may train together, and the batches it makes of them.

Trials batch when their configs are equal once optimizer.lr, optimizer.damping and seed are removed (same
model, width, data, optimizer and options, steps, schedule, device) and the batched path supports that config
(:func:`supports`). Every other trial runs alone, through the usual path; each distinct reason is logged once.
"""
from __future__ import annotations

import json
from collections import Counter

from omegaconf import OmegaConf
from torch import nn

from ..logs import LOG
from ..models.mlp import ACTIVATIONS, MLP
from ..parametrize import WidthMultiplier
from .optim import supports as optimizer_supports

VARYING = (("optimizer", "lr"), ("optimizer", "damping"), ("seed",))  # what may differ within a batch
# Modules whose forward the stack runs member by member without mixing them: Linear layers and
# parameter-free, state-free modules. Any other module (a user's, a norm, dropout, a conv) runs alone.
STACKABLE = (MLP, nn.Linear, nn.ModuleList, nn.Sequential, nn.Flatten, WidthMultiplier, *ACTIVATIONS.values())


def batch_key(config: dict) -> str:
    """The trial config without the keys a batch may vary, as canonical JSON."""
    out = json.loads(json.dumps(config))
    for path in VARYING:
        node = out
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return json.dumps(out, sort_keys=True, default=str)


def supports(config: dict) -> str | None:
    """Why the trial ``config`` cannot be trained in a batch, or None when it can."""
    from .. import data
    from ..setup import build_model_and_plan

    cfg = OmegaConf.create(config)
    if data.augmenter(cfg.data) is not None:
        return "data augmentation is not implemented by the batched path"
    model, plan = build_model_and_plan(cfg, *data.spec(cfg.data), device="meta")
    for name, module in model.named_modules():
        if not isinstance(module, STACKABLE):
            return f"the batched path cannot stack module {name or '(the model)'} ({type(module).__name__})"
    if any(True for _ in model.buffers()):
        return "the batched path cannot stack a model with buffers"
    return optimizer_supports(OmegaConf.to_container(cfg.optimizer), plan.damping_rule)


def make_batches(trials: list, size: int) -> list[list]:
    """``trials`` as units to run: batches of at most ``size`` trials that may train together, and the others
    one by one (units of one, after the batches). Each reason for running alone is logged once."""
    if size <= 1:
        return [[t] for t in trials]
    groups: dict[str, list] = {}
    alone: list = []
    reasons: Counter = Counter()
    verdicts: dict[str, str | None] = {}
    for t in trials:
        key = batch_key(t.config)
        if key not in verdicts:
            verdicts[key] = supports(t.config)
        if verdicts[key] is None:
            groups.setdefault(key, []).append(t)
        else:
            alone.append([t])
            reasons[verdicts[key]] += 1
    for reason, count in reasons.items():
        LOG.info(f"launcher.batch: {count} trial(s) run one by one: {reason}")
    units = [members[i:i + size] for members in groups.values() for i in range(0, len(members), size)]
    return units + alone


__all__ = ["STACKABLE", "VARYING", "batch_key", "make_batches", "supports"]
