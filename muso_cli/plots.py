"""Matplotlib for muso's figures (reports, coordinate checks, the reproduction scripts)."""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are written to files; works headless,
    e.g. in a Slurm job). Imported on first use, so that commands which draw nothing do not pay for it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt
