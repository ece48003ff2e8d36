"""muso's console messages go through the ``muso`` logger.

``muso run`` is a Hydra app: Hydra's job logging sends every logger to the console and to the run's run.log, so
a run's progress lands in both. The study commands are not Hydra jobs: :func:`to_console` gives the logger a
handler that writes plain lines to whatever ``sys.stderr`` is at the time (so redirections and pytest's capture
see them).
"""
from __future__ import annotations

import logging
import sys

LOG = logging.getLogger("muso")


class _Stderr(logging.StreamHandler):
    """A StreamHandler bound to the current sys.stderr, not the one at creation."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # logging.StreamHandler.__init__ assigns it
        pass


def to_console() -> None:
    """Print the muso logger's INFO messages on stderr (once; a no-op when already set up)."""
    if not any(isinstance(h, _Stderr) for h in LOG.handlers):
        LOG.addHandler(_Stderr())
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
