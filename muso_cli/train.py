"""One training run: data → model + parameterization → optimizer → loop with evaluation and divergence checks.

The loop reads top to bottom: draw a batch by index, forward, loss, backward, step; every ``eval_every`` steps
measure train/test loss and accuracy and append a line to metrics.jsonl. A non-finite loss, one far above its
starting value, or a step the optimizer refused (K-FAC / Shampoo with non-finite curvature, see
:attr:`muso_cli.optim.base.LayerwiseOptimizer.diverged`) ends the run with status ``diverged`` and the reason
in result.json (a result, not a crash). An exception ends it with status ``failed`` (written, then returned: it
never takes other trials down). A stop request (SIGTERM, SIGUSR1, Ctrl-C) saves a checkpoint and raises
:class:`Interrupted`; running the same config in the same folder resumes.
"""
from __future__ import annotations

import io
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm import tqdm

from . import optim, track
from . import data as data_mod
from .config import to_container
from .logs import LOG
from .losses import LOSSES
from .setup import build_model_and_plan, resolve_device
from .stop import STOP, Interrupted
from .trainers.outcome import batch_divergence, eval_divergence, now, run_info, summarise


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss_fn, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on x [N, ...], in eval mode, in chunks of ``batch_size``.

    y: [N] classes, [N, T] classes per position (a sequence: the loss is then the mean per token), or float
    targets [N, C] (accuracy against their argmax). Accuracy: the fraction of examples (positions) whose
    output's argmax is the target.
    """
    was_training = model.training
    model.eval()
    total_loss, correct, positions = 0.0, 0, 0
    for i in range(0, len(y), batch_size):
        logits, target = model(x[i:i + batch_size]), y[i:i + batch_size]
        total_loss += loss_fn(logits, target).item() * len(logits)
        labels = target.argmax(-1) if target.is_floating_point() else target
        correct += (logits.argmax(-1) == labels).sum().item()
        positions += labels.numel()
    model.train(was_training)
    return total_loss / len(y), correct / positions


class BatchSampler:
    """Indices of minibatches: a fresh permutation of [0, n) each epoch (drop_last), seeded."""

    def __init__(self, n: int, batch_size: int, seed: int):
        self.n, self.batch_size = n, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(n, generator=self.generator), 0

    def next(self) -> Tensor:
        if self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.generator), 0
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.perm, self.pos = state["perm"], state["pos"]


def metrics_row(step: int, train: tuple[float, float], test: tuple[float, float], lr: float, seconds: float, tcfg,
                data: data_mod.Dataset) -> dict:
    """One line of metrics.jsonl: the evaluation at ``step`` of (loss, accuracy) on the training subset and the
    test set, the first param group's lr in effect, and the training seconds so far."""
    (train_loss, train_acc), (test_loss, test_acc) = train, test
    row = {"step": step, "epoch": round(step * tcfg.batch_size / len(data.y_train), 4),
           "train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
           "lr": lr, "seconds": round(seconds, 3)}
    if data.bytes_per_token and tcfg.loss == "xent":  # text: the loss per token (nats) in bits per byte too
        row.update(train_bpb=train_loss / (math.log(2) * data.bytes_per_token),
                   test_bpb=test_loss / (math.log(2) * data.bytes_per_token))
    return row


def lr_lambda(tcfg, total_steps: int):
    """Multiplier of every group's lr at a step: linear warmup, then constant / cosine / linear decay to 0."""
    warmup, kind = tcfg.warmup_steps, tcfg.lr_schedule

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "linear":
            return 1.0 - progress
        return 1.0

    return factor


def total_steps(cfg: DictConfig, n_train: int) -> int:
    if cfg.train.steps is not None:
        return int(cfg.train.steps)
    return max(1, int(cfg.train.epochs * (n_train // cfg.train.batch_size)))


def run(cfg: DictConfig, out_dir: Path, *, quiet: bool = False, run_id: str | None = None, name: str | None = None,
        group: str | None = None, job_type: str | None = None, tags: list[str] | None = None) -> dict:
    """Train the run ``cfg`` into ``out_dir``; return the result dict (also written to result.json).

    Never raises for a failing run (status failed, with the error); raises :class:`Interrupted` when a stop
    was requested (a checkpoint is saved first).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    device = resolve_device(cfg.device)
    threads = cfg.train.threads or os.environ.get("SLURM_CPUS_PER_TASK")  # a Slurm task: the CPUs it was given
    if threads:
        torch.set_num_threads(int(threads))
    checkpoint = load_checkpoint(out_dir)
    recorder = track.Recorder(out_dir, to_container(cfg), wandb_cfg=OmegaConf.to_container(cfg.logger),
                              run_id=run_id, name=name, group=group, job_type=job_type, tags=tags,
                              metrics=checkpoint["metrics"] if checkpoint else None)
    base_result = run_info(device)
    before = 0.0  # training seconds of earlier processes (a resumed run)
    try:
        result, before = _train(cfg, out_dir, device, recorder, checkpoint, quiet)
    except Interrupted:
        recorder.close()
        raise
    except Exception as e:  # a failure is a result: written, returned, never lost
        result = {"status": track.FAILED, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    elapsed = time.time() - started + before
    result = {**base_result, **result, "wall_seconds": round(elapsed, 3), "finished_at": now()}
    result = recorder.finish(result)
    (out_dir / track.CHECKPOINT).unlink(missing_ok=True)
    return result


@dataclass
class _State:
    """Everything a checkpoint holds besides the metrics: the model, its optimizer and schedule, the data order."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: "BatchSampler"
    augment_rng: torch.Generator
    step: int = 0
    initial_loss: float | None = None
    seconds: float = 0.0   # training time before this process (a resumed run)

    def checkpoint(self, metrics: list[dict]) -> dict:
        """The checkpoint: tensors, numbers, strings, lists and dicts only (it loads with weights_only=True)."""
        return {"step": self.step, "initial_loss": self.initial_loss, "seconds": self.seconds,
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                "rng": torch.get_rng_state(), "augment_rng": self.augment_rng.get_state(), "metrics": metrics}

    def restore(self, checkpoint: dict) -> None:
        """Load a checkpoint (raises KeyError, RuntimeError, ValueError… when it does not fit this run)."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.sampler.load_state_dict(checkpoint["sampler"])
        torch.set_rng_state(checkpoint["rng"])
        self.augment_rng.set_state(checkpoint["augment_rng"])
        self.step, self.initial_loss = int(checkpoint["step"]), checkpoint["initial_loss"]
        self.seconds = float(checkpoint["seconds"])


def _fresh_state(cfg: DictConfig, data: data_mod.Dataset, device: torch.device, steps: int) -> _State:
    torch.manual_seed(int(cfg.seed))
    model, plan = build_model_and_plan(cfg, data.input_shape, data.num_classes, device=device)
    optimizer = optim.build(cfg.optimizer, model, plan, cfg.train.loss)
    return _State(model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.train, steps)),
                  BatchSampler(len(data.y_train), cfg.train.batch_size, int(cfg.seed)),
                  torch.Generator(device=device).manual_seed(int(cfg.seed) + 1))


def _train(cfg: DictConfig, out_dir: Path, device: torch.device, recorder: track.Recorder,
           checkpoint: dict | None, quiet: bool) -> tuple[dict, float]:
    """(the result, the training seconds spent before this process: > 0 when resumed from a checkpoint)."""
    tcfg = cfg.train
    data = data_mod.load(cfg.data, device)
    steps = total_steps(cfg, len(data.y_train))
    state = _fresh_state(cfg, data, device, steps)
    if checkpoint:
        try:
            state.restore(checkpoint)
        except Exception as e:  # a checkpoint from another version or a damaged one: start again, never abort
            warn_fresh_start(out_dir, f"the checkpoint does not fit this run ({type(e).__name__}: {e})")
            recorder.metrics.clear()
            state = _fresh_state(cfg, data, device, steps)
    model, optimizer, sampler, augment_rng = state.model, state.optimizer, state.sampler, state.augment_rng
    loss_fn = LOSSES[tcfg.loss].value
    augment = data_mod.augmenter(cfg.data)
    n_eval = min(tcfg.eval_train_samples, len(data.y_train))
    x_eval, y_eval = data.x_train[:n_eval], data.y_train[:n_eval]
    step, initial_loss = state.step, state.initial_loss
    t0 = time.time() - state.seconds

    def eval_row() -> dict:
        train = evaluate(model, x_eval, y_eval, loss_fn, tcfg.eval_batch_size)
        test = evaluate(model, data.x_test, data.y_test, loss_fn, tcfg.eval_batch_size)
        return metrics_row(step, train, test, optimizer.param_groups[0]["lr"], time.time() - t0, tcfg, data)

    def save_checkpoint() -> None:
        state.step, state.initial_loss, state.seconds = step, initial_loss, time.time() - t0
        buffer = io.BytesIO()
        torch.save(state.checkpoint(recorder.metrics), buffer)
        track.write_atomic(out_dir / track.CHECKPOINT, buffer.getvalue())

    status, reason = track.OK, None
    console = _Console(quiet, steps, step)
    if initial_loss is None:  # not when resuming, even from a checkpoint taken at step 0 (its row is recorded)
        row = eval_row()
        recorder.log(row)
        initial_loss = row["train_loss"]
        console.evaluation(row)
    model.train()
    try:
        while step < steps:
            if STOP.signum is not None:
                save_checkpoint()
                raise Interrupted(f"stopped at step {step} by signal {STOP.signum}")
            idx = sampler.next().to(device)
            x, y = data.x_train[idx], data.y_train[idx]
            if augment is not None:
                x = augment(x, augment_rng)
            loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state.scheduler.step()
            step += 1
            console.step()
            batch_loss = loss.item()
            # K-FAC / Shampoo refuse a step with non-finite curvature and say why
            reason = getattr(optimizer, "diverged", None) or batch_divergence(batch_loss, initial_loss,
                                                                              tcfg.diverge_factor, step)
            if reason:
                status = track.DIVERGED
                # the loss of the batch that blew up, not a train_loss measured on the evaluation subset
                recorder.log({"step": step, "batch_loss": batch_loss, "seconds": round(time.time() - t0, 3)})
                break
            if step % tcfg.eval_every == 0 or step == steps:
                row = eval_row()
                recorder.log(row)
                console.evaluation(row)
                reason = eval_divergence(row["train_loss"], initial_loss, tcfg.diverge_factor, step)
                if reason:
                    status = track.DIVERGED
                    break
            if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0 and step < steps:
                save_checkpoint()
    finally:
        console.close()
    return summarise(status, reason, recorder.metrics, step, steps, data.source), state.seconds


class _Console:
    """A run's progress when not under a launcher: a step counter with ETA (tqdm) and a log line per evaluation
    (through the muso logger, so Hydra's run.log has them too). Quiet: nothing."""

    def __init__(self, quiet: bool, steps: int, start: int):
        self.quiet, self.steps = quiet, steps
        self.bar = None if quiet else tqdm(total=steps, initial=start, unit="step", file=sys.stderr, leave=False,
                                           dynamic_ncols=True, mininterval=1.0, disable=None)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def evaluation(self, row: dict) -> None:
        if self.quiet:
            return
        line = (f"step {row['step']:>6}/{self.steps}  train_loss {row['train_loss']:.4f}  test_loss "
                f"{row['test_loss']:.4f}  test_acc {row['test_acc']:.4f}  ({row['seconds']:.1f}s)")
        with tqdm.external_write_mode(file=sys.stderr):  # the bar steps aside for the line
            LOG.info(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def load_checkpoint(out_dir: Path, keys: frozenset[str] | None = None) -> dict | None:
    """The run's checkpoint, or None (train from scratch) when there is none or it cannot be trusted.

    Loaded with ``weights_only=True``: a study folder travels between people and machines, and a pickle could
    run code; a checkpoint holds only tensors, numbers, strings, lists and dicts. One that does not load, is not
    a dict or lacks one of ``keys`` (default: a single run's) is ignored with a one-line warning, never fatal.
    """
    path = out_dir / track.CHECKPOINT
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first_line = str(e).splitlines()[0][:200]
        warn_fresh_start(out_dir, f"the checkpoint cannot be read safely ({type(e).__name__}: {first_line})")
        return None
    missing = sorted((keys or CHECKPOINT_KEYS) - set(checkpoint)) if isinstance(checkpoint, dict) else ["(not a dict)"]
    if missing:
        warn_fresh_start(out_dir, f"the checkpoint lacks {', '.join(missing)}")
        return None
    return checkpoint


CHECKPOINT_KEYS = frozenset(("step", "initial_loss", "seconds", "model", "optimizer", "scheduler", "sampler", "rng",
                             "augment_rng", "metrics"))


def warn_fresh_start(out_dir: Path, problem: str) -> None:
    print(f"muso: {out_dir}: {problem}; training from scratch", file=sys.stderr, flush=True)
