"""The subprocess of ``trainer=python``: read the trial's config ($MUSO_TRIAL_CONFIG), import
``trainer._target_`` and call it with the config and the trial's folder ($MUSO_TRIAL_DIR). An exception is your
code's: it ends this process with a traceback on stderr (stderr.log) and a non-zero exit, one failed trial.

    python -m muso_cli.trainers.entry
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main() -> int:
    from omegaconf import OmegaConf
    from hydra.utils import get_object

    cfg = OmegaConf.load(os.environ["MUSO_TRIAL_CONFIG"])
    fit = get_object(cfg.trainer._target_)
    fit(cfg, Path(os.environ["MUSO_TRIAL_DIR"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
