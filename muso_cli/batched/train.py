"""The training loop of a batch: N trials (members) trained as one stacked model, each into its own folder.

It is muso_cli.train's loop with a member dimension: each member is built and initialised exactly as its single
trial (``torch.manual_seed(seed)``, ``build_model_and_plan``: the same plan.init_ from its seed), draws its own
minibatches (a BatchSampler of its seed), gets its own param groups from its plan, and writes the same files
through its own track.Recorder: config.yaml, a metrics.jsonl line per evaluation (the same row), result.json
(the same summary, plus ``batch``: the number of members it was trained with). The divergence rule is the
single trial's (train.batch_divergence, train.eval_divergence): a member that meets it gets its diverged
result at that step and leaves the stack before the update, so nothing of it reaches the others.

A stop request (muso_cli.stop) checkpoints every member still training into its own folder (weights_only
loadable: tensors, numbers, lists, dicts) and raises Interrupted; running the batch again resumes every member
from its checkpoint. Members whose checkpoints are at different steps (a batch regrouped after a partial run)
train as separate stacks, one after the other. A member whose folder holds a single trial's checkpoint is run
alone by train.run, which resumes it. An exception fails every member still training (each gets a failed
result), as train.run fails its one run.
"""
from __future__ import annotations

import io
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .. import data as data_mod
from .. import track, train
from ..config import to_container
from ..losses import LOSSES
from ..setup import build_model_and_plan, resolve_device
from ..stop import STOP, Interrupted
from .optim import Optimizer
from .stack import Stack

CHECKPOINT_KEYS = frozenset(("batched", "step", "initial_loss", "seconds", "model", "optimizer", "sampler",
                             "metrics"))


@dataclass(eq=False)
class Member:
    """One trial of a batch: its config, its folder and train.run's keyword arguments (W&B id, name, tags)."""

    cfg: DictConfig
    out_dir: Path
    run_kwargs: dict = field(default_factory=dict)
    recorder: track.Recorder | None = None
    checkpoint: dict | None = None
    sampler: train.BatchSampler | None = None
    initial_loss: float | None = None
    seconds: float = 0.0      # training seconds of earlier processes (resumed)
    first_lr: float = 0.0     # the lr of its first param group (metrics rows), before the schedule
    result: dict | None = None


def run(members: list[Member]) -> list[dict]:
    """Train ``members`` (configs equal but for optimizer.lr, optimizer.damping and seed) as stacks; return
    their results in order (also written to each result.json). Raises Interrupted when a stop was requested
    (every member still training saved a checkpoint first)."""
    started = time.time()
    device = resolve_device(members[0].cfg.device)
    threads = members[0].cfg.train.threads or os.environ.get("SLURM_CPUS_PER_TASK")
    if threads:
        torch.set_num_threads(int(threads))
    info = train.run_info(device)
    stacks: dict[int, list[Member]] = {}
    for m in members:
        m.out_dir.mkdir(parents=True, exist_ok=True)
        if (m.out_dir / track.CHECKPOINT).exists() and not _is_batched_checkpoint(m.out_dir):
            m.result = train.run(m.cfg, m.out_dir, quiet=True, **m.run_kwargs)  # a single trial's: it resumes it
            continue
        m.checkpoint = train.load_checkpoint(m.out_dir, CHECKPOINT_KEYS)
        stacks.setdefault(int(m.checkpoint["step"]) if m.checkpoint else 0, []).append(m)
    for group in stacks.values():
        for m in group:
            m.recorder = track.Recorder(m.out_dir, to_container(m.cfg), wandb_cfg=OmegaConf.to_container(m.cfg.logger),
                                        metrics=m.checkpoint["metrics"] if m.checkpoint else None, **m.run_kwargs)
        try:
            _train(group, device, info, started)
        except Interrupted:
            for m in group:
                m.recorder.close()
            raise
        except Exception as e:  # a failure is a result for every member still training
            failed = {"status": track.FAILED, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            for m in group:
                if m.result is None:
                    _finish(m, failed, info, started, len(group))
    return [m.result for m in members]


def _is_batched_checkpoint(out_dir: Path) -> bool:
    try:
        return bool(torch.load(out_dir / track.CHECKPOINT, map_location="cpu", weights_only=True).get("batched"))
    except Exception:  # unreadable: the batch's own loader warns and starts afresh
        return True


def _finish(m: Member, result: dict, info: dict, started: float, size: int) -> None:
    elapsed = time.time() - started + m.seconds
    m.result = m.recorder.finish({**info, **result, "batch": size, "wall_seconds": round(elapsed, 3),
                                  "finished_at": train.now()})
    (m.out_dir / track.CHECKPOINT).unlink(missing_ok=True)


def _train(members: list[Member], device: torch.device, info: dict, started: float) -> None:
    cfg, size = members[0].cfg, len(members)
    tcfg = cfg.train
    data = data_mod.load(cfg.data, device)
    steps = train.total_steps(cfg, len(data.y_train))
    factor = train.lr_lambda(tcfg, steps)
    loss_fn = LOSSES[tcfg.loss].value
    models, groups = [], []
    for m in members:
        torch.manual_seed(int(m.cfg.seed))
        model, plan = build_model_and_plan(m.cfg, data.input_shape, data.num_classes, device=device)
        models.append(model)
        groups.append(plan.param_groups(model, m.cfg.optimizer.lr, weight_decay=m.cfg.optimizer.weight_decay))
        m.first_lr = groups[-1][0]["lr"]
        m.sampler = train.BatchSampler(len(data.y_train), tcfg.batch_size, int(m.cfg.seed))
    stack = Stack(models)
    del models
    opt_cfg = OmegaConf.to_container(cfg.optimizer)
    damping = [float(m.cfg.optimizer.damping) for m in members] if "damping" in opt_cfg else None
    optimizer = Optimizer(opt_cfg, groups, damping, stack.params)
    step = 0
    if members[0].checkpoint:
        step = _restore(members, stack, optimizer)
    n_eval = min(tcfg.eval_train_samples, len(data.y_train))
    x_eval, y_eval = data.x_train[:n_eval], data.y_train[:n_eval]
    t0 = time.time()
    alive = list(members)

    def evaluate() -> list[dict]:
        train_rows = stack.evaluate(x_eval, y_eval, loss_fn, tcfg.eval_batch_size)
        test_rows = stack.evaluate(data.x_test, data.y_test, loss_fn, tcfg.eval_batch_size)
        return [train.metrics_row(step, tr, te, m.first_lr * factor(step), time.time() - t0 + m.seconds, tcfg, data)
                for m, tr, te in zip(alive, train_rows, test_rows)]

    def leave(gone: list[Member]) -> None:
        nonlocal alive
        keep = [k for k, m in enumerate(alive) if all(m is not g for g in gone)]
        index = torch.tensor(keep, dtype=torch.long, device=device)
        stack.keep(index)
        optimizer.keep(index)
        alive = [alive[k] for k in keep]

    def diverge(pairs: list[tuple[Member, str]]) -> None:
        for m, reason in pairs:
            _finish(m, train.summarise(track.DIVERGED, reason, m.recorder.metrics, step, steps, data.source),
                    info, started, size)

    def save_checkpoints() -> None:
        for k, m in enumerate(alive):
            state = {"batched": 1, "step": step, "initial_loss": m.initial_loss,
                     "seconds": time.time() - t0 + m.seconds, "model": stack.member(k),
                     "optimizer": optimizer.member_state(k), "sampler": m.sampler.state_dict(),
                     "metrics": m.recorder.metrics}
            buffer = io.BytesIO()
            torch.save(state, buffer)
            track.write_atomic(m.out_dir / track.CHECKPOINT, buffer.getvalue())

    if members[0].initial_loss is None:
        for m, row in zip(alive, evaluate()):
            m.recorder.log(row)
            m.initial_loss = row["train_loss"]
    while step < steps and alive:
        if STOP.signum is not None:
            save_checkpoints()
            raise Interrupted(f"stopped at step {step} by signal {STOP.signum}")
        idx = torch.stack([m.sampler.next() for m in alive]).to(device)
        x, y = data.x_train[idx], data.y_train[idx]
        capture = optimizer.needs_capture(step)
        loss, logits, inputs, probes = stack.losses(x, y, loss_fn, capture)
        grads, out_grads = stack.gradients(loss, probes)
        captured = {name: (_rows(inputs[name], stack.layers[name].bias is not None), out_grads[name].flatten(1, -2))
                    for name in inputs}
        update, examples = step, logits.shape[1:-1].numel()
        step += 1
        gone = []
        for m, batch_loss in zip(alive, loss.tolist()):
            reason = train.batch_divergence(batch_loss, m.initial_loss, tcfg.diverge_factor, step)
            if reason:
                m.recorder.log({"step": step, "batch_loss": batch_loss, "seconds": round(time.time() - t0 + m.seconds, 3)})
                gone.append((m, reason))
        if gone:
            out = {id(m) for m, _ in gone}
            kept = torch.tensor([k for k, m in enumerate(alive) if id(m) not in out], dtype=torch.long, device=device)
            diverge(gone)
            leave([m for m, _ in gone])
            if not alive:
                break
            grads = {k: v[kept] for k, v in grads.items()}
            captured = {k: (rows[kept], deltas[kept]) for k, (rows, deltas) in captured.items()}
        optimizer.step(stack.params, grads, update, factor(update), captured, examples)
        if step % tcfg.eval_every == 0 or step == steps:
            rows = evaluate()
            gone = []
            for m, row in zip(alive, rows):
                m.recorder.log(row)
                reason = train.eval_divergence(row["train_loss"], m.initial_loss, tcfg.diverge_factor, step)
                if reason:
                    gone.append((m, reason))
            if gone:
                diverge(gone)
                leave([m for m, _ in gone])
        if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step < steps:
            save_checkpoints()
    for m in alive:
        _finish(m, train.summarise(track.OK, None, m.recorder.metrics, step, steps, data.source), info, started, size)


def _rows(x: torch.Tensor, bias: bool) -> torch.Tensor:
    """A Linear layer's captured inputs [N, B, …, fan_in] as rows X [N, R, d_in], a trailing 1 with a bias
    (muso_cli.optim.common.Layer.input_rows, per member)."""
    rows = x.flatten(1, -2)
    if bias:
        rows = torch.cat([rows, rows.new_ones(*rows.shape[:-1], 1)], -1)
    return rows


def _restore(members: list[Member], stack: Stack, optimizer: Optimizer) -> int:
    """Load every member's checkpoint (all at the same step) into the stack; return that step."""
    for k, m in enumerate(members):
        c = m.checkpoint
        stack.load_member(k, c["model"])
        m.sampler.load_state_dict(c["sampler"])
        m.initial_loss, m.seconds = c["initial_loss"], float(c["seconds"])
    optimizer.load_member_states([m.checkpoint["optimizer"] for m in members])
    return int(members[0].checkpoint["step"])


__all__ = ["CHECKPOINT_KEYS", "Member", "run"]
