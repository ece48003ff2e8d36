#!/usr/bin/env python
"""Grids of training runs for the robustness measurements of K-FAC and Shampoo (docs/results.md, §2 and §8).

Every cell of the grid is one ``muso run`` with the base overrides plus one value of every grid key, trained
in-process by :func:`muso_cli.train.run` (the same loop, divergence rule and result as ``muso run``) in a
temporary folder; one JSON line per cell is appended to ``--out`` (status, the reason of a divergence, final and
best training loss, test accuracy, steps, seconds), so an interrupted grid resumes where it stopped and a grid
can be widened later. ``--jobs`` worker processes share the cells (``--threads`` torch threads each).

    .venv/bin/python scripts/stability_sweep.py run --out outputs/stability/kfac.jsonl \\
        --base optimizer=kfac train.steps=100 --grid model.depth=3,4,5,6 model.activation=relu,tanh \\
        optimizer.lr=log2:-10:0 optimizer.damping=log10:-3:0
    .venv/bin/python scripts/stability_sweep.py table outputs/stability/kfac.jsonl \\
        --rows model.depth model.activation --cols optimizer.damping optimizer.lr

``plot`` draws a value against one key (e.g. the training loss against the lr, one line per optimizer).
``table`` prints one cell per (rows, cols) combination: ``·`` trained, ``D`` diverged (``d``: some seeds
diverged), ``F`` failed, or with ``--value train_loss`` the mean final training loss over the matching runs.
Grid values: a comma list, or ``log2:lo:hi[:step]`` / ``log10:lo:hi[:step]`` as in ``study.lr``.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def values(spec: str) -> list[str]:
    """The grid values of ``key=spec``: a comma list, or logB:lo:hi[:step] (exponents from lo to hi)."""
    if spec.startswith(("log2:", "log10:")):
        base, *bounds = spec.split(":")
        lo, hi, step = (float(b) for b in (bounds + ["1"])[:3])
        b = 2.0 if base == "log2" else 10.0
        n = int(round((hi - lo) / step)) + 1
        return [repr(float(b ** (lo + i * step))) for i in range(n)]
    return spec.split(",")


def cells(grid: list[str]) -> list[dict[str, str]]:
    keys, lists = [], []
    for item in grid:
        key, spec = item.split("=", 1)
        keys.append(key)
        lists.append(values(spec))
    return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]


def cell_id(base: list[str], cell: dict[str, str]) -> str:
    return " ".join(base + [f"{k}={v}" for k, v in cell.items()])


_SEEN: dict = {}


def _watch(cls) -> dict:
    """What the optimizer itself saw, per run: the trust region's ν per step and the reason of a refused step
    (``cls.step`` wrapped once per process)."""
    if not _SEEN:
        step = cls.step

        def watched(self, closure=None):
            out = step(self, closure)
            if self.clip_factor is not None:
                _SEEN["nu"].append(float(self.clip_factor))
            _SEEN["refused"] = _SEEN["refused"] or self.diverged
            return out

        cls.step = watched
        _SEEN.update(nu=[], refused=None)
    return _SEEN


def _run_cell(args: tuple) -> dict:
    base, cell, threads = args
    os.environ.setdefault("WANDB_MODE", "disabled")
    sys.path.insert(0, str(REPO))
    import torch

    from muso_cli import train
    from muso_cli.config import compose
    from muso_cli.optim.base import LayerwiseOptimizer

    if threads:
        torch.set_num_threads(threads)
    seen = _watch(LayerwiseOptimizer)
    seen.update(nu=[], refused=None)
    overrides = [*base, *(f"{k}={v}" for k, v in cell.items())]
    cfg = compose(["train.progress=false", *overrides])
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        result = train.run(cfg, Path(d), quiet=True)
    final, best = result.get("final", {}), result.get("best", {})
    loss = final.get("train_loss")
    return {"id": cell_id(base, cell), "base": base, "cell": cell, "status": result["status"],
            "reason": result.get("diverged_reason") or result.get("error"),
            "train_loss": None if loss is None or not math.isfinite(loss) else loss,
            "best_train_loss": best.get("train_loss"), "test_acc": final.get("test_acc"),
            "steps": result.get("steps"), "seconds": round(time.time() - t0, 2),
            "refused": seen["refused"], **_clip_summary(seen["nu"])}


def _clip_summary(nu: list[float]) -> dict:
    """The trust region's effect: the fraction of steps it scaled (ν < 1), the median and smallest ν."""
    if not nu:
        return {}
    return {"clipped": round(sum(v < 1 for v in nu) / len(nu), 4), "nu_median": sorted(nu)[len(nu) // 2],
            "nu_min": min(nu)}


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        done = {json.loads(line)["id"] for line in out.read_text().splitlines() if line.strip()}
    todo = [c for c in cells(args.grid) if cell_id(args.base, c) not in done]
    print(f"{len(todo)} cells to run ({len(done)} in {out} already)", file=sys.stderr, flush=True)
    work = [(args.base, c, args.threads) for c in todo]
    t0 = time.time()
    with out.open("a") as f:
        pool = mp.get_context("spawn").Pool(args.jobs) if args.jobs > 1 else None
        results = pool.imap_unordered(_run_cell, work) if pool else map(_run_cell, work)
        for i, r in enumerate(results, 1):
            f.write(json.dumps(r) + "\n")
            f.flush()
            loss = "—" if r["train_loss"] is None else f"{r['train_loss']:.4f}"
            print(f"[{i}/{len(work)} {time.time() - t0:.0f}s] {' '.join(f'{k}={v}' for k, v in r['cell'].items())}: "
                  f"{r['status']} {loss} {r['reason'] or ''}", file=sys.stderr, flush=True)
        if pool:
            pool.close()
            pool.join()
    return 0


def load(path: str, where: list[str]) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    for cond in where:
        key, value = cond.split("=", 1)
        rows = [r for r in rows if _get(r, key) == value]
    return rows


def _get(row: dict, key: str) -> str | None:
    if key in row["cell"]:
        return row["cell"][key]
    for item in row["base"]:
        k, _, v = item.partition("=")
        if k == key:
            return v
    return None


def _label(value: str | None) -> str:
    """A grid value as printed: 2^k for a power of two below 1 (a learning rate), else as given (0.01, 4)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if 0 < x < 1 and abs(math.log2(x) - round(math.log2(x))) < 1e-9:
        return f"2^{round(math.log2(x))}"
    return f"{x:g}"


def table(args: argparse.Namespace) -> int:
    rows = load(args.file, args.where)
    key = lambda r, ks: tuple(_get(r, k) for k in ks)  # noqa: E731
    order = lambda v: tuple((0, float(x), "") if _isnum(x) else (1, 0.0, str(x)) for x in v)  # noqa: E731
    row_keys = sorted({key(r, args.rows) for r in rows}, key=order)
    col_keys = sorted({key(r, args.cols) for r in rows}, key=order)
    cell: dict[tuple, list[dict]] = {}
    for r in rows:
        cell.setdefault((key(r, args.rows), key(r, args.cols)), []).append(r)
    width = max(6 if args.value else 2, *(len(" ".join(_label(v) for v in c)) for c in col_keys)) + 1
    head = " ".join(args.rows)
    print(f"{head:<28}" + "".join(f"{' '.join(_label(v) for v in c):>{width}}" for c in col_keys))
    for rk in row_keys:
        line = f"{' '.join(_label(v) for v in rk):<28}"
        for ck in col_keys:
            runs = cell.get((rk, ck), [])
            line += f"{_symbol(runs, args.value):>{width}}"
        print(line)
    diverged = sum(r["status"] == "diverged" for r in rows)
    print(f"# {len(rows)} runs, {diverged} diverged, {sum(r['status'] == 'failed' for r in rows)} failed")
    return 0


def plot(args: argparse.Namespace) -> int:
    """One line per value of ``--lines`` keys: the mean over the matching runs (seeds) of ``--value`` against
    ``--x`` (log2 axis), diverged runs marked × at the top; written to ``--png``."""
    sys.path.insert(0, str(REPO))
    from muso_cli.plots import pyplot, save

    plt = pyplot()
    rows = load(args.file, args.where)
    lines: dict[tuple, dict[float, list]] = {}
    for r in rows:
        x = float(_get(r, args.x))
        lines.setdefault(tuple(_get(r, k) for k in args.lines), {}).setdefault(x, []).append(r.get(args.value))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    top = max((v for line in lines.values() for vs in line.values() for v in vs if v is not None), default=1.0)
    for key, points in sorted(lines.items(), key=lambda kv: [str(k) for k in kv[0]]):
        xs = sorted(points)
        ok = [(x, sum(points[x]) / len(points[x])) for x in xs if None not in points[x]]
        label = " ".join(f"{k.split('.')[-1]}={_label(v)}" for k, v in zip(args.lines, key))
        (line,) = ax.plot([x for x, _ in ok], [y for _, y in ok], "o-", ms=3, label=label)
        bad = [x for x in xs if None in points[x]]
        ax.plot(bad, [top * 1.1] * len(bad), "x", color=line.get_color())
    ax.set_xscale("log", base=2)
    ax.set_xlabel(args.x)
    ax.set_ylabel(f"{args.value} (mean over seeds; × = diverged)")
    ax.legend(fontsize=7)
    save(fig, args.png)
    print(args.png)
    return 0


def _isnum(x) -> bool:
    try:
        float(x)
        return True
    except (TypeError, ValueError):
        return False


def _symbol(runs: list[dict], value: str | None) -> str:
    if not runs:
        return " "
    statuses = [r["status"] for r in runs]
    if "failed" in statuses:
        return "F"
    if value:
        losses = [r[value] for r in runs if r.get(value) is not None]
        if len(losses) < len(runs):
            return "div" if not losses else "d"
        return f"{sum(losses) / len(losses):.4f}"
    if all(s == "diverged" for s in statuses):
        return "D"
    return "d" if "diverged" in statuses else "·"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the grid (resumes)")
    r.add_argument("--out", required=True, help="JSON-lines file of results (appended)")
    r.add_argument("--base", nargs="*", default=[], help="overrides of every cell")
    r.add_argument("--grid", nargs="+", required=True, help="key=values, one per grid axis")
    r.add_argument("--jobs", type=int, default=1)
    r.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    t = sub.add_parser("table", help="print a pivot table of a results file")
    t.add_argument("file")
    t.add_argument("--rows", nargs="+", required=True)
    t.add_argument("--cols", nargs="+", required=True)
    t.add_argument("--where", nargs="*", default=[], help="key=value filters")
    t.add_argument("--value", default=None,
                   help="train_loss | best_train_loss | test_acc | clipped | nu_median instead of the status")
    g = sub.add_parser("plot", help="plot a value against one key, one line per value of other keys")
    g.add_argument("file")
    g.add_argument("--x", required=True)
    g.add_argument("--lines", nargs="*", default=[])
    g.add_argument("--where", nargs="*", default=[], help="key=value filters")
    g.add_argument("--value", default="train_loss")
    g.add_argument("--png", required=True)
    args = p.parse_args(argv)
    return {"run": run, "table": table, "plot": plot}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
