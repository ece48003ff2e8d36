"""Run set-up: what a training run, the coordinate check and validation need before the first step.

The device, the model at its width with its parameterization plan (initialised from ``cfg.seed``), and the
checks of the run's own keys (seed, device, ``train.*``). The training loop (train.py) is imported by the
commands that train only; everything else that needs a model and its plan comes here.
"""
from __future__ import annotations

import re
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from . import models, optim
from .errors import UsageError, check_bool, check_one_of, check_positive, is_int, is_number, raise_all
from .losses import LOSSES
from .parametrize import Plan, make_plan


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else the CPU; otherwise the device named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_model_and_plan(cfg: DictConfig, input_shape, num_classes: int, width: int | None = None,
                         device: torch.device | str = "cpu") -> tuple[nn.Module, Plan]:
    """The model at ``width`` (default model.width) on ``device``, parameterized, and initialised from
    ``cfg.seed`` (on the meta device: shapes only, nothing drawn). A model muso cannot parameterize (nothing
    scales, an ambiguous or unpreconditionable matrix: :func:`muso_cli.models.check_plan`) raises UsageError
    naming the parameter."""
    meta = torch.device(device).type == "meta"
    model, base, delta = models.build_with_shapes(cfg.model, input_shape, num_classes, width,
                                                  device="meta" if meta else None)
    opt, param = cfg.optimizer, cfg.param
    plan = make_plan(model, base, param.name, opt.name, delta=delta, damping_rule=opt.get("damping_rule", "auto"),
                     weight_decay_rule=param.weight_decay_rule, decay_vectors=param.decay_vectors,
                     sigma=param.sigma, readout_zero_init=param.readout_zero_init, power=optim.power(opt))
    raise_all(models.check_plan(cfg.model, plan))
    if meta:
        return model, plan
    plan.init_(model, torch.Generator().manual_seed(int(cfg.seed)))
    return model.to(device), plan


def check(cfg: DictConfig) -> list[UsageError | None]:
    """Problems with the run's own keys: seed, device and ``train.*``."""
    t = cfg.train
    return [
        None if is_int(cfg.seed) else UsageError("seed", f"must be an integer, got {cfg.seed!r}.", "e.g. seed=0."),
        _check_device(cfg.device),
        check_positive("train.steps", t.steps, integer=True, optional=True),
        check_positive("train.epochs", t.epochs),
        check_positive("train.batch_size", t.batch_size, integer=True),
        check_positive("train.eval_every", t.eval_every, integer=True),
        check_positive("train.eval_train_samples", t.eval_train_samples, integer=True),
        check_positive("train.eval_batch_size", t.eval_batch_size, integer=True),
        check_positive("train.warmup_steps", t.warmup_steps, integer=True, allow_zero=True),
        check_positive("train.checkpoint_every", t.checkpoint_every, integer=True, allow_zero=True),
        check_positive("train.threads", t.threads, integer=True, optional=True),
        check_one_of("train.loss", t.loss, LOSSES),
        check_one_of("train.lr_schedule", t.lr_schedule, ("constant", "cosine", "linear")),
        check_bool("train.progress", t.progress),
        None if is_number(t.diverge_factor) and t.diverge_factor > 1 else UsageError(
            "train.diverge_factor", f"must be a number > 1, got {t.diverge_factor!r}.", "e.g. train.diverge_factor=10."),
    ]


def _check_device(device: Any) -> UsageError | None:
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        return UsageError("device", f"must be auto, cpu, cuda or cuda:N; got {device!r}.", "e.g. device=cpu.")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return UsageError("device", f"{device} was asked for but CUDA is not available here.",
                          "use device=auto or device=cpu.")
    return None
