"""Run set-up: what a training run, the coordinate check and validation need before the first step.

The device, the model at its width with its parameterization plan (initialised from ``cfg.seed``), the checks of
the run's own keys (seed, device, ``train.*``), and the size of a model at a width before anything is built for real
(:func:`estimate_size`, :func:`check_size`). The training loop (train.py) is imported by the commands that train
only; everything else that needs a model and its plan comes here.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from . import models, optim
from .errors import UsageError, check_bool, check_one_of, check_positive, is_int, is_number, raise_all
from .losses import LOSSES
from .parametrize import DepthStructureError, Plan, make_plan


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
    shapes = models.build_with_shapes(cfg.model, input_shape, num_classes, width, device="meta" if meta else None)
    model = shapes.model
    opt, param = cfg.optimizer, cfg.param
    try:
        plan = make_plan(model, shapes.base, param.name, opt.name, delta=shapes.delta,
                         damping_rule=opt.get("damping_rule", "auto"), weight_decay_rule=param.weight_decay_rule,
                         decay_vectors=param.decay_vectors, sigma=param.sigma,
                         readout_zero_init=param.readout_zero_init, power=optim.power(opt),
                         grafting=opt.get("grafting"), depth_base=shapes.depth_base, depth_delta=shapes.depth_delta,
                         depth_alpha=param.get("depth_alpha", 0.0))
    except DepthStructureError as e:  # a model of your own whose blocks its structure does not show
        key = "model.depth_arg" if models.is_user_model(cfg.model) else f"model.{models.depth_key(cfg.model)}"
        raise UsageError(key, str(e) + ".", "make the depth argument set the number of residual blocks, held in an "
                         "nn.ModuleList (or nn.Sequential) of blocks.") from None
    except ValueError as e:  # shapes the roles cannot be read from (a model of your own)
        named = re.match(r"parameter '([^']+)'", str(e))
        raise UsageError(named.group(1) if named else "model", str(e).removeprefix(named.group(0) if named else "")
                         .lstrip(": ") + ".", "build the model with the same parameters at every width, each "
                         "scaling in a matrix's out / in dimensions (a kernel's channels) or, for rows of features "
                         "such as a position embedding (1, T, d), in the last dimension alone.") from None
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


# ------------------------------------------------------------------------------------------------------
# Size: how large a model is at a width, before it is built for real.

MAX_PARAMETERS = 10**9  # above this (or above the memory of the device) a command asks for --yes


@dataclass(frozen=True)
class Size:
    """A model at one width: its parameters, and the bytes of float32 parameters, gradients and the optimizer's
    state (muso_cli.optim.state_elements). Activations are not counted: the estimate is a lower bound."""

    width: int
    parameters: int
    bytes: int


def estimate_size(cfg: DictConfig, width: int) -> Size:
    """The size of ``cfg``'s model at ``width``, from the model built on the meta device (free: shapes only)."""
    from . import data

    model, plan = build_model_and_plan(cfg, *data.spec(cfg.data), width=width, device="meta")
    n = sum(p.numel() for p in model.parameters())
    return Size(width, n, 4 * (2 * n + optim.state_elements(cfg.optimizer, plan)))


def device_memory(device: str) -> int | None:
    """Bytes of memory of the device a run would use (the GPU's, or this machine's RAM); None when unknown."""
    try:
        resolved = resolve_device(device)
        if resolved.type == "cuda":
            return torch.cuda.get_device_properties(resolved).total_memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AssertionError):
        return None


def check_size(cfg: DictConfig, width: int, key: str, *, yes: bool = False) -> UsageError | None:
    """The UsageError naming ``key`` when the model at ``width`` has more than MAX_PARAMETERS parameters or needs
    more memory than the device has (:func:`estimate_size`), unless ``yes`` (the command's --yes); else None."""
    if yes:
        return None
    size, memory = estimate_size(cfg, width), device_memory(cfg.device)
    if size.parameters <= MAX_PARAMETERS and (memory is None or size.bytes <= memory):
        return None
    has = f"; the {resolve_device(cfg.device).type} here has {memory / 2**30:.3g} GiB" if memory else ""
    return UsageError(key, f"width {width} builds a model of {size.parameters:.3g} parameters, at least "
                      f"{size.bytes / 2**30:.3g} GiB with its gradients and optimizer={cfg.optimizer.name}'s state "
                      f"(activations not counted){has}.", f"use a smaller width (the limit is {MAX_PARAMETERS:.0e} "
                      "parameters and the device's memory), or pass --yes to build it anyway.")


def parse_output_folder(key: str, folder: str | os.PathLike, fix: str = "") -> Path:
    """``folder`` (created when missing) when files can be written there, else a UsageError naming ``key``: a file
    in its place, a parent that cannot be created, no write permission, no room."""
    folder = Path(folder).expanduser()
    fix = fix or f"give {key} a folder you can write to, e.g. {key}=/tmp/out."
    if folder.exists() and not folder.is_dir():
        raise UsageError(key, f"{folder} is a file, not a folder.", fix)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".muso-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UsageError(key, f"{folder} cannot be written: {e.strerror or e}.", fix) from None
    return folder


def below_base_width(cfg: DictConfig) -> str | None:
    """The warning for model.width below model.base_width under µP or second-order µP (for the commands that use
    model.width itself: run, params), else None. Under SP every multiplier is 1 whatever the widths."""
    w, base = cfg.model.get("width"), cfg.model.get("base_width")
    if cfg.param.name == "sp" or not (is_int(w) and is_int(base)) or w >= base:
        return None
    return (f"model.width={w} is below model.base_width={base}, the width the hyperparameters are tuned at: "
            f"param={cfg.param.name}'s multipliers extrapolate downwards from it (m = {w / base:.3g}). If you tune at "
            f"this width, set model.base_width={w}.")
