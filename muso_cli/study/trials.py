"""A trial's identity: one training run of a study, named by a hash of the resolved config that decides its
numbers.

A trial's id is 12 hex digits of the SHA-256 of its *semantic* config: the resolved config without the sections
and keys that do not change its numbers (launcher, logger, …), and with the parameterization's choices replaced by
what the table says identifies the run (at the base width SP, µP and second-order µP are the same run, so their
trials share one id and one run). Planning the same sweep again finds the same trials: finished ones (ok,
diverged) are skipped, failed ones retried, and a finished result is never overwritten.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..models import at_base_depth, depth_of, has_depth
from ..parametrize import identity

# Config sections and keys that do not change a trial's numbers: left out of its id.
NON_SEMANTIC = ("launcher", "logger", "study", "transfer", "coord", "device", "hydra")
NON_SEMANTIC_TRAIN = ("progress", "threads", "checkpoint_every", "eval_batch_size")
BUILTIN_TRAINER = "builtin"


def semantic_config(config: dict) -> dict:
    """The part of a resolved config that decides a trial's numbers.

    Sections that do not change the numbers (launcher, logger, …) are left out, and the parameterization's
    choices are replaced by what the table says identifies the run (:func:`muso_cli.parametrize.identity`): at
    the base width every parameterization is the same run, so one trial serves all of them. The built-in
    trainer's section is left out too, so that trials planned before trainers could be chosen keep their ids.
    """
    out = {k: v for k, v in config.items() if k not in NON_SEMANTIC}
    if (config.get("trainer") or {}).get("name", BUILTIN_TRAINER) == BUILTIN_TRAINER:
        out.pop("trainer", None)  # the built-in trainer: ids as before trainers were chosen (studies keep theirs)
    out["train"] = {k: v for k, v in config["train"].items() if k not in NON_SEMANTIC_TRAIN}
    param, opt = config["param"], config["optimizer"]
    ident = identity(opt["name"], param["name"], damping_rule=opt.get("damping_rule", "auto"),
                     weight_decay_rule=param["weight_decay_rule"],
                     at_base_width=config["model"]["width"] == config["model"]["base_width"])
    out["param"] = {**param, "name": ident["param"], "weight_decay_rule": ident["weight_decay_rule"]}
    out["optimizer"] = {**opt, "damping_rule": ident["damping_rule"]}
    if at_base_depth(config["model"]):  # depth changes no number: one base-depth run serves every α, and trials
        out["param"].pop("depth_alpha", None)  # planned before depth existed keep their ids
        if has_depth(config["model"]):
            out["model"] = {k: v for k, v in out["model"].items() if k != "base_depth"}
    return out


def digest(obj: dict, n: int = 12) -> str:
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:n]


def trial_id(config: dict) -> str:
    """12 hex digits of the SHA-256 of the semantic config (canonical JSON)."""
    return digest(semantic_config(config))


def base_config(config: dict) -> dict:
    """The semantic config without the values a study varies (param, width, lr, damping, seed)."""
    base = semantic_config(config)
    base["param"] = {k: v for k, v in base["param"].items() if k not in ("name", "weight_decay_rule")}
    base["optimizer"].pop("damping_rule")
    base.pop("seed")
    base["model"] = {k: v for k, v in base["model"].items() if k != "width"}
    base["optimizer"] = {k: v for k, v in base["optimizer"].items() if k not in ("lr", "damping")}
    return base


def with_runtime(config: dict, runtime: dict) -> dict:
    """``config`` with the non-semantic sections (launcher, logger, device, progress…) taken from ``runtime``."""
    out = {**config, **{k: runtime[k] for k in NON_SEMANTIC if k in runtime}}
    out["train"] = {**config["train"], **{k: runtime["train"][k] for k in NON_SEMANTIC_TRAIN}}
    return out


@dataclass
class Trial:
    """One training run of a study. lr and damping are base values (at base width); width is model.width."""

    index: int
    id: str
    phase: str           # sweep | refine | transfer
    param: str
    width: int
    lr: float
    damping: float | None
    seed: int
    config: dict = field(repr=False)

    @property
    def depth(self) -> int | None:
        """The model's number of residual blocks (muso_cli.models.depth_of), None for a model without depth."""
        return depth_of(self.config.get("model") or {})

    def label(self) -> str:
        damping = "" if self.damping is None else f" damping={self.damping:.3g}"
        depth = "" if self.depth is None else f" L={self.depth}"
        return f"{self.param} w={self.width}{depth} lr={self.lr:.3g}{damping} seed={self.seed}"


def make_trial(config: dict, phase: str) -> Trial:
    opt = config["optimizer"]
    return Trial(index=-1, id=trial_id(config), phase=phase, param=config["param"]["name"],
                 width=int(config["model"]["width"]), lr=float(opt["lr"]),
                 damping=float(opt["damping"]) if "damping" in opt else None, seed=int(config["seed"]),
                 config=config)


def with_values(config: dict, *, width: int | None = None, lr: float | None = None, damping: float | None = None,
                seed: int | None = None) -> dict:
    """A copy of a resolved config with the grid values set."""
    out = json.loads(json.dumps(config))
    if width is not None:
        out["model"]["width"] = int(width)
    if lr is not None:
        out["optimizer"]["lr"] = float(lr)
    if damping is not None:
        out["optimizer"]["damping"] = float(damping)
    if seed is not None:
        out["seed"] = int(seed)
    return out
