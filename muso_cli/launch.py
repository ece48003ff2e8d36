"""Launching a study's trials: in this process (``local``), in a pool of worker processes on this node, one
per GPU slot (``pool``), or as Slurm array jobs through submitit (``slurm``).

Every launcher runs :func:`run_trial`: claim the trial, check its recorded config again, and train it through
the trainer seam (muso_cli.trainers). A finished trial is skipped, so a trial list can be launched again and
again (after an interruption, a crash, or from several Slurm array tasks) without rerunning finished work.
Progress (trials done / total, ETA) is printed here; the runs themselves stay quiet.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
import warnings
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from . import stop, track, trainers
from .errors import UsageError, check_one_of, check_positive, is_int
from .logs import LOG
from .parametrize import PARAMS
from .study import claims
from .study.store import Study
from .study.trials import Trial


def check(lcfg: DictConfig) -> list[UsageError | None]:
    """Problems with the ``launcher.*`` keys, found before a study is written."""
    if lcfg.name == "pool":
        return [check_positive("launcher.workers", lcfg.workers, integer=True, optional=True),
                check_positive("launcher.per_gpu", lcfg.per_gpu, integer=True),
                check_positive("launcher.threads", lcfg.threads, integer=True, optional=True)]
    if lcfg.name == "slurm":
        missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
        problems = [check_positive(f"launcher.{k}", lcfg[k], integer=True)
                    for k in ("cpus_per_task", "time_min", "array_parallelism", "trials_per_task")]
        problems += [check_positive("launcher.gpus_per_task", lcfg.gpus_per_task, integer=True, allow_zero=True),
                     check_positive("launcher.max_requeue", lcfg.max_requeue, integer=True, allow_zero=True),
                     check_positive("launcher.mem_gb", lcfg.mem_gb, optional=True)]
        if missing:
            problems.append(UsageError("launcher", f"launcher=slurm needs Slurm's {', '.join(missing)} on the PATH, "
                                       "which this machine does not have.",
                                       "run on a Slurm login node, or use launcher=local / launcher=pool here."))
        elif is_int(lcfg.gpus_per_task) and lcfg.gpus_per_task > 0:
            problems.append(_check_slurm_gpus(lcfg.partition))
        return problems
    return [check_one_of("launcher.name", lcfg.name, LAUNCHERS)]


def _check_slurm_gpus(partition: str | None) -> UsageError | None:
    """launcher.gpus_per_task > 0 on a cluster (or partition) whose nodes have no GPUs: refused up front, since
    Slurm would reject every array task ("Requested node configuration is not available")."""
    import subprocess

    cmd = ["sinfo", "-h", "-o", "%G"] + (["-p", str(partition)] if partition else [])
    try:
        gres = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None  # cannot tell: let Slurm decide
    if "gpu" in gres:
        return None
    where = f"partition {partition}" if partition else "this cluster"
    return UsageError("launcher.gpus_per_task", f"asks for GPUs, but the nodes of {where} have none (sinfo lists "
                      f"their generic resources as {' '.join(sorted(set(gres.split()))) or 'none'}).",
                      "set launcher.partition to a GPU partition (sinfo -o '%P %G' lists them), or "
                      "launcher.gpus_per_task=0 to run on CPUs.")


def run_trial(study: Study, trial: Trial, *, quiet: bool = True) -> dict:
    """Run ``trial`` into its folder unless it is finished or another live process runs it; return its result.

    The trial is claimed first (muso_cli.study.claims): a trial whose claim is live elsewhere is skipped, with a
    result of status running that is not written anywhere. Its recorded config (trials.jsonl, which anyone can
    edit) is validated again before it trains: one that is not valid gives a failed result naming the key. A
    trial folder that is a symbolic link or lies outside the study, or cannot be written, gives a failed result
    (returned, not written), and the launch goes on with the other trials.
    """
    folder = study.trial_dir(trial)
    problem = study.folder_problem(trial)
    if problem:
        return {"status": track.FAILED, "error": problem}
    result = study.result(trial)
    if result and result.get("status") in track.FINAL_STATUSES:
        return result
    try:
        claim = claims.take(folder)
    except OSError as e:
        return {"status": track.FAILED, "error": f"cannot write the trial folder {folder}: {e}"}
    if claim is None:
        return {"status": track.RUNNING, "holder": claims.holder(folder)}
    with claim:
        result = study.result(trial)  # it may have finished between the first look and the claim
        if result and result.get("status") in track.FINAL_STATUSES:
            return result
        cfg, identity = run_arguments(study, trial)
        try:
            invalid = check_trial_config(cfg)
            if invalid:
                return track.write_result(folder, {"status": track.FAILED, "error": invalid})
            return trainers.run(cfg, folder, identity, quiet=quiet)
        except OSError as e:  # the folder is not writable (a trainer writes everything else into the result)
            return {"status": track.FAILED, "error": f"cannot write the trial folder {folder}: {e}"}


def check_trial_config(cfg: DictConfig) -> str | None:
    """Why a trial's recorded config cannot run (the validation's message, naming the key), or None."""
    from .validate import validate

    try:
        with warnings.catch_warnings():  # the planner showed them once
            warnings.simplefilter("ignore")
            validate(cfg, check_data=False)
    except UsageError as e:
        return f"the trial's config in trials.jsonl is not valid: {e}"
    return None


def run_arguments(study: Study, trial: Trial) -> tuple[DictConfig, trainers.RunIdentity]:
    """(the trial's config, its identity where it is mirrored: W&B id, name, group, job type and tags)."""
    cfg = OmegaConf.create(trial.config)
    if cfg.logger.mode != "disabled" and not cfg.logger.dir:
        cfg.logger.dir = str(study.path)  # one W&B folder per study, <study>/wandb (`wandb sync` it at once)
    params = sorted({t.param for t in study.trials() if t.id == trial.id}, key=PARAMS.index)
    tags = [*(f"param:{p}" for p in params), f"optimizer:{cfg.optimizer.name}", f"width:{trial.width}"]
    return cfg, trainers.RunIdentity(run_id=trial.id, name=run_name(trial, params), group=study.name,
                                     job_type=trial.phase, tags=tags)


def run_name(trial: Trial, params: list[str]) -> str:
    """A W&B run name a person can read: somup-w512-lr0.0625-d0.1-s0 (sp+somup-… for a shared base-width run)."""
    damping = "" if trial.damping is None else f"-d{trial.damping:.4g}"
    return f"{'+'.join(params)}-w{trial.width}-lr{trial.lr:.4g}{damping}-s{trial.seed}"


class Progress:
    """Prints one line per finished trial: counts, the trial, its outcome and an ETA from the mean trial time."""

    def __init__(self, total: int, already_done: int):
        self.total, self.done, self.todo_start = total, already_done, total - already_done
        self.started = time.time()
        self.counts: Counter = Counter()
        self.statuses: dict[str, str] = {}  # trial id → status of the result this launch got for it

    def update(self, trial: Trial, result: dict) -> None:
        self.done += 1
        self.counts[result.get("status", track.FAILED)] += 1
        self.statuses[trial.id] = result.get("status", track.FAILED)
        finished_here = sum(self.counts.values())
        remaining = self.total - self.done
        eta = (time.time() - self.started) / finished_here * remaining
        final = result.get("final") or {}
        loss = final.get("train_loss")
        outcome = result.get("status", "?") + (f" train_loss {loss:.4f}" if isinstance(loss, float) else "")
        if result.get("status") == track.FAILED:
            outcome += f" ({result.get('error', '')[:80]})"
        LOG.info(f"[{self.done}/{self.total}] {trial.label()}: {outcome}  ETA {_duration(eta)}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def pending(study: Study, trials: list[Trial]) -> list[Trial]:
    """Runs to do, one per trial id: not finished (failed ones are retried), not being run by another process."""
    todo: dict[str, Trial] = {}
    for t in trials:
        if t.id not in todo and study.status(t) in track.TO_RUN:
            todo[t.id] = t
    return list(todo.values())


def _local(study: Study, trials: list[Trial], lcfg: DictConfig, progress: Progress) -> None:
    with stop.graceful_stop():
        for trial in trials:
            progress.update(trial, run_trial(study, trial))


# ------------------------------------------------------------------------------------------------------
# launcher=pool: worker processes, each pinned to a GPU slot (or a share of the CPU cores).

def pool_slots(lcfg: DictConfig, n_gpus: int, n_cpus: int) -> tuple[list[int | None], int]:
    """(the GPU of each worker, None on CPU; torch threads per worker)."""
    if n_gpus:
        per_gpu = int(lcfg.per_gpu)
        slots: list[int | None] = [gpu for gpu in range(n_gpus) for _ in range(per_gpu)]
        if lcfg.workers:
            slots = [slots[i % len(slots)] for i in range(int(lcfg.workers))]
    else:
        slots = [None] * int(lcfg.workers or n_cpus)
    threads = int(lcfg.threads or max(1, n_cpus // len(slots)))
    return slots, threads


def physical_gpu(slot: int, visible: str | None) -> str:
    """The device a worker of GPU slot ``slot`` (0, 1, … over the GPUs torch sees) is pinned to: the slot-th entry of
    the launcher's own CUDA_VISIBLE_DEVICES when it has one (``3,5``: slot 1 is GPU 5), else the slot itself."""
    entries = [e.strip() for e in visible.split(",") if e.strip()] if visible else []
    return entries[slot] if slot < len(entries) else str(slot)


def _worker_init(slots, threads: int) -> None:
    """In each new worker: take a GPU slot (before CUDA starts), set torch threads, and make stop signals set
    the stop flag only. Ctrl-C goes to the parent, which passes the stop on as SIGTERM; a worker must never
    die of it, since one killed while writing to the pool's result queue holds its lock and deadlocks the rest."""
    gpu = slots.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = physical_gpu(gpu, os.environ.get("CUDA_VISIBLE_DEVICES"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, stop.request_stop)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="muso-orphan-watch", daemon=True).start()
    import torch
    torch.set_num_threads(threads)


_TRAINING = threading.Event()  # set while this worker runs a trial


def _exit_with_parent(parent: int) -> None:
    """A worker whose launcher died (SIGKILL, an out-of-memory kill) must not live on holding its memory: once the
    parent is gone the trial in progress checkpoints at its next step, and the worker exits. (Its pool pipes
    stay open in its siblings, so it would never see end-of-file and would wait forever.)"""
    while os.getppid() == parent:
        time.sleep(1.0)
    stop.request_stop(signal.SIGTERM)
    while _TRAINING.is_set():
        time.sleep(0.2)
    os._exit(0)


def _worker_run(study_path: str, index: int) -> dict:
    """One trial in a worker: it checkpoints at the next step once a stop is requested; queued ones never
    start."""
    if stop.STOP.signum is not None:
        raise stop.Interrupted("stop requested before the trial started")
    study = Study(study_path)
    _TRAINING.set()
    try:
        return run_trial(study, study.trial(index))
    finally:
        _TRAINING.clear()


def _pool(study: Study, trials: list[Trial], lcfg: DictConfig, progress: Progress) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    import torch

    n_gpus = torch.cuda.device_count()
    slots, threads = pool_slots(lcfg, n_gpus, os.cpu_count() or 1)
    slots = slots[:len(trials)] or slots[:1]
    # CPU only: fork, so workers start in milliseconds and share, copy-on-write, what the parent loaded first
    # (spawn re-imports torch, ~3 s each). With GPUs: spawn, since CUDA does not survive a fork.
    ctx = mp.get_context("spawn" if n_gpus else "fork")
    if not n_gpus:
        _load_once(trials)
    queue = ctx.Queue()
    for slot in slots:
        queue.put(slot)
    todo = list(trials)
    with stop.graceful_stop():
        while todo:
            with ProcessPoolExecutor(len(slots), mp_context=ctx, initializer=_worker_init,
                                     initargs=(queue, threads)) as pool:
                futures = {pool.submit(_worker_run, str(study.path), t.index): t for t in todo}
                todo = []
                while futures:
                    done, _ = wait(futures, timeout=0.2, return_when=FIRST_COMPLETED)
                    for future in done:
                        trial = futures.pop(future)
                        try:
                            progress.update(trial, future.result())
                        except BrokenProcessPool:
                            todo.append(trial)  # its worker (or a neighbour) died: decided below
                        except stop.Interrupted:
                            pass
                    if stop.STOP.signum is not None:
                        _stop_workers(pool, futures)
                        raise stop.Interrupted(f"stopped by signal {stop.STOP.signum}")
            todo = _after_crash(study, todo, progress)
            for slot in slots:  # the next pool's workers take their slots afresh
                queue.put(slot)


def _load_once(trials: list[Trial]) -> None:
    """Before forking workers: load each dataset the trials use into this process's cache, and import what the
    first optimizer imports lazily (torch._dynamo, ~1.3 s), so no worker pays either again."""
    import torch._dynamo  # noqa: F401  (imported by torch.optim.Optimizer on first use)

    from . import data

    configs = {json.dumps(t.config["data"], sort_keys=True): t.config["data"] for t in trials}
    for config in configs.values():
        data.load(OmegaConf.create(config))


def _stop_workers(pool, futures: dict) -> None:
    """Cancel trials not started; ask every worker to stop (running trials checkpoint); wait for them."""
    from concurrent.futures import wait

    for future in futures:
        future.cancel()
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    wait(futures)


def _after_crash(study: Study, trials: list[Trial], progress: Progress) -> list[Trial]:
    """Trials whose worker died: one that had started (it may be the cause: out of memory, a segfault) gets a
    failed result; one that had not started goes round again."""
    again = []
    for t in trials:
        folder = study.trial_dir(t)
        if (folder / claims.CLAIM).exists() and not claims.is_running(folder):
            result = track.write_result(folder, {"status": track.FAILED, "error": "the worker process running this "
                                                 "trial died (killed, out of memory, or crashed)"})
            for name in (track.HEARTBEAT, claims.CLAIM):
                (folder / name).unlink(missing_ok=True)
            progress.update(t, result)
        elif study.status(t) in track.TO_RUN:
            again.append(t)
    return again


# ------------------------------------------------------------------------------------------------------
# launcher=slurm: array jobs through submitit; a signalled task checkpoints, requeues itself and resumes.

SLURM_STOP_SIGNALS = (signal.SIGUSR2, signal.SIGUSR1, signal.SIGTERM)  # time-out/preemption warnings, scancel


def requeue_self(max_requeue: int) -> None:
    """Requeue this Slurm task (its trials resume from their checkpoints) and exit without a result.

    Raises RuntimeError when the task was requeued ``max_requeue`` times already, or outside Slurm.
    """
    import subprocess

    job = claims.slurm_task()
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    if job is None or restarts >= max_requeue:
        raise RuntimeError(f"not requeued: {'not a Slurm job' if job is None else f'requeued {restarts} times'}")
    print(f"muso: requeueing Slurm job {job} (restart {restarts + 1} of at most {max_requeue})", file=sys.stderr,
          flush=True)
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
    sys.exit(-1)  # like submitit: no result is written, the requeued task runs the same trials again


class SlurmTask:
    """What one array task runs: a chunk of a study's trials (submitit pickles this object).

    It replaces submitit's own time-out handler (which checkpoints from inside the signal handler, possibly
    mid-step) with muso's: the trial stops at a step boundary, saves a checkpoint, and the task requeues.
    """

    def __init__(self, study_path: str, max_requeue: int):
        self.study_path, self.max_requeue = study_path, max_requeue

    def __call__(self, indices: list[int]) -> list[str]:
        study = Study(self.study_path)
        statuses = []
        with stop.graceful_stop(SLURM_STOP_SIGNALS):
            for index in indices:
                try:
                    statuses.append(run_trial(study, study.trial(index))["status"])
                except stop.Interrupted:
                    requeue_self(self.max_requeue)
        return statuses


def _slurm(study: Study, trials: list[Trial], lcfg: DictConfig, progress: Progress) -> None:
    import submitit

    folder = lcfg.folder or study.path / "slurm"
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=int(lcfg.max_requeue))
    params = dict(job_name=f"muso-{study.name}", time=int(lcfg.time_min), cpus_per_task=int(lcfg.cpus_per_task),
                  array_parallelism=int(lcfg.array_parallelism), signal_delay_s=int(lcfg.signal_delay_s),
                  setup=list(lcfg.setup), additional_parameters=dict(lcfg.additional))
    optional = {"partition": lcfg.partition, "qos": lcfg.qos, "account": lcfg.account,
                "gpus_per_task": lcfg.gpus_per_task or None, "mem": f"{lcfg.mem_gb}GB" if lcfg.mem_gb else None}
    executor.update_parameters(**params, **{k: v for k, v in optional.items() if v is not None})
    k = int(lcfg.trials_per_task)
    chunks = [[t.index for t in trials[i:i + k]] for i in range(0, len(trials), k)]
    jobs = executor.map_array(SlurmTask(str(study.path.resolve()), int(lcfg.max_requeue)),
                              chunks)
    job_ids = sorted({j.job_id.split("_")[0] for j in jobs})
    track.write_json(study.path / "slurm_jobs.json", {"jobs": job_ids, "tasks": len(chunks), "trials": len(trials)})
    print(f"submitted {len(trials)} trials as {len(chunks)} Slurm array tasks (job {', '.join(job_ids)}); "
          f"logs in {folder}", file=sys.stderr, flush=True)
    if not lcfg.wait:
        print(f"not waiting: follow with `muso status {study.path}`", file=sys.stderr)
        return
    _follow(study, trials, job_ids, float(lcfg.poll_s), progress)


def _follow(study: Study, trials: list[Trial], job_ids: list[str], poll_s: float, progress: Progress) -> None:
    """Report results as they land, until every trial is finished or the jobs have left the queue.

    Ctrl-C stops the watching, not the jobs."""
    import subprocess

    seen: set[str] = set()
    with stop.graceful_stop():
        while True:
            for t in trials:
                result = study.result(t) if t.id not in seen else None
                if result and result.get("status") in track.RESULT_STATUSES:
                    seen.add(t.id)
                    progress.update(t, result)
            if len(seen) == len(trials):
                return
            queued = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True,
                                    text=True).stdout.split()
            if not queued and not any(claims.is_running(study.trial_dir(t)) for t in trials if t.id not in seen):
                missing = len(trials) - len(seen)
                print(f"the Slurm jobs ended with {missing} trials unfinished (see the logs in "
                      f"{study.path / 'slurm'}); run the same command again to retry them", file=sys.stderr)
                return
            if stop.STOP.signum is not None:
                print(f"stopped watching; jobs {', '.join(job_ids)} keep running (muso status {study.path}; "
                      f"scancel {' '.join(job_ids)} to stop them)", file=sys.stderr)
                raise stop.Interrupted("stopped watching the Slurm jobs")
            time.sleep(poll_s)


LAUNCHERS: dict[str, Callable[[Study, list[Trial], DictConfig, Progress], None]] = {
    "local": _local, "pool": _pool, "slurm": _slurm}


def launch(study: Study, trials: list[Trial], lcfg: DictConfig) -> Counter:
    """Run the unfinished ``trials`` with the launcher ``lcfg.name``; return counts of their runs' statuses (a
    base-width run that serves several parameterizations counts once).

    Raises stop.Interrupted when stopped (finished results are kept; the rest resume on the next launch).
    """
    todo = pending(study, trials)
    runs = len({t.id for t in trials})
    progress = Progress(runs, runs - len(todo))
    if todo:
        LAUNCHERS[lcfg.name](study, todo, lcfg, progress)

    def status(t: Trial) -> str:  # a failure whose folder could not be written has no result file
        on_disk = study.status(t)
        return track.FAILED if on_disk == track.PENDING and progress.statuses.get(t.id) == track.FAILED else on_disk

    return Counter(status(t) for t in {t.id: t for t in trials}.values())  # one count per run
