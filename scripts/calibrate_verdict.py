#!/usr/bin/env python
"""The verdict's calibration table: right / undecided / wrong-decided rates on simulated studies whose answer is
known (muso_cli.calibrate), per grid step, seeds and drift, and how often the intervals cover the truth. What
docs/verdicts.md shows (a measurement, not a test: tests/test_calibration.py asserts the targets on fewer
replicates).

    .venv/bin/python scripts/calibrate_verdict.py                       # the table (about 10 min on 2 cores)
    .venv/bin/python scripts/calibrate_verdict.py --replicates 40 --shape measured --design grid
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from muso_cli import calibrate  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicates", type=int, default=100)
    p.add_argument("--steps", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument("--seeds", type=int, nargs="+", default=[2, 3, 5])
    p.add_argument("--drifts", type=float, nargs="+", default=[0.0, -0.5, -1.0, -2.0])
    p.add_argument("--seed", type=int, default=0)
    for f in fields(calibrate.Scenario):  # every scenario knob: --shape measured, --design grid, --point-sd ...
        if f.name not in ("step", "seeds", "drift", "widths"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = p.parse_args(argv)
    knobs = {f.name: getattr(args, f.name) for f in fields(calibrate.Scenario)
             if f.name not in ("step", "seeds", "drift", "widths")}
    base = calibrate.Scenario(**knobs)
    started = time.time()
    table = calibrate.table(base, tuple(args.steps), tuple(args.seeds), tuple(args.drifts), args.replicates,
                            args.seed)
    print(f"# scenario: {base}")
    print(f"# {args.replicates} replicates per row, generator seed {args.seed}, {time.time() - started:.0f} s")
    print(table.to_markdown(index=False, floatfmt=".2f"))
    print(f"# wrong-decided: at most {table.wrong.max():.2f} in any row")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
