"""The ``muso`` command: subcommand dispatch, Hydra composition and friendly errors.

Every subcommand takes Hydra overrides (``key=value``, ``group=option``). Bad input is reported before any work
starts as one paragraph naming the key and the fix, with exit status 2; ``MUSO_DEBUG=1`` adds the traceback.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Callable, Sequence

from .config import CONF_DIR, UsageError, check_widths, compose, validate

USAGE = """usage: muso <command> [overrides ...]

commands:
  run          one training run; a plain Hydra app (`muso run -m key=a,b` is a multirun)
  params       show what the parameterization does to each parameter (role, width multiplier, init, lr, damping)
  coord-check  per-layer feature updates against width: plot, slopes and a verdict per layer
  sweep        tune learning rate × damping at the base width (a study)
  transfer     train a study's best setting at larger widths
  report       tables and plots of a study
  status       trial counts of a study (ok / diverged / failed / running / pending)
  run-trial    run trial i of a study (what launchers and `sbatch --array` call)

Overrides use Hydra's grammar: model.width=1024 optimizer=kfac param=somup. `muso <command> --help` for more.
Environment: MUSO_DEBUG=1 prints tracebacks."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(f"muso {__version__}")
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"muso: unknown command {command!r}. Fix: use one of {', '.join(COMMANDS)} (muso --help).",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[command](args) or 0
    except UsageError as e:
        if os.environ.get("MUSO_DEBUG"):
            traceback.print_exc()
        print(f"muso {command}: error: {e}", file=sys.stderr)
        return 2


def _parse(prog: str, args: Sequence[str], description: str,
           extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Options of a subcommand; everything that is not an option is a Hydra override."""
    parser = argparse.ArgumentParser(prog=f"muso {prog}", description=description)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.width=1024 optimizer=kfac")
    if extra:
        extra(parser)
    return parser.parse_intermixed_args(args)


def compose_valid(overrides: Sequence[str], *, check_data: bool = True):
    """Compose and validate (warnings from validation are shown once, as warnings)."""
    cfg = compose(overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        validate(cfg, check_data=check_data)
    return cfg


# ------------------------------------------------------------------------------------------------------
# muso run: a plain Hydra app.

_RUN_RESULTS: list[dict] = []


def cmd_run(args: list[str]) -> int:
    """Validate every job of the (multi)run first, then hand the command line to Hydra."""
    from hydra._internal.utils import get_args_parser

    ns = get_args_parser().parse_args(args)
    if not (ns.help or ns.hydra_help or ns.info or ns.shell_completion):
        for overrides in expand_sweeps(ns.overrides) if ns.multirun else [ns.overrides]:
            compose_valid(overrides)
    _RUN_RESULTS.clear()
    argv0, sys.argv = sys.argv, ["muso-run", *args]
    try:
        _hydra_run()
    finally:
        sys.argv = argv0
    return 1 if any(r.get("status") == "failed" for r in _RUN_RESULTS) else 0


def expand_sweeps(overrides: Sequence[str]) -> list[list[str]]:
    """The override list of each job of a multirun (cartesian product of sweeps; hydra.* keys left out).

    Sweeps Hydra cannot enumerate up front (``interval()`` for Optuna, ``glob()``) are validated with their
    first value only.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:
        return [list(overrides)]  # let compose() report the syntax error
    choices: list[list[str]] = []
    for o in parsed:
        key = o.get_key_element()
        if key.lstrip("+~").startswith("hydra"):
            continue
        if not o.is_sweep_override():
            choices.append([o.input_line])
            continue
        try:
            values = list(o.sweep_string_iterator())
        except Exception:  # interval(), glob(): not enumerable here
            continue
        choices.append([f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]


def _run_task(cfg) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from . import train

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    validate(cfg)
    try:
        with train.graceful_stop():
            result = train.run(cfg, out_dir, quiet=not cfg.train.progress)
    except train.Interrupted:
        print(f"muso run: interrupted; a checkpoint is in {out_dir}. Resume with: muso run <same overrides> "
              f"hydra.run.dir={out_dir}", file=sys.stderr)
        raise
    _RUN_RESULTS.append(result)
    final = result.get("final", {})
    if result["status"] == "failed":
        print(f"muso run: failed: {result['error']} (traceback in {out_dir / 'result.json'})", file=sys.stderr)
    else:
        print(f"status {result['status']}  test_acc {_fmt(final.get('test_acc'))}  test_loss "
              f"{_fmt(final.get('test_loss'))}  train_loss {_fmt(final.get('train_loss'))}  "
              f"steps {result['steps']}  {result['wall_seconds']:.1f}s  → {out_dir}")
    return result


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _hydra_run() -> None:
    import hydra

    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_run_task)()


# ------------------------------------------------------------------------------------------------------
# muso params

def cmd_params(args: list[str]) -> int:
    ns = _parse("params", args, "One row per parameter: role, width multiplier, init std, lr and damping "
                "multipliers relative to the base width.",
                lambda p: p.add_argument("--json", action="store_true", help="print JSON instead of a table"))
    cfg = compose_valid(ns.overrides, check_data=False)
    from . import data as data_mod
    from .train import build_model_and_plan

    input_shape, num_classes = data_mod.spec(cfg.data)
    _, plan = build_model_and_plan(cfg, input_shape, num_classes)
    rows = plan.rows()
    if ns.json:
        print(json.dumps({"param": plan.param, "optimizer": plan.optimizer, "damping_rule": plan.damping_rule,
                          "width": cfg.model.width, "base_width": cfg.model.base_width, "rows": rows}, indent=2))
        return 0
    import pandas as pd

    table = pd.DataFrame(rows)
    table["shape"] = table["shape"].map(lambda s: "×".join(map(str, s)))
    print(f"param={plan.param} optimizer={plan.optimizer} damping_rule={plan.damping_rule or '-'} "
          f"model={cfg.model.name} width={cfg.model.width} base_width={cfg.model.base_width}")
    print(table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    return 0


# ------------------------------------------------------------------------------------------------------
# muso coord-check

def cmd_coord_check(args: list[str]) -> int:
    ns = _parse("coord-check", args, "Per-layer RMS of the feature update Δh (Δf at the readout) against width "
                "after a few steps on one fixed batch; writes coord.csv, slopes.csv, verdict.csv, coord.png.",
                lambda p: p.add_argument("--strict", action="store_true",
                                         help="exit 1 unless every hidden Δh and the output Δf are flat"))
    cfg = compose_valid(ns.overrides)
    c = cfg.coord
    widths = check_widths("coord.widths", c.widths, at_least=2)
    for key in ("steps", "batch_size", "seeds"):
        if not (isinstance(c[key], int) and c[key] >= 1):
            raise UsageError(f"coord.{key}", f"must be a positive integer, got {c[key]!r}.", f"e.g. coord.{key}=3.")
    if not (isinstance(c.tolerance, (int, float)) and c.tolerance > 0):
        raise UsageError("coord.tolerance", f"must be > 0, got {c.tolerance!r}.", "e.g. coord.tolerance=0.15.")
    from . import coord

    fit_from = coord.fit_from_width(cfg)
    if sum(w >= fit_from for w in widths) < 2:
        raise UsageError("coord.fit_from", f"leaves fewer than 2 widths ≥ {fit_from:g} to fit slopes "
                         f"(widths {widths}).", "add wider widths, or set coord.fit_from to a smaller width.")
    out = Path(c.out or f"outputs/coord/{cfg.param.name}-{cfg.optimizer.name}-{_timestamp()}")
    print(f"coord-check: {cfg.model.name}, {cfg.optimizer.name} lr={cfg.optimizer.lr}, param={cfg.param.name}, "
          f"widths {widths}, {c.steps} steps, batch {c.batch_size}", file=sys.stderr)
    res = coord.run(cfg, out)
    verdicts = res["verdicts"]
    print(f"slopes of log2 RMS Δh vs log2 width at step {int(verdicts.step.max())}, fitted from width "
          f"{res['fit_from']:g} (slope_all: from the smallest width); tolerance {c.tolerance}")
    print(verdicts.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    print(f"→ {out}/coord.png, coord.csv, slopes.csv, verdict.csv")
    judged = verdicts[verdicts.role.isin(["hidden", "output"])]
    return 1 if ns.strict and (judged.verdict != "flat").any() else 0


def _timestamp() -> str:
    from datetime import datetime
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": cmd_run,
    "params": cmd_params,
    "coord-check": cmd_coord_check,
}
