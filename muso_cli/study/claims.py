"""Claims: at most one process trains a trial folder at a time, across hosts on a shared filesystem.

Before a trial runs, its process creates ``claim.json`` in the trial's folder with ``O_CREAT | O_EXCL`` (atomic on
local filesystems and on NFS): host, pid, Slurm job, start time and a random token. While it holds the claim, a
thread refreshes ``running.json`` (the heartbeat: the token and the time) every :data:`BEAT_SECONDS`. A claim is
*live* while its heartbeat is fresh: younger than :data:`STALE_SECONDS` (``$MUSO_STALE_SECONDS``), and, on the
holder's own host, while its pid is alive. Time decides, not the pid alone: a pid is reused, so a dead holder
whose pid now belongs to another process goes stale all the same; a holder on another host can only be judged
by time. A process that finds a live claim skips the trial. One that finds a stale claim takes it over under an
exclusive ``flock`` on ``.claim.lock`` (held for milliseconds): it looks again, removes the stale claim and creates
its own, so of several takers exactly one wins.
A Slurm task that was requeued finds the claim of its own previous run (the same job and array task) and takes
it over at once. The claim is released (both files removed) when the trial ends, fails or is interrupted.

A holder that was only slow and lost its claim keeps training; the result it writes cannot clobber a finished
one, since :func:`muso_cli.track.write_result` never replaces an ok or diverged result.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from .. import track

CLAIM, TAKEOVER_LOCK = "claim.json", ".claim.lock"
BEAT_SECONDS = 20.0
STALE_SECONDS = float(os.environ.get("MUSO_STALE_SECONDS", "120"))


def slurm_task() -> str | None:
    """This process's Slurm job id (``<array job>_<task>`` for an array task; the same across requeues of the
    task), or None outside Slurm."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return os.environ.get("SLURM_JOB_ID")


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except (TypeError, ValueError, OSError):
        return False
    return True


def _alive(run_dir: Path, holder: dict) -> bool:
    """Whether the process that holds this claim is still at it (see the module docstring)."""
    task = slurm_task()
    if task is not None and holder.get("slurm_task") == task and holder.get("pid") != os.getpid():
        return False  # our own task before a requeue
    beat = track.read_json(run_dir / track.HEARTBEAT)
    last = beat.get("time") if beat and beat.get("token") == holder.get("token") else holder.get("started")
    if not isinstance(last, (int, float)) or time.time() - last >= STALE_SECONDS:
        return False
    return holder.get("host") != socket.gethostname() or _pid_alive(holder.get("pid"))


def holder(run_dir: Path) -> dict | None:
    """The live claim on ``run_dir`` (host, pid, started, …), or None when nobody is training it."""
    run_dir = Path(run_dir)
    path = run_dir / CLAIM
    if not path.exists():
        return None
    claim = track.read_json(path)
    if claim is None:  # being written this very moment, or damaged: judged by its age
        try:
            claim = {"started": path.stat().st_mtime}
        except OSError:
            return None
    return claim if _alive(run_dir, claim) else None


def is_running(run_dir: Path) -> bool:
    """Whether a live process trains this run."""
    return holder(run_dir) is not None


class Claim:
    """This process's claim on one trial folder: a heartbeat thread while held; :meth:`release` ends it.

    Use as a context manager (``with claims.take(folder) as claim:``); the claim is released on leaving.
    """

    def __init__(self, run_dir: Path, token: str):
        self.run_dir, self.token = Path(run_dir), token
        self._stop = threading.Event()
        self._beat()
        self._thread = threading.Thread(target=self._beat_until_released, name=f"muso-heartbeat-{token[:6]}",
                                        daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        track.write_json(self.run_dir / track.HEARTBEAT, {"token": self.token, "host": socket.gethostname(),
                                                          "pid": os.getpid(), "time": time.time()})

    def _beat_until_released(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            try:
                self._beat()
            except OSError:  # the folder vanished or the disk is full: the claim goes stale, nothing else breaks
                pass

    def held(self) -> bool:
        """Whether the claim file is still ours (it is not once a taker judged us stale)."""
        claim = track.read_json(self.run_dir / CLAIM)
        return bool(claim) and claim.get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.held():
            for name in (track.HEARTBEAT, CLAIM):
                (self.run_dir / name).unlink(missing_ok=True)

    def __enter__(self) -> "Claim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def take(run_dir: Path) -> Claim | None:
    """Claim ``run_dir`` for this process, taking over a stale claim; None when another live process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    claim = _create(run_dir)
    if claim is not None:
        return claim
    # A claim is there. Taking it over means removing it, and only a process holding the takeover lock may
    # remove one: it re-reads the claim under the lock, so the file it removes is the stale one it judged (a new
    # claim can only be created once the path is free, and only a lock holder frees it).
    with open(run_dir / TAKEOVER_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if holder(run_dir) is not None:
                return None
            (run_dir / CLAIM).unlink(missing_ok=True)
            return _create(run_dir)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _create(run_dir: Path) -> Claim | None:
    """A new claim file (O_CREAT | O_EXCL), or None when one exists."""
    token = uuid.uuid4().hex
    try:
        fd = os.open(run_dir / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as f:
        json.dump({"token": token, "host": socket.gethostname(), "pid": os.getpid(), "slurm_task": slurm_task(),
                   "started": time.time()}, f)
        f.flush()
        os.fsync(f.fileno())
    return Claim(run_dir, token)
