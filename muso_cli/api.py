"""Your own training loop with muso's parameterization and its studies, in a few calls.

A script that muso runs per trial (``trainer=command``, ``trainer=python``) reads the trial's config, builds its
model and optimizer the way muso's own trainer would, and reports its metrics::

    from muso_cli import api

    cfg = api.trial_config()                          # the trial muso runs ($MUSO_TRIAL_CONFIG)
    model, optimizer = api.build(lambda width: GPT(d_model=width), cfg)
    metrics = api.Metrics()                           # appends to $MUSO_TRIAL_DIR/metrics.jsonl
    for step in range(steps):
        ...                                           # your loop, your data, your loss, DDP, AMP, compile
        metrics.log(step, train_loss=loss.item())

:func:`build` gives the same model init and the same param groups (per-layer lr, damping and weight decay of
the parameterization in ``cfg.param`` for the optimizer in ``cfg.optimizer``) as muso's own trainer gives its
models: ``muso params`` shows them. Run by hand (no ``MUSO_TRIAL_CONFIG``), :func:`trial_config` composes muso's
config from overrides instead, so the same script runs outside a study.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from .config import compose

if TYPE_CHECKING:  # torch is imported where it is used: a script that only reports metrics starts without it
    import torch
    from torch import nn

    from .parametrize import Plan


def trial_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config of the trial muso runs ($MUSO_TRIAL_CONFIG, written by the trainer); without it (a run by hand)
    muso's config composed from ``overrides`` (``["optimizer=muon", "param=somup", "model.width=512"]``)."""
    path = os.environ.get("MUSO_TRIAL_CONFIG")
    if path:
        return OmegaConf.load(path)
    return compose(list(overrides))


def trial_dir() -> Path:
    """The trial's folder ($MUSO_TRIAL_DIR; the working directory when run by hand)."""
    return Path(os.environ.get("MUSO_TRIAL_DIR", "."))


def plan(make_model: Callable[[int], nn.Module], cfg: DictConfig, model: nn.Module | None = None) -> Plan:
    """The parameterization plan of ``cfg`` for the model ``make_model(width)`` builds: the base model (at
    model.base_width) and a delta model (at twice it) are built on the meta device (free) to find each
    parameter's role from its shape; ``model``: the model at model.width when already built."""
    import torch

    from . import optim
    from .parametrize import make_plan

    with torch.device("meta"):
        base, delta = make_model(int(cfg.model.base_width)), make_model(2 * int(cfg.model.base_width))
        target = model if model is not None else make_model(int(cfg.model.width))
    opt, param = cfg.optimizer, cfg.param
    return make_plan(target, base, param.name, opt.name, delta=delta, damping_rule=opt.get("damping_rule", "auto"),
                     weight_decay_rule=param.weight_decay_rule, decay_vectors=param.decay_vectors,
                     sigma=param.sigma, readout_zero_init=param.readout_zero_init, power=optim.power(opt),
                     grafting=opt.get("grafting"))


def build(make_model: Callable[[int], nn.Module], cfg: DictConfig, *, device: str | torch.device | None = None,
          loss: str | None = None) -> tuple[nn.Module, torch.optim.Optimizer]:
    """(the model at ``cfg.model.width``, initialised by the parameterization from ``cfg.seed``, on ``device``;
    the optimizer ``cfg.optimizer`` over it with the plan's param groups). ``make_model(width)`` builds your model
    at any width (one argument sets the size of its layers). ``loss``: the training loss K-FAC's Fisher samples
    from (default cfg.train.loss: xent | mse)."""
    import torch

    from . import optim

    model = make_model(int(cfg.model.width))
    the_plan = plan(make_model, cfg, model)
    the_plan.init_(model, torch.Generator().manual_seed(int(cfg.seed)))
    if device is not None:
        model = model.to(device)
    optimizer = optim.build(cfg.optimizer, model, the_plan, loss or cfg.train.get("loss", "xent"))
    return model, optimizer


class Metrics:
    """Appends your metrics to the trial's metrics.jsonl, one JSON line per call, the format muso's own loop
    writes and muso's result reads: ``{"step": N, "train_loss": x, ...}`` (a non-finite value is written as NaN or
    Infinity, which muso reads as a divergence). Only process rank 0 writes ($RANK, as torchrun sets it). A new
    trial starts the file afresh; a resumed one ($MUSO_RESUME=1) appends."""

    def __init__(self, folder: str | Path | None = None, *, resume: bool | None = None):
        self.path = Path(folder or trial_dir()) / "metrics.jsonl"
        self.active = int(os.environ.get("RANK", "0")) == 0
        resume = os.environ.get("MUSO_RESUME") == "1" if resume is None else resume
        if self.active and not resume:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def log(self, step: int, **values: float) -> None:
        """One line: the step and the values (plain numbers; tensors are converted)."""
        if not self.active:
            return
        row = {"step": int(step), **{k: float(v) if hasattr(v, "item") or isinstance(v, (int, float)) else v
                                     for k, v in values.items()}}
        with open(self.path, "a") as f:  # a whole line per write: a reader never sees half of one
            f.write(json.dumps(row) + "\n")


__all__ = ["Metrics", "build", "plan", "trial_config", "trial_dir"]
