"""Stop requests: signals that ask a run to stop at the next step boundary instead of killing it.

A signal handler only sets :data:`STOP`; the training loop checks it between steps, saves a checkpoint and
raises :class:`Interrupted`, so a checkpoint is always consistent. Launchers use the same flag: a pool worker's
handler is :func:`request_stop`, and the Slurm task listens for its time-out and preemption warnings.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager


class Interrupted(Exception):
    """A stop was requested; the run saved a checkpoint and will resume when started again."""


class _StopFlag:
    """Set by a signal handler; the loop checks it between steps so checkpoints are always consistent."""

    signum: int | None = None


STOP = _StopFlag()
DEFAULT_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def request_stop(signum: int, frame=None) -> None:  # noqa: ARG001 (a signal handler's signature)
    """Ask the run in progress to stop at the next step boundary (usable as a signal handler)."""
    STOP.signum = signum


@contextmanager
def graceful_stop(signals=None):
    """Within this block the listed signals (default SIGTERM, SIGUSR1, Ctrl-C) request a stop at the next step
    boundary instead of killing. A second Ctrl-C aborts at once. Outside the main thread this is a no-op.
    """
    signals = DEFAULT_STOP_SIGNALS if signals is None else signals
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ARG001
        if signum == signal.SIGINT and STOP.signum is not None:
            raise KeyboardInterrupt
        request_stop(signum)
        if signum == signal.SIGINT:
            print("\nmuso: stopping after the current step (Ctrl-C again to abort)", file=sys.stderr)

    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        STOP.signum = None
