#!/usr/bin/env python
"""The valleys and noise of real studies, as the verdict fits them: per (parameterization, width), the best mean
loss, the residual SD of the points near the optimum (σ), the SD of the seeds' offsets, and the two curvatures
(muso_cli.valley). What docs/verdicts.md's "Noise measured on real studies" and the calibration's default
scenario (muso_cli.calibrate.Scenario) come from.

    .venv/bin/python scripts/valley_noise.py <study folder> [<study folder> ...]
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muso_cli import valley  # noqa: E402
from muso_cli.report import collect  # noqa: E402
from muso_cli.study.results import points  # noqa: E402
from muso_cli.study.store import Study  # noqa: E402


def main(folders: list[str]) -> int:
    print("| study | param | width | best loss | σ (point) | seed-offset SD | a_L | a_R |\n|---|---|---|---|---|---|---|---|")
    for folder in folders:
        study = Study.open(folder)
        df, _ = collect(points(study, "train_loss"))
        df = df[df.status == "ok"]
        for (param, width), g in df.groupby(["param", "width"]):
            means = g.groupby("lr").final_train_loss.mean()
            if len(means) < 3:
                continue
            centre = math.log2(means.idxmin())
            near = g[(np.log2(g.lr) - centre).abs() <= 1.0 + 1e-9]
            fit = valley.fit(np.log2(near.lr.to_numpy()), near.seed.to_numpy(), near.final_train_loss.to_numpy())
            table = near.pivot_table(index="lr", columns="seed", values="final_train_loss")
            offsets = table.sub(table.mean(axis=1), axis=0).mean(axis=0)
            sigma = f"{fit.sigma:.4f}" if fit.sigma is not None else "-"
            print(f"| {study.name} | {param} | {width} | {means.min():.4f} | {sigma} | {offsets.std(ddof=1):.4f} | "
                  f"{fit.a_left:.4f} | {fit.a_right:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
