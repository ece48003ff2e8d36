"""``trainer=command``: your own training script, run by muso for every trial (nanoGPT's train.py, a Hugging Face
script, a torchrun job).

The contract:

- ``trainer.command`` is your command line, a string run by ``/bin/sh -c`` in the trial's folder, with Hydra
  interpolation of the trial's values (``python train.py --lr ${optimizer.lr} --width ${model.width}``: resolved
  per trial, after the study set the trial's lr, width, damping and seed).
- The environment: ``MUSO_TRIAL_DIR`` (the trial's folder, also the working directory), ``MUSO_TRIAL_CONFIG``
  (the trial's resolved config, a YAML file: read it with :func:`muso_cli.api.trial_config`), ``MUSO_TRIAL_ID``,
  ``MUSO_RESUME`` ("1" when an earlier attempt of this trial left a ``metrics.jsonl`` in the folder,
  stopped or not: resume from your own checkpoint there if you keep one, and keep appending metrics), and ``trainer.env``.
- The command reports by appending JSON lines to ``metrics.jsonl`` in the trial folder, the format muso's own
  loop writes: ``{"step": N, "train_loss": x, "test_loss": ..., "test_acc": ...}`` (by hand, or with
  :class:`muso_cli.api.Metrics`).
- muso writes ``result.json``: *diverged* when a reported train_loss is not finite or exceeds
  ``train.diverge_factor`` × the first (muso's own rule), whatever the exit status; else *failed* on a non-zero
  exit (the reason and the tail of ``stderr.log``, which keeps the whole stderr), no metrics, a malformed line, or
  no value of the study's selection metric; else *ok*, its final metrics those of the last line. stdout goes to
  ``stdout.log``.
- Stops: a stop request (Ctrl-C, SIGTERM, Slurm's warning before its time limit: muso_cli.stop) sends SIGTERM to
  the command's process group, waits ``trainer.stop_grace_s`` for it to checkpoint and exit, then kills it; the
  trial is interrupted, not failed, and the next launch resumes it (``MUSO_RESUME=1``). ``trainer.timeout_min``
  ends a trial that runs longer as failed.
- W&B mirrors ``metrics.jsonl`` when the trial ends, as it mirrors muso's own loop.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from .. import track
from ..errors import UsageError, check_positive, is_number
from ..stop import STOP, Interrupted
from .outcome import now, summarise

STDOUT, STDERR = "stdout.log", "stderr.log"
POLL_S = 0.2
TAIL = 2000  # characters of stderr kept in the result's error


def check(cfg: DictConfig) -> list[UsageError | None]:
    """The ``trainer.*`` keys: a command line that resolves against the config, a timeout, a grace period, env."""
    t = cfg.trainer
    problems: list[UsageError | None] = [
        check_positive("trainer.timeout_min", t.get("timeout_min"), optional=True),
        check_positive("trainer.stop_grace_s", t.get("stop_grace_s", 60)),
    ]
    env = t.get("env") or {}
    if not OmegaConf.is_dict(env) and not isinstance(env, dict):
        problems.append(UsageError("trainer.env", f"must be a mapping of names to values, got {env!r}.",
                                   "e.g. trainer.env={OMP_NUM_THREADS:1}."))
    try:
        line = command_line(cfg)
    except UsageError as e:
        return [*problems, e]
    if not line.strip():
        problems.append(UsageError("trainer.command", "is empty: trainer=command runs your training script.",
                                   "e.g. trainer.command='python train.py --lr ${optimizer.lr}'."))
    return problems


def command_line(cfg: DictConfig) -> str:
    """``trainer.command`` resolved against the config (its interpolations: the trial's values)."""
    try:
        raw = OmegaConf.to_container(cfg.trainer, resolve=False).get("command")
        line = cfg.trainer.command
    except Exception as e:  # an interpolation that names no key, or a missing value (???)
        first = str(e).splitlines()[0]
        raise UsageError("trainer.command", f"cannot be resolved: {first}.",
                         "write trainer.command='python train.py --lr ${optimizer.lr}' (interpolations name config "
                         "keys; quote it in the shell).") from None
    if not isinstance(raw, str) or not isinstance(line, str):
        raise UsageError("trainer.command", f"must be a command line (a string), got {raw!r}.",
                         "e.g. trainer.command='python train.py'.")
    return line


def read_metrics(path: Path) -> tuple[list[dict], str | None]:
    """(the rows of a metrics.jsonl written by a command, why it cannot be trusted or None). Every line must be a
    JSON object with an integer ``step``; values are numbers, or null / NaN / ±Infinity for a non-finite one."""
    if not path.exists():
        return [], None
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return rows, f"metrics.jsonl line {n} is not JSON: {line[:80]!r}"
        if not isinstance(row, dict) or not isinstance(row.get("step"), int) or isinstance(row.get("step"), bool):
            return rows, f"metrics.jsonl line {n} is not an object with an integer step: {line[:80]!r}"
        rows.append(row)
    return rows, None


def judge_metrics(rows: list[dict], factor: float) -> str | None:
    """Why the reported metrics mean the run diverged (a non-finite train_loss, or one above ``factor`` × the
    first; muso's own rule), or None."""
    losses = [(r["step"], r.get("train_loss")) for r in rows if "train_loss" in r]
    if not losses:
        return None
    first = losses[0][1]
    for step, loss in losses:
        if loss is None or not is_number(loss):
            return f"train loss {loss} at step {step}"
        if is_number(first) and loss > factor * first:
            return f"train loss {loss:.4g} at step {step} (initial {first:.4g})"
    return None


def _exited(process: subprocess.Popen, seconds: float) -> bool:
    """Whether the command has exited, waiting up to ``seconds`` for it (returns as soon as it exits: a short
    trial is not held to the polling interval)."""
    try:
        process.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


def _stop(process: subprocess.Popen, grace: float) -> None:
    """SIGTERM the command's process group, then SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-TAIL:].strip()


def run(cfg: DictConfig, folder: Path, identity, *, quiet: bool = True, argv: list[str] | None = None) -> dict:
    """Run the trial's command in ``folder`` (see the module docstring); return its result. ``argv``: run this
    argument list instead of ``trainer.command`` through the shell (trainer=python runs its entry point so)."""
    from ..config import to_container

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = to_container(cfg)
    line = command_line(cfg) if argv is None else " ".join(argv)
    resumed = (folder / track.METRICS).exists()
    recorder = track.Recorder(folder, config, wandb_cfg=OmegaConf.to_container(cfg.logger), run_id=identity.run_id,
                              name=identity.name, group=identity.group, job_type=identity.job_type,
                              tags=list(identity.tags), owns_metrics=False)
    env = {**os.environ, **{str(k): str(v) for k, v in (cfg.trainer.get("env") or {}).items()},
           "MUSO_TRIAL_DIR": str(folder.resolve()), "MUSO_TRIAL_CONFIG": str((folder / track.CONFIG).resolve()),
           "MUSO_TRIAL_ID": str(identity.run_id or ""), "PYTHONUNBUFFERED": "1"}
    env.pop("MUSO_RESUME", None)
    if resumed:
        env["MUSO_RESUME"] = "1"
    timeout = cfg.trainer.get("timeout_min")
    grace = float(cfg.trainer.get("stop_grace_s", 60))
    started = time.time()
    with open(folder / STDOUT, "ab") as out, open(folder / STDERR, "ab") as err:
        process = subprocess.Popen(argv or ["/bin/sh", "-c", line], cwd=folder, env=env, stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        while not _exited(process, POLL_S):
            if STOP.signum is not None:
                _stop(process, grace)
                recorder.close()
                raise Interrupted(f"stopped by signal {STOP.signum}; the command was asked to checkpoint")
            if timeout and time.time() - started > 60 * float(timeout):
                _stop(process, grace)
                timed_out = True
                break
    code = process.returncode
    rows, malformed = read_metrics(folder / track.METRICS)
    for row in rows:
        recorder.log(row)
    metric = (cfg.get("study") or {}).get("metric", "train_loss")
    diverged = judge_metrics(rows, float(cfg.train.diverge_factor))
    stderr = _tail(folder / STDERR)
    reason, status = None, track.OK
    if malformed:
        reason = malformed
    elif diverged:
        status = track.DIVERGED
    elif timed_out:
        reason = f"timed out after trainer.timeout_min={timeout} min"
    elif code != 0:
        reason = f"the command exited with status {code}" + (f"; stderr ends: {stderr[-500:]}" if stderr else "")
    elif not any("train_loss" in r for r in rows):
        reason = ("the command wrote no metrics: append JSON lines such as {\"step\": 100, \"train_loss\": 0.5} to "
                  "$MUSO_TRIAL_DIR/metrics.jsonl (muso_cli.api.Metrics does it)")
    elif not any(metric in r for r in rows):
        reason = f"the command reported no {metric} (study.metric): add it to the metrics lines"
    if reason is not None:
        result = {"status": track.FAILED, "error": reason, "exit_status": code, "stderr_tail": stderr,
                  "command": line}
    else:
        last_step = max((r["step"] for r in rows), default=0)
        result = {**summarise(status, diverged, rows, last_step, None, None), "exit_status": code, "command": line}
    result = {**result, "trainer": "command", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
              "wall_seconds": round(time.time() - started, 3), "finished_at": now()}
    return recorder.finish(result)
