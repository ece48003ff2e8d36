"""The bad-input battery (issues 15 and 27): bad keys and values of every config section, grids, study names and
roots, report and coord outputs, --config-dir files, models of your own, crafted shared studies, edited trials.jsonl
entries, and faults (read-only folders, a full disk, symlinked trial folders).

Each case is one muso command line in a fresh folder. A bad input must exit 2 with one paragraph naming the key and
the fix, no traceback, and nothing written; a case marked good (valid input near the edge, or a crafted study that
`muso report` must read without running it) must do what it says. Cases run in this process, except the faults,
which need a process of their own (a file-size limit, or the permission to bypass file modes dropped when run as
root). Prints one row per case and the totals; tests/test_bad_input.py asserts the same cases.

    .venv/bin/python scripts/bad_inputs.py [--fast] [--only GROUP]
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = ["data=synthetic", "data.n_train=512", "data.n_test=256"]
FAST = [*DATA, "model.base_width=16", "train.steps=30", "train.eval_every=10", "train.progress=false"]
COORD = ["coord.widths=[16,32,64,128,256]", "coord.steps=1", "coord.out={ws}/coord"]
PREFIX = {"sweep": [*FAST, "study.root={root}", "--no-launch"], "run": [*FAST, "hydra.run.dir={ws}/run"],
          "params": FAST, "coord-check": [*FAST, *COORD]}
GRID = ["study.params=[sp]", "study.lr=[0.025,0.05,0.1,0.2,0.4]"]  # the fixtures' grid: its optimum inside, at 0.1

# Clean: a bad input refused as it should be. Good: a valid input (or a crafted study read) doing what it should.
CLEAN, GOOD, TRACEBACK, ACCEPTED, MESSY, WRONG = ("clean exit 2", "ok-as-expected", "traceback", "accepted",
                                                  "exit 2, not clean", "good input mishandled")


@dataclass(frozen=True)
class Case:
    """One command line. ``key``: what the refusal must name (None: not a refusal; then ``expect`` is the exit
    status). ``fixture``: what to build first (FIXTURES). ``fault``: readonly:<path> (no write permission there) or
    fsize:<bytes> (a full disk: writes past that size fail), run in a subprocess. ``words``: must appear in the
    output; ``absent``: must not. ``may_write``: a case whose failure is a result (a failed trial's result.json).
    ``marker``: whether the crafted study's code must have run (with --trust it does: the gate is real)."""

    group: str
    argv: tuple[str, ...]
    key: str | None = None
    expect: int = 2
    fixture: str = ""
    fault: str = ""
    words: str = ""
    absent: str = ""
    may_write: bool = False
    marker: bool = False
    plain: bool = False     # no PREFIX

    @property
    def id(self) -> str:
        shown = " ".join(a for a in self.argv if a not in FAST and a not in COORD and a not in GRID)
        extra = f" [{self.fixture}]" if self.fixture else ""
        return f"{self.group}: {shown}{extra}{' {' + self.fault.split(':')[0] + '}' if self.fault else ''}"

    @property
    def slow(self) -> bool:
        """A fault (a subprocess of its own) or a case that trains (a launched sweep, a run that should go
        through): seconds, where the others take a tenth of one."""
        trains = "--launch" in self.argv or (self.argv[:1] == ("run",) and self.key is None)
        return bool(self.fault) or trains


def bad(group: str, key: str, *argv: str, **kw) -> Case:
    return Case(group, argv, key=key, **kw)


def good(group: str, *argv: str, expect: int = 0, **kw) -> Case:
    return Case(group, argv, key=None, expect=expect, **kw)


def _sweep_bad(group: str, rows: list[tuple[str, str]], *extra: str) -> list[Case]:
    return [bad(group, key, "sweep", *extra, *override.split()) for override, key in rows]


def _cases() -> list[Case]:
    cases: list[Case] = []
    # --- train.* and the run's own keys ----------------------------------------------------------------
    cases += _sweep_bad("train", [
        ("train.steps=abc", "train.steps"), ("train.steps=-5", "train.steps"), ("train.steps=0", "train.steps"),
        ("train.steps=1.5", "train.steps"), ("train.epochs=0", "train.epochs"), ("train.epochs=abc", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"), ("train.batch_size=-1", "train.batch_size"),
        ("train.batch_size=1.5", "train.batch_size"), ("train.batch_size=abc", "train.batch_size"),
        ("train.batch_size=100000", "data.n_train"), ("train.loss=hinge", "train.loss"),
        ("train.eval_every=0", "train.eval_every"), ("train.eval_train_samples=0", "train.eval_train_samples"),
        ("train.eval_batch_size=0", "train.eval_batch_size"), ("train.diverge_factor=1", "train.diverge_factor"),
        ("train.diverge_factor=abc", "train.diverge_factor"), ("train.lr_schedule=step", "train.lr_schedule"),
        ("train.warmup_steps=-1", "train.warmup_steps"), ("train.threads=0", "train.threads"),
        ("train.progress=maybe", "train.progress"), ("train.checkpoint_every=-1", "train.checkpoint_every"),
        ("train.stepz=3", "train.stepz"), ("+train.foo=1", "train.foo"), ("device=tpu", "device"),
        ("device=cuda:x", "device")])
    cases += [bad("train", "seed", "run", "seed=abc"), bad("train", "seed", "run", "seed=1.5"),
              bad("train", "train.batch_size", "run", "data=digits", "train.batch_size=2000"),
              good("train", "run", "train.steps=1", "train.batch_size=512")]
    # --- model.* ------------------------------------------------------------------------------------------
    cases += [bad("model", key, "params", *o.split()) for o, key in [
        ("model.width=0", "model.width"), ("model.width=-4", "model.width"), ("model.width=abc", "model.width"),
        ("model.width=1.5", "model.width"), ("model.base_width=0", "model.base_width"),
        ("model.base_width=abc", "model.base_width"), ("model.depth=0", "model.depth"),
        ("model.depth=abc", "model.depth"), ("model.activation=swish", "model.activation"),
        ("model.bias=maybe", "model.bias"), ("model=foo", "model"), ("model.name=foo", "model.name"),
        ("model=cnn model.base_width=1 model.width=2", "data.name"),  # a CNN on vectors
        ("model=cnn data=digits model.base_width=1 model.width=2 model.channels=0", "model.channels"),
        ("model=cnn data=digits model.base_width=1 model.width=2 model.readout_pool=0", "model.readout_pool"),
        ("model=vit data=digits model.patch=5", "model.patch"),       # 5 does not divide 8×8 images
        ("model=vit data=digits model.patch=0", "model.patch"), ("model=vit data=digits model.patch=9", "data.name"),
        ("model=vit data=digits model.patch=4 model.heads=3", "model.width"),
        ("model=vit data=digits model.patch=4 model.heads=null", "model.heads"),
        ("model=gpt model.base_width=16 model.width=32", "data.name"),
        ("model=gpt data=pystdlib model.base_width=16 model.width=32 model.positions=abs", "model.positions"),
        ("model=gpt data=pystdlib model.base_width=16 model.width=32 model.tie=maybe", "model.tie"),
        ("model=gpt data=pystdlib model.base_width=16 model.width=32 model.layers=0", "model.layers"),
        ("model=resnet18 data=digits model.base_width=1 model.width=2 model.channels=abc", "model.channels")]]
    cases += [good("model", "params", "model=vit", "data=digits", "model.patch=4"),
              good("model", "params", "model.width=16"),
              # below the base width 16: said under µP (its multipliers extrapolate down), silent under SP (all 1)
              good("model", "params", "model.width=8", "param=mup", words="below model.base_width=16"),
              good("model", "params", "model.width=8", absent="below model.base_width")]
    # --- data.* -------------------------------------------------------------------------------------------
    cases += _sweep_bad("data", [
        ("data.dim=0", "data.dim"), ("data.num_classes=1", "data.num_classes"),
        ("data.num_classes=0", "data.num_classes"), ("data.n_train=0", "data.n_train"),
        ("data.n_train=abc", "data.n_train"), ("data.n_test=-1", "data.n_test"),
        ("data.teacher_width=0", "data.teacher_width"), ("data.augment=true", "data.augment"),
        ("data=foo", "data"), ("data=digits data.test_fraction=0", "data.test_fraction"),
        ("data=digits data.test_fraction=1.5", "data.test_fraction"),
        ("data=digits data.test_fraction=-0.1", "data.test_fraction"),
        ("data=digits data.test_fraction=abc", "data.test_fraction"),
        ("data=digits data.test_fraction=0.0001", "data.test_fraction"),
        ("data=digits train.batch_size=2000", "train.batch_size"),
        ("data=fashion_mnist data.root={ws}/nowhere data.download=false", "data.root"),
        ("data=pystdlib model=gpt model.base_width=16 data.context=0", "data.context"),
        ("data=pystdlib model=gpt model.base_width=16 data.corpus_bytes=10", "data.corpus_bytes"),
        ("data=pystdlib model=gpt model.base_width=16 data.verify=maybe", "data.verify"),
        ("data=custom", "data._target_"), ("data=custom data._target_=no_such_pkg.load", "data._target_")])
    cases += [good("data", "sweep", "data=digits", "data.test_fraction=0.5", *GRID)]
    # --- optimizer.* --------------------------------------------------------------------------------------
    cases += _sweep_bad("optimizer", [
        ("optimizer.lr=-1", "optimizer.lr"), ("optimizer.lr=0", "optimizer.lr"), ("optimizer.lr=abc", "optimizer.lr"),
        ("optimizer.momentum=-0.5", "optimizer.momentum"), ("optimizer.momentum=abc", "optimizer.momentum"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay"), ("optimizer.nesterov=true", "optimizer.nesterov"),
        ("optimizer.nesterov=maybe", "optimizer.nesterov"), ("optimizer=foo", "optimizer"),
        ("optimizer.name=foo", "optimizer.name"), ("+optimizer.foo=1", "optimizer.foo"),
        ("study.damping=[0.1]", "study.damping"),
        ("optimizer=adam optimizer.beta1=1.5", "optimizer.beta1"),
        ("optimizer=adam optimizer.beta2=-1", "optimizer.beta2"),
        ("optimizer=adam optimizer.eps=-1", "optimizer.eps"),
        ("optimizer=adam optimizer.weight_decay=-1", "optimizer.weight_decay"),
        ("optimizer=kfac optimizer.damping=0", "optimizer.damping"),
        ("optimizer=kfac optimizer.ema_decay=1.5", "optimizer.ema_decay"),
        ("optimizer=kfac optimizer.lrr=1", "optimizer.lrr"),
        ("optimizer=kfac optimizer.curvature_interval=0", "optimizer.curvature_interval"),
        ("optimizer=kfac optimizer.inverse_interval=0", "optimizer.inverse_interval"),
        ("optimizer=kfac optimizer.kl_clip=-1", "optimizer.kl_clip"),
        ("optimizer=kfac optimizer.fisher=exact", "optimizer.fisher"),
        ("optimizer=kfac optimizer.inverse=lu", "optimizer.inverse"),
        ("optimizer=kfac optimizer.factored=maybe", "optimizer.factored"),
        ("optimizer=kfac optimizer.damping_rule=foo", "optimizer.damping_rule"),
        ("optimizer=kfac optimizer.momentum=-1", "optimizer.momentum"),
        ("optimizer=kfac study.damping=[-1]", "study.damping"),
        ("optimizer=kfac optimizer.weight_decay=-1", "optimizer.weight_decay"),
        ("optimizer=shampoo optimizer.exponent=0", "optimizer.exponent"),
        ("optimizer=shampoo optimizer.statistics=avg", "optimizer.statistics"),
        ("optimizer=shampoo optimizer.grafting=rmsprop", "optimizer.grafting"),
        ("optimizer=shampoo optimizer.eigh_dtype=float16", "optimizer.eigh_dtype"),
        ("optimizer=shampoo optimizer.start_preconditioning_step=-1", "optimizer.start_preconditioning_step"),
        ("optimizer=muon optimizer.ns_steps=0", "optimizer.ns_steps"),
        ("optimizer=muon optimizer.ns_dtype=float16", "optimizer.ns_dtype"),
        ("optimizer=muon optimizer.adjust_lr_fn=foo", "optimizer.adjust_lr_fn"),
        ("optimizer=muon optimizer.adamw_lr=-1", "optimizer.adamw_lr"),
        ("optimizer=muon optimizer.momentum=0", "optimizer.nesterov"),    # Nesterov with no momentum
        ("optimizer=muon optimizer.weight_decay=-1", "optimizer.weight_decay"),
        ("optimizer=soap optimizer.beta1=1", "optimizer.beta1"),
        ("optimizer=soap optimizer.statistics_interval=0", "optimizer.statistics_interval"),
        ("optimizer=soap optimizer.damping=-1", "optimizer.damping")])
    cases += [good("optimizer", "sweep", "optimizer.momentum=0.9", "optimizer.nesterov=true", *GRID),
              good("optimizer", "sweep", "optimizer=kfac", "optimizer.lowrank=true", *GRID),
              # the deprecated alias wins over factored, and says so
              good("optimizer", "sweep", "optimizer=kfac", "optimizer.lowrank=false", *GRID,
                   words="lowrank=False is used, over factored=True"),
              good("optimizer", "sweep", "optimizer=shampoo", "optimizer.lowrank=false", *GRID,
                   words="lowrank=False is used, over factored=True"),
              good("optimizer", "sweep", "optimizer=muon", "optimizer.momentum=0", "optimizer.nesterov=false", *GRID)]
    # --- param.* ------------------------------------------------------------------------------------------
    cases += [bad("param", key, "run", *o.split()) for o, key in [
        ("param.sigma=0", "param.sigma"), ("param.sigma=abc", "param.sigma"), ("param.name=foo", "param.name"),
        ("param=foo", "param"), ("param.weight_decay_rule=foo", "param.weight_decay_rule"),
        ("param.readout_zero_init=maybe", "param.readout_zero_init"),
        ("param.decay_vectors=maybe", "param.decay_vectors"),
        ("model=gpt data=pystdlib model.base_width=16 model.width=32 model.tie=true param=mup "
         "param.readout_zero_init=true",
         "param.readout_zero_init")]]
    cases += [bad("param", "param", "sweep", "param=mup")]
    # --- study.*: grids, names, roots ---------------------------------------------------------------------
    cases += _sweep_bad("study", [
        ("study.params=[foo]", "study.params"),
        ("study.params=[sp,sp]", "study.params"),
        ("study.params=[]", "study.params"),
        ("study.lr=[]", "study.lr"),
        ("study.lr=[-1]", "study.lr"),
        ("study.lr=[0]", "study.lr"),
        ("study.lr=abc", "study.lr"),
        ("study.lr=log3:1:2", "study.lr"), ("study.lr=log2:1:0", "study.lr"), ("study.lr=log2:0:1:0", "study.lr"),
        ("study.lr=log2:1.2.3:2", "study.lr"), ("study.lr=log2:.:1", "study.lr"), ("study.lr=log2:-2:0:.", "study.lr"),
        ("study.lr=log2:0:" + "9" * 400, "study.lr"), ("study.lr=log10:300:400", "study.lr"),
        ("study.lr=log2:-10:10:0.001", "study.lr"), ("study.lr=log2:1e5:1e6", "study.lr"),
        ("study.seeds=[0,0]", "study.seeds"), ("study.seeds=[a]", "study.seeds"), ("study.seeds=[]", "study.seeds"),
        ("study.seeds=1.5", "study.seeds"),
        ("study.widths=[8,16]", "study.widths"),
        ("study.widths=[abc]", "study.widths"),
        ("study.metric=acc", "study.metric"), ("study.max_trials=0", "study.max_trials"),
        ("study.seeds=[0,1] study.max_trials=3", "study.max_trials"), ("study.delta=-1", "study.delta"),
        ("study.delta_relative=0", "study.delta_relative"), ("study.bootstrap.level=1.5", "study.bootstrap.level"),
        ("study.bootstrap.resamples=0", "study.bootstrap.resamples"), ("study.refine_to=0", "study.refine_to"),
        ("study.refine_budget=0", "study.refine_budget"), ("study.name=" + "a" * 300, "study.name"),
        ("study.name=../x", "study.name"), ("study.name=/abs/x", "study.name"), ("study.name='a b'", "study.name"),
        ("study.name='a\nb'", "study.name"), ("study.name=..", "study.name"), ("study.name=étude", "study.name"),
        ("study.root=", "study.root"), ("study.root=/proc/x", "study.root"), ("study.root={ws}/afile", "study.root"),
        ("study.widths=[100000]", "study.widths"),          # 10^10 parameters: needs --yes
        ("model.width=256", "model.width"), ("seed=3", "seed"), ("study.lr=0.1,0.2 optimizer.lr=0.1", "optimizer.lr")])
    cases += [good("study", "sweep", "study.lr=log2:-2:0:0.5", "study.params=[sp]"),
              good("study", "sweep", "study.name='a.b-c_d+e=f@g,h'", *GRID),
              good("study", "sweep", "study.name='étude'", *GRID, "--dry-run")]
    # --- launcher.*, logger.*, trainer.* --------------------------------------------------------------------
    cases += _sweep_bad("launcher", [
        ("launcher=pool launcher.workers=abc", "launcher.workers"),
        ("launcher=pool launcher.workers=-1", "launcher.workers"),
        ("launcher=pool launcher.workers=0", "launcher.workers"),
        ("launcher=pool launcher.per_gpu=0", "launcher.per_gpu"),
        ("launcher=pool launcher.threads=0", "launcher.threads"), ("launcher=foo", "launcher"),
        ("launcher.batch=4", "launcher.batch"), ("+launcher.batch=4", "launcher.batch"),
        ("logger.mode=maybe", "logger.mode"), ("trainer=foo", "trainer"), ("+trainer.foo=1", "trainer.foo")])
    cases += [bad("launcher", "launcher", "run", "launcher=pool")]
    # --- overrides, Hydra and the command line -------------------------------------------------------------
    cases += [bad("overrides", k, *a.split(), plain=p) for a, k, p in [
        ("sweep +foo=1", "foo", False), ("sweep +model.dropout=0.1", "model.dropout", False),
        ("sweep hydra/launcher=joblib", "hydra/launcher", False),
        ("sweep hydra.run.dir=/tmp/x", "hydra.run.dir", False),
        ("sweep model.depth=2,3", "model.depth", False), ("run optimizer.lr=(", "optimizer.lr", False),
        ("run =1", "=1", True), ("run model.widht=3", "model.widht", False), ("run foo=bar", "foo", False),
        ("params model.width==3", "model.width", False), ("swep", "swep", True),
        ("sweep --bogus", "muso sweep", False), ("run hydra.run.dir=/proc/x", "hydra.run.dir", False),
        ("run hydra.run.dir={ws}/afile", "hydra.run.dir", False),
        ("sweep hydra.searchpath=[file://{ws}/nowhere]", "hydra.searchpath", False),
        ("params --config-dir {ws}/nowhere", "--config-dir", False),
        ("params --config-dir {ws}/afile", "--config-dir", False)]]
    # --- --config-dir files -------------------------------------------------------------------------------
    cases += [bad("config-dir", "model", "params", "--config-dir", "{ws}/conf", f"model={name}", fixture="conf")
              for name in ("malformed", "listed", "pytag", "empty")]
    cases += [bad("config-dir", "model._target_", "params", "--config-dir", "{ws}/conf", "model=unimportable",
                  fixture="conf"),
              good("config-dir", "params", "--config-dir", "{ws}/conf", "model=mine", fixture="conf")]
    # --- report and coord outputs -------------------------------------------------------------------------
    cases += [bad("outputs", "--out", "report", "{study}", "--out", "{ws}/afile", fixture="study"),
              bad("outputs", "--out", "report", "{study}", "--out", "/proc/x", fixture="study"),
              bad("outputs", "study", "report", "{ws}/nowhere"), bad("outputs", "study", "report", "{ws}"),
              bad("outputs", "study.metric", "report", "{study}", "study.metric=acc", fixture="study"),
              bad("outputs", "model.width", "report", "{study}", "model.width=3", fixture="study"),
              bad("outputs", "study.delta", "report", "{study}", "study.delta=-1", fixture="study"),
              bad("outputs", "study.foo", "report", "{study}", "study.foo=1", fixture="study"),
              bad("outputs", "study", "report", "{study}", fixture="corrupt-yaml"),
              bad("outputs", "study", "status", "{study}", fixture="corrupt-index"),
              bad("outputs", "overrides", "status", "{study}", "extra=1", fixture="study"),
              bad("outputs", "coord.out", "coord-check", "coord.out={ws}/afile"),
              bad("outputs", "coord.out", "coord-check", "coord.out=/proc/x"),
              good("outputs", "report", "{study}", "--out", "{ws}/rep", fixture="study")]
    # --- coord.* ------------------------------------------------------------------------------------------
    cases += [bad("coord", key, "coord-check", *o.split()) for o, key in [
        ("coord.widths=[64]", "coord.widths"),
        ("coord.widths=[0,64]", "coord.widths"),
        ("coord.steps=0", "coord.steps"),
        ("coord.widths=[64,128]", "coord.fit_from"), ("coord.widths=[16,32,64,128]", "coord.fit_from"),
        ("coord.tolerance=-1", "coord.tolerance"), ("coord.batch_size=0", "coord.batch_size"),
        ("coord.seeds=0", "coord.seeds"), ("coord.fit_from=-1", "coord.fit_from"),
        ("coord.fit_from=100000", "coord.fit_from"), ("coord.widths=[8,16,32,64]", "coord.widths"),
        ("coord.widths=[16,32,64,128,100000]", "coord.widths")]]
    cases += [good("coord", "coord-check", "coord.widths=[16,32,64]", "coord.fit_from=16")]
    # --- transfer and refine on a study -------------------------------------------------------------------
    cases += [bad("transfer", k, "transfer", "{study}", *o.split(), "--no-launch", fixture="study") for o, k in [
        ("", "transfer.widths"),
        ("transfer.widths=[8]", "transfer.widths"),
        ("transfer.widths=[abc]", "transfer.widths"),
        ("transfer.widths=[32] transfer.lr=foo", "transfer.lr"),
        ("transfer.widths=[32] transfer.verify=0", "transfer.verify"),
        ("transfer.widths=[32] transfer.verify_step=-1", "transfer.verify_step"),
        ("transfer.widths=[32] study.widths=[32]", "study.widths"), ("transfer.widths=[32] param=mup", "param"),
        ("transfer.widths=[100000]", "transfer.widths"),      # 10^10 parameters: needs --yes
        ("transfer.widths=[32] model.depth=4", "model.depth")]]
    cases += [bad("transfer", "study", "transfer", "{ws}/nowhere", "transfer.widths=[32]"),
              bad("transfer", "study.refine_to", "refine", "{study}", "study.refine_to=0", fixture="study"),
              good("transfer", "transfer", "{study}", "transfer.widths=[32]", "--dry-run", fixture="study",
                   words="best setting")]
    # --- your own model -----------------------------------------------------------------------------------
    own = ["model=custom", "model.base_width=16", "model.width=32"]
    cases += [good("own-model", "params", *own, "model._target_=battery_nets.PosViT", "param=mup",
                   "optimizer=adam", fixture="nets", words="pos_embed"),
              good("own-model", "coord-check", *own, "model._target_=battery_nets.PosViT", "param=mup",
                   "optimizer=adam", fixture="nets", words="not observed"),
              good("own-model", "params", *own, "model._target_=battery_nets.TorchAttention", "param=mup",
                   "optimizer=adam", fixture="nets", words="MultiheadAttention"),
              good("own-model", "params", *own, "model._target_=battery_nets.TorchAttention", "param=somup",
                   "optimizer=sgd", fixture="nets", words="MultiheadAttention"),
              good("own-model", "params", *own, "model._target_=battery_nets.TorchAttention", "param=sp",
                   "optimizer=muon", fixture="nets", words="MultiheadAttention"),
              good("own-model", "params", *own, "model._target_=battery_nets.TorchAttention", "param=sp",
                   "optimizer=adam", fixture="nets", absent="MultiheadAttention"),
              good("own-model", "coord-check", *own, "model._target_=battery_nets.TorchAttention", "param=mup",
                   "optimizer=adam", "optimizer.lr=0.001", fixture="nets", words="out_proj"),
              good("own-model", "params", *own, "model._target_=battery_nets.Net", fixture="nets")]
    cases += [bad("own-model", key, "params", *own, f"model._target_=battery_nets.{net}", *o, fixture="nets")
              for net, key, o in [
                  ("TorchAttention", "attn.in_proj_weight", ["optimizer=kfac"]),
                  ("TorchAttention", "attn.in_proj_weight", ["optimizer=shampoo"]),
                  ("TorchAttention", "attn.in_proj_weight", ["optimizer=soap"]),
                  ("Weird3D", "w", []), ("Shifting", "layers.1.weight", []), ("Fails", "model._target_", []),
                  ("NotModule", "model._target_", []), ("Fixed", "model.width_arg", []),
                  ("RawReadout", "w", ["optimizer=adam"]), ("Net", "model.depth", ["+model.depth=3"]),
                  ("Net", "model.width_arg", ["model.width_arg=size"])]]
    cases += [bad("own-model", "model._target_", "params", *own, "model._target_=no_such_pkg.Net")]
    # --- crafted shared studies: data, never code -----------------------------------------------------------
    for fixture in ("foreign", "foreign-module", "foreign-searchpath", "foreign-setup"):
        cases += [good("shared-study", "report", "{study}", fixture=fixture),
                  bad("shared-study", "--trust", "transfer", "{study}", "transfer.widths=[32]", "--dry-run",
                      fixture=fixture),
                  bad("shared-study", "--trust", "refine", "{study}", "--dry-run", fixture=fixture)]
    cases += [bad("shared-study", "--trust", "run-trial", "{study}", "0", fixture="foreign-pending"),
              bad("shared-study", "--trust", "run-trial", "{study}", "0", fixture="foreign-module-pending"),
              good("shared-study", "status", "{study}", fixture="foreign"),
              good("shared-study", "report", "{study}", fixture="foreign-unimportable"),
              # with --trust the study's code runs: the gate is real (its crafted target fails after writing)
              good("shared-study", "transfer", "{study}", "transfer.widths=[32]", "--dry-run", "--trust", expect=2,
                   fixture="foreign", marker=True, words="data._target_"),
              good("shared-study", "run-trial", "{study}", "0", "--trust", expect=2, fixture="foreign-pending",
                   marker=True, words="data._target_"),
              good("shared-study", "transfer", "{study}", "transfer.widths=[32]", "--dry-run", fixture="own-target",
                   words="best setting"),
              good("shared-study", "refine", "{study}", "--dry-run", fixture="own-target")]
    # --- edited trials.jsonl entries and results ------------------------------------------------------------
    cases += [bad("edited", key, "run-trial", "{study}", "0", fixture=f"edited:{edit}") for edit, key in [
        ("train.steps=abc", "trial 0"), ("optimizer.lr=-1", "trial 0"), ("model.width=x", "trial 0"),
        ("optimizer.name=foo", "trial 0"), ("data.dim=0", "trial 0"), ("param=foo", "study"), ("id=zz", "study"),
        ("line=garbage", "study")]]
    cases += [bad("edited", "index", "run-trial", "{study}", "99", fixture="pending"),
              bad("edited", "index", "run-trial", "{study}", "-1", fixture="pending"),
              bad("edited", "muso run-trial", "run-trial", "{study}", "abc", fixture="pending"),
              bad("edited", "study", "run-trial"), bad("edited", "overrides", "run-trial", "{study}", "0", "x=1",
                                                      fixture="pending"),
              good("edited", "report", "{study}", fixture="result:train_loss=-1e308", words="unreadable"),
              good("edited", "transfer", "{study}", "transfer.widths=[32]", "--dry-run",
                   fixture="result:train_loss=-1e308", words="best setting", absent="lr=0.4"),
              good("edited", "transfer", "{study}", "transfer.widths=[32]", "study.metric=test_acc", "--dry-run",
                   fixture="result:test_acc=7", words="best setting", absent="lr=0.4"),
              # launched with the rest: that trial fails naming the key, the others run
              good("edited", "sweep", *GRID, "study.name=s", "--launch", expect=1, fixture="edited:optimizer.lr=-1",
                   words="1 failed"),
              good("edited", "run-trial", "{study}", "0", expect=1, fixture="symlink", words="symbolic link"),
              good("edited", "sweep", *GRID, "study.name=s", "--launch", expect=1, fixture="symlink", words="failed")]
    # --- faults: read-only folders, a full disk (a write that fails part-way may leave what it wrote) ---------
    cases += [bad("faults", "study.root", "sweep", *GRID, "study.name=s", fixture="pending", fault="readonly:{study}"),
              bad("faults", "--out", "report", "{study}", fixture="study", fault="readonly:{study}"),
              good("faults", "run-trial", "{study}", "0", expect=1, fixture="pending", words="cannot write",
                   fault="readonly:{study}/trials"),
              bad("faults", "hydra.run.dir", "run", fixture="run-dir", fault="readonly:{ws}/run"),
              bad("faults", "study.root", "sweep", *GRID, "study.name=s", fault="fsize:1000", may_write=True),
              # the trials' checkpoints (27 kB) do not fit: failed results, and a rerun with room goes on
              good("faults", "sweep", *GRID, "study.name=s", "model.base_width=64", "train.checkpoint_every=5",
                   "--launch", expect=1, fault="fsize:12000", words="5 failed"),
              bad("faults", "--out", "report", "{study}", fixture="study", fault="fsize:20000", may_write=True),
              bad("faults", "coord.out", "coord-check", fault="fsize:3000", may_write=True),
              bad("faults", "hydra.run.dir", "run", "model.width=64", "train.checkpoint_every=5", fault="fsize:3000",
                  may_write=True)]
    return cases


CASES = _cases()


# ------------------------------------------------------------------------------------------------------
# Fixtures: what a case needs before its command runs (built in this process).

NETS = '''"""Models of your own, for the battery (written into its folder)."""
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(32, width), nn.Linear(width, width), nn.Linear(width, 10)

    def forward(self, x):
        return self.c(self.b(self.a(x).relu()).relu())


class PosViT(nn.Module):
    """The timm layout: a class token (1, 1, d) and a position embedding (1, T, d)."""

    def __init__(self, width, tokens=4):
        super().__init__()
        self.tokens = tokens
        self.embed = nn.Linear(32 // tokens, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, width))
        self.mix = nn.Linear(width, width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        t = self.embed(x.view(len(x), self.tokens, -1))
        t = torch.cat([self.cls_token.expand(len(x), -1, -1), t], 1) + self.pos_embed
        return self.head(self.mix(t).relu()[:, 0])


class TorchAttention(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.embed = nn.Linear(8, width)
        self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
        self.readout = nn.Linear(width, 10)

    def forward(self, x):
        h = self.embed(x.view(len(x), 4, 8))
        return self.readout(self.attn(h, h, h)[0].mean(1))


class Weird3D(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.a = nn.Linear(32, width)
        self.w = nn.Parameter(torch.zeros(width, 3, width))
        self.c = nn.Linear(width, 10)

    def forward(self, x):
        return self.c(self.a(x))


class Shifting(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(32, 32) for _ in range(width // 16))
        self.c = nn.Linear(32, 10)

    def forward(self, x):
        return self.c(x)


class Fixed(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.c = nn.Linear(32, 10)

    def forward(self, x):
        return self.c(x)


class RawReadout(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.a = nn.Linear(32, width)
        self.w = nn.Parameter(torch.randn(width, 10))

    def forward(self, x):
        return self.a(x).relu() @ self.w


def Fails(width):
    raise RuntimeError("the constructor failed")


def NotModule(width):
    return 3
'''
EVIL = '''from pathlib import Path
Path({marker!r}).write_text("imported")        # runs at import
from torch import nn


def Net(width):
    Path({marker!r}).write_text("called")
    return nn.Sequential(nn.Linear(32, width), nn.Linear(width, 10))
'''
CONF = {"malformed": "name: [unclosed\n  x: :\n", "listed": "- a\n- b\n",
        "pytag": "name: !!python/object/apply:os.system ['touch {marker}']\n", "empty": "",
        "unimportable": "_target_: no_such_pkg.Net\nname: u\nwidth_arg: width\ninput_shape_arg: null\n"
                        "num_classes_arg: null\nwidth: 32\nbase_width: 16\n",
        "mine": "_target_: battery_nets.Net\nname: mine\nwidth_arg: width\ninput_shape_arg: null\n"
                "num_classes_arg: null\nwidth: 32\nbase_width: 16\n"}


def _quiet(argv: list[str]) -> int:
    from muso_cli.cli import main

    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        code = main(argv)
    assert code == 0, f"fixture {argv} failed: {out.getvalue()[-500:]}{err.getvalue()[-1500:]}"
    return code


def _sweep(ws: Path, *extra: str) -> Path:
    _quiet(["sweep", *FAST, f"study.root={ws / 'studies'}", "study.name=s", *GRID, *extra, "--no-launch"])
    return ws / "studies" / "s"


def _results(study: Path, edit: str = "") -> None:
    """A finished result per trial: train_loss a parabola in log2 lr with its minimum at 0.1."""
    import math

    from muso_cli import track

    for line in (study / "trials.jsonl").read_text().splitlines():
        t = json.loads(line)
        loss = 0.2 + 0.05 * math.log2(t["lr"] / 0.1) ** 2
        final = {"train_loss": loss, "test_loss": loss + 0.1, "test_acc": 0.9 - loss / 10}
        if edit and t["lr"] == 0.4:  # the worst setting claims the impossible: trusted, it would be the optimum
            key, value = edit.split("=")
            final[key] = float(value)
        track.write_json(study / "trials" / t["id"] / track.RESULT, {"status": "ok", "final": final, "steps": 30})


def _edit_index(study: Path, edit) -> None:
    lines = (study / "trials.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    edit(rows)
    (study / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _foreign(study: Path, ws: Path, node: dict, recorded: list[str], section: str = "data") -> None:
    """Make ``study`` someone else's: no token of ours, and ``node`` as its config's ``section``."""
    import yaml

    manifest = yaml.safe_load((study / "study.yaml").read_text())
    manifest["token"] = "0" * 32
    manifest["overrides"] = [*manifest["overrides"], *recorded]
    manifest["base_config"][section] = node
    (study / "study.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))

    def craft(rows):
        for r in rows:
            if section == "launcher":
                r["config"]["launcher"] = node
            else:
                r["config"][section] = node
    _edit_index(study, craft)


def build_fixture(name: str, ws: Path) -> Path | None:
    """Build fixture ``name`` in ``ws``; returns the study folder when there is one."""
    marker = str(ws / "MARKER")
    (ws / "afile").write_text("a file, not a folder\n")
    if name in ("", "run-dir"):
        (ws / "run").mkdir(exist_ok=True)
        return None
    if name == "nets":
        (ws / "battery_nets.py").write_text(NETS)
        return None
    if name == "conf":
        (ws / "battery_nets.py").write_text(NETS)
        (ws / "conf" / "model").mkdir(parents=True)
        for option, text in CONF.items():
            (ws / "conf" / "model" / f"{option}.yaml").write_text(text.replace("{marker}", marker))
        return None
    if name == "own-target":
        (ws / "battery_nets.py").write_text(NETS)
        study = _sweep(ws, "model=custom", "model._target_=battery_nets.Net")
        _results(study)
        return study
    study = _sweep(ws)
    if name.startswith("edited:"):
        import yaml

        key, _, text = name.split(":", 1)[1].partition("=")
        value = yaml.safe_load(text)  # typed as a hand edit would type it: abc a string, -1 a number

        def edit(rows):
            if key == "line":
                rows[0] = value
            elif key in ("param", "id"):
                rows[0][key] = value
            else:
                section, k = key.split(".")
                rows[0]["config"][section][k] = value
        _edit_index(study, edit)
        return study
    if name == "pending":
        return study
    if name == "symlink":
        first = json.loads((study / "trials.jsonl").read_text().splitlines()[0])["id"]
        (ws / "elsewhere").mkdir()
        (study / "trials").mkdir(exist_ok=True)
        (study / "trials" / first).symlink_to(ws / "elsewhere")
        return study
    if name == "corrupt-index":
        (study / "trials.jsonl").write_text("{not json\n")
        return study
    if name == "corrupt-yaml":
        (study / "study.yaml").write_text("- a list\n- not a study\n")
        return study
    if name.startswith("result:"):
        _results(study, name.split(":", 1)[1])
        return study
    if not name.endswith("pending"):
        _results(study)
    if name == "study":
        return study
    if name.startswith("foreign-module"):
        (ws / "evil_target.py").write_text(EVIL.format(marker=marker))
        node = {"_target_": "evil_target.Net", "name": "evil", "width_arg": "width", "input_shape_arg": None,
                "num_classes_arg": None, "width": 16, "base_width": 16}
        _foreign(study, ws, node, ["model=custom", "model._target_=evil_target.Net"], "model")
    elif name.startswith("foreign-unimportable"):
        node = {"_target_": "no_such_pkg.Net", "name": "gone", "width_arg": "width", "width": 16, "base_width": 16}
        _foreign(study, ws, node, ["model=custom", "model._target_=no_such_pkg.Net"], "model")
    elif name == "foreign-searchpath":
        (ws / "conf" / "model").mkdir(parents=True)
        (ws / "conf" / "model" / "evil.yaml").write_text(
            f"_target_: evil_target.Net\nname: evil\nwidth_arg: width\nwidth: 16\nbase_width: 16\n")
        (ws / "evil_target.py").write_text(EVIL.format(marker=marker))
        node = {"_target_": "evil_target.Net", "name": "evil", "width_arg": "width", "width": 16, "base_width": 16}
        _foreign(study, ws, node, [f"hydra.searchpath=[file://{ws / 'conf'}]", "model=evil"], "model")
    elif name == "foreign-setup":
        node = {"name": "slurm", "setup": [f"touch {marker}"]}
        _foreign(study, ws, node, ["launcher=slurm", f"launcher.setup=['touch {marker}']"], "launcher")
    elif name.startswith("foreign"):  # pathlib.Path.write_text with arguments of the author's choosing
        node = {"_target_": "pathlib.Path.write_text", "name": "d", "num_classes": None, "stream": False,
                "n_train": None, "n_test": None, "augment": False,
                "_args_": [{"_target_": "pathlib.Path", "_args_": [marker]}, "written by a study's author"]}
        _foreign(study, ws, node, ["data=custom", "data._target_=pathlib.Path.write_text",
                                   f"+data._args_=[{{_target_:pathlib.Path,_args_:['{marker}']}},pwned]"])
    else:
        raise ValueError(f"unknown fixture {name!r}")
    return study


# ------------------------------------------------------------------------------------------------------
# Running a case

@dataclass
class Outcome:
    code: int | None
    output: str
    traceback: bool
    written: list[str] = field(default_factory=list)
    marker: bool = False
    seconds: float = 0.0


def argv_of(case: Case, ws: Path, study: Path | None) -> list[str]:
    args = list(case.argv)
    prefix = [] if case.plain or not args else list(PREFIX.get(args[0], []))
    if "--launch" in args or "--dry-run" in args:  # a sweep that launches its trials, or only prints its plan
        prefix, args = [p for p in prefix if p != "--no-launch"], [a for a in args if a != "--launch"]
    keys = {a.split("=", 1)[0].lstrip("+~") for a in args[1:] if "=" in a}
    groups = {k for k in keys if "." not in k}
    prefix = [p for p in prefix if p.split("=", 1)[0] not in keys and p.split(".", 1)[0] not in groups]
    out = [args[0], *prefix, *args[1:]] if args else []
    subs = {"{ws}": str(ws), "{root}": str(ws / "studies"), "{study}": str(study or ws / "studies" / "s")}
    for k, v in subs.items():
        out = [a.replace(k, v) for a in out]
    return out


def _snapshot(ws: Path) -> dict[str, tuple]:
    out = {}
    for p in ws.rglob("*"):
        if "__pycache__" in p.parts:
            continue
        try:
            st = p.lstat()
        except OSError:
            continue
        out[str(p.relative_to(ws))] = (st.st_size, st.st_mtime_ns) if p.is_file() else ()
    return out


def _drop_dac_override() -> None:
    """In the child, before exec: give up root's permission to ignore file modes (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH), so that a read-only folder is read-only to it too."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP: the exec'd program then lacks it


def _in_subprocess(argv: list[str], ws: Path, fault: str) -> tuple[int | None, str]:
    kind, _, arg = fault.partition(":")
    # no bytecode (a .pyc cut short by a file-size limit would break every later import), caches elsewhere
    caches = tempfile.mkdtemp(prefix="muso-battery-caches-")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(ws)]), "PYTHONDONTWRITEBYTECODE": "1",
           "MPLCONFIGDIR": caches, "XDG_CACHE_HOME": caches}

    def preexec():
        if kind == "fsize":
            resource.setrlimit(resource.RLIMIT_FSIZE, (int(arg), resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        elif os.geteuid() == 0:
            _drop_dac_override()

    locked = []
    if kind == "readonly":
        target = Path(arg)
        target.mkdir(parents=True, exist_ok=True)
        for p in [target, *target.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o555)
                locked.append(p)
    try:
        proc = subprocess.run([sys.executable, "-m", "muso_cli", *argv], cwd=ws, env=env, capture_output=True,
                              text=True, timeout=300, preexec_fn=preexec)
        return proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        return None, f"timed out: {e}"
    finally:
        for p in locked:
            p.chmod(0o755)
        shutil.rmtree(caches, ignore_errors=True)


def _in_process(argv: list[str], ws: Path) -> tuple[int | None, str]:
    from muso_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    code: int | None
    cwd = os.getcwd()
    os.chdir(ws)
    try:  # warnings recorded here, shown as a shell shows them (under pytest they would go to its own record)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            code = main(argv)
            err.write("".join(f"{w.category.__name__}: {w.message}\n" for w in caught
                              if issubclass(w.category, (UserWarning, FutureWarning))))
    except SystemExit as e:  # Hydra's own exit after it printed the error
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001: a traceback is what the battery counts
        code = None
        err.write(traceback.format_exc())
    finally:
        os.chdir(cwd)
    return code, out.getvalue() + err.getvalue()


def run_case(case: Case, ws: Path) -> Outcome:
    """Build the case's fixture in ``ws``, run its command there (in this process, or a subprocess for a fault)."""
    state = os.environ.get("MUSO_STATE_DIR")
    os.environ["MUSO_STATE_DIR"] = str(ws / "state")  # this workspace's own list of own studies
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(ws))  # the models of your own the case writes there
    try:
        study = build_fixture(case.fixture, ws)
        argv = argv_of(case, ws, study)
        before = _snapshot(ws)
        started = time.time()
        if case.fault:
            fault = case.fault.replace("{study}", str(study)).replace("{ws}", str(ws))
            code, output = _in_subprocess(argv, ws, fault)
        else:
            code, output = _in_process(argv, ws)
        seconds = time.time() - started
    finally:
        sys.dont_write_bytecode = dont_write
        sys.path.remove(str(ws))
        if state is None:
            os.environ.pop("MUSO_STATE_DIR", None)
        else:
            os.environ["MUSO_STATE_DIR"] = state
        for name in ("battery_nets", "evil_target"):  # each case imports its own folder's copy
            sys.modules.pop(name, None)
    after = _snapshot(ws)
    written = sorted(k for k, v in after.items() if before.get(k) != v and k != "MARKER")
    return Outcome(code, output, "Traceback (most recent call last)" in output or code is None, written,
                   (ws / "MARKER").exists(), seconds)


def names_key(case: Case, outcome: Outcome, ws: Path, study: Path | None = None) -> bool:
    """Whether the error names the case's key: `error: <key>:` or a line of several problems starting with it."""
    key = case.key.replace("{study}", str(study or ws / "studies" / "s")).replace("{ws}", str(ws))
    return any(f"error: {key}:" in line or line.startswith(f"{key}:") for line in outcome.output.splitlines())


def judge(case: Case, outcome: Outcome, ws: Path) -> tuple[str, str]:
    """(category, why) of a case's outcome."""
    if outcome.traceback:
        return TRACEBACK, "a traceback"
    escaped = [w for w in outcome.written if w.startswith("elsewhere/")]
    if escaped:  # through a symlinked trial folder
        return (ACCEPTED if case.key else WRONG), f"wrote outside the study: {', '.join(escaped[:3])}"
    words_ok = (not case.words or case.words in outcome.output) and not (case.absent and case.absent in outcome.output)
    if case.key is None:
        problems = []
        if outcome.code != case.expect:
            problems.append(f"exit {outcome.code}, expected {case.expect}")
        if not words_ok:
            problems.append(f"output lacks {case.words!r}" if case.words else f"output has {case.absent!r}")
        if outcome.marker != case.marker:
            problems.append("the study's code ran" if outcome.marker else "the study's code did not run")
        if problems:
            return (ACCEPTED if outcome.marker and not case.marker else WRONG), "; ".join(problems)
        return GOOD, ""
    if outcome.code != 2:
        return ACCEPTED, f"exit {outcome.code}" + ("; the study's code ran" if outcome.marker else "")
    problems = []
    if not names_key(case, outcome, ws):
        problems.append(f"does not name {case.key}")
    if "Fix:" not in outcome.output:
        problems.append("no Fix:")
    if outcome.written and not case.may_write:
        problems.append(f"wrote {', '.join(outcome.written[:3])}")
    if outcome.marker:
        problems.append("the study's code ran")
    if not words_ok:
        problems.append(f"output lacks {case.words!r}")
    return (MESSY, "; ".join(problems)) if problems else (CLEAN, "")


def error_key(output: str) -> str:
    line = next((line for line in output.splitlines() if ": error: " in line), "")
    return line.split(": error: ", 1)[1].split(":", 1)[0][:40] if line else "-"


def main_(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="leave out the fault cases (subprocesses)")
    ap.add_argument("--only", help="run only the cases of this group")
    ap.add_argument("--show", action="store_true", help="print the output of every case that is not as expected")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if (not args.fast or not c.slow) and (not args.only or c.group == args.only)]
    totals: dict[str, int] = {}
    started = time.time()
    print("| case | exit | error names | traceback | written | verdict |\n|---|---|---|---|---|---|")
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="muso-battery-") as tmp:
            ws = Path(tmp)
            try:
                outcome = run_case(case, ws)
                category, why = judge(case, outcome, ws)
            except Exception as e:  # noqa: BLE001: a fixture that cannot be built is the battery's own bug
                outcome, category, why = Outcome(None, traceback.format_exc(), True), TRACEBACK, f"fixture: {e}"
            totals[category] = totals.get(category, 0) + 1
            shown = case.id.replace("|", "\\|").replace("\n", "\\n")[:110]
            print(f"| `{shown}` | {outcome.code} | `{error_key(outcome.output)}` | "
                  f"{'yes' if outcome.traceback else 'no'} | {'yes' if outcome.written else 'no'} | "
                  f"{category}{': ' + why if why else ''} |", flush=True)
            if args.show and category not in (CLEAN, GOOD):
                print("    " + outcome.output[-2500:].replace("\n", "\n    "))
    bad_cases = sum(c.key is not None for c in cases)
    print(f"\n{len(cases)} cases ({bad_cases} bad inputs, {len(cases) - bad_cases} that should go through) in "
          f"{time.time() - started:.0f} s: " + ", ".join(f"{totals.get(k, 0)} {k}" for k in
                                                        (CLEAN, TRACEBACK, ACCEPTED, MESSY, GOOD, WRONG)))
    return 0 if set(totals) <= {CLEAN, GOOD} else 1


if __name__ == "__main__":
    sys.exit(main_())
