"""Matplotlib for muso's figures (reports, coordinate checks, the reproduction scripts)."""
from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are written to files; works headless,
    e.g. in a Slurm job). Imported on first use, so that commands which draw nothing do not pay for it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path, *, dpi: int = 110, tight: bool = True) -> None:
    """The epilogue of every figure: lay it out, write it to ``path`` and free it (pyplot keeps figures alive)."""
    plt = pyplot()
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
