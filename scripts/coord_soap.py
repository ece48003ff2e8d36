"""SOAP's coordinate check at steps 1–5 (docs/parameterization.md, "SOAP's steady state"): slopes of input, hidden and
Δf against width under SOAP's column (Adam's µP: its steady state) and under the column before issue 29 (Shampoo's
rule, p = ½; set here, in this process only), on one fixed batch and on a fresh batch each step.

    python scripts/coord_soap.py      # ~70 s on 2 CPU cores; prints a markdown table

The command is issue 29's (`muso coord-check model=mlp model.base_width=32 coord.widths=[128,256,512,1024]
optimizer=soap param=somup`) with 5 steps and 2 seeds.
"""
from __future__ import annotations

import time

import pandas as pd

from muso_cli import coord, parametrize
from muso_cli.config import compose

CMD = ["model=mlp", "model.base_width=32", "coord.widths=[128,256,512,1024]", "coord.steps=5", "optimizer=soap",
       "param=somup", "coord.seeds=2"]
COLUMNS = {"Adam's µP (now)": None, "Shampoo's p = ½ (before)": parametrize.Preconditioned(0.5)}


def main() -> None:
    rows = []
    for column, rule in COLUMNS.items():
        saved = parametrize.LR["somup"]["soap"]
        if rule is not None:
            parametrize.LR["somup"]["soap"] = rule
        try:
            for fresh in (False, True):
                started = time.time()
                cfg = compose([*CMD, f"coord.fresh_batches={str(fresh).lower()}"])
                s = coord.slopes(coord.measure(cfg), coord.fit_from_width(cfg))
                for step, g in s[s.metric == "dh"].groupby("step"):
                    by = dict(zip(g.role, g.slope))
                    rows.append({"column": column, "batches": "fresh" if fresh else "fixed", "step": step,
                                 "input": by.get("input"), "hidden": by.get("hidden"), "Δf": by.get("output")})
                print(f"{column}, {'fresh' if fresh else 'fixed'} batches: {time.time() - started:.0f} s", flush=True)
        finally:
            parametrize.LR["somup"]["soap"] = saved
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt="+.2f"))


if __name__ == "__main__":
    main()
