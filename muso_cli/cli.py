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

from . import track
from .config import CONF_DIR, compose, to_container
from .errors import UsageError, widths as check_widths
from .validate import validate

USAGE = """usage: muso <command> [overrides ...]

commands:
  run          one training run; a plain Hydra app (`muso run -m key=a,b` is a multirun)
  params       show what the parameterization does to each parameter (role, width multiplier, init, lr, damping)
  coord-check  per-layer feature updates against width: plot, slopes and a verdict per layer
  sweep        tune learning rate × damping at the base width (a study)
  refine       add grid points near each optimum of a study until it is resolved (study.refine_to)
  transfer     train a study's best setting at larger widths
  report       the verdict per parameterization (transfers / drifts / undecided), tables and plots
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
           extra: Callable[[argparse.ArgumentParser], None] | None = None,
           positionals: Sequence[tuple[str, dict]] = ()) -> argparse.Namespace:
    """Options of a subcommand; after its ``positionals``, every other argument is a Hydra override."""
    parser = argparse.ArgumentParser(prog=f"muso {prog}", description=description)
    for name, kwargs in positionals:
        parser.add_argument(name, **kwargs)
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
    return 1 if any(r.get("status") == track.FAILED for r in _RUN_RESULTS) else 0


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
    from .stop import Interrupted, graceful_stop

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    validate(cfg)
    try:
        with graceful_stop():
            result = train.run(cfg, out_dir, quiet=not cfg.train.progress)
    except Interrupted:
        print(f"muso run: interrupted; a checkpoint is in {out_dir}. Resume with: muso run <same overrides> "
              f"hydra.run.dir={out_dir}", file=sys.stderr)
        raise
    _RUN_RESULTS.append(result)
    final = result.get("final", {})
    if result["status"] == track.FAILED:
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
    from .setup import build_model_and_plan

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
    from . import coord

    widths = coord.check(cfg)
    c = cfg.coord
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


# ------------------------------------------------------------------------------------------------------
# Studies: muso sweep / transfer / status / run-trial

STUDY_ARG = ("study", {"help": "the study folder (printed by muso sweep)"})


def _study_overrides(overrides: list[str]) -> list[str]:
    """A study decides the parameterization itself (study.params): refuse a param= override."""
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+~") == "param":
            raise UsageError("param", "a study compares the parameterizations in study.params.",
                             f"write study.params=[{o.split('=', 1)[1]}] instead of {o}.")
    return overrides


def _print_plan(study_path, trials) -> None:
    import pandas as pd

    df = pd.DataFrame([{"param": t.param, "width": t.width, "lr": t.lr, "damping": t.damping, "seed": t.seed}
                       for t in trials])
    print(f"study {study_path}: {len(trials)} trials")
    for (param, width), g in df.groupby(["param", "width"]):
        damp = sorted(g.damping.dropna().unique())
        print(f"  {param:>6} width {width:>5}: {g.lr.nunique()} lr {_grid(sorted(g.lr.unique()))}"
              + (f" × {len(damp)} damping {_grid(damp)}" if damp else "") + f" × {g.seed.nunique()} seeds")


def _grid(values) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]" if len(values) <= 6 else \
        f"[{values[0]:.3g} … {values[-1]:.3g}]"


def _plan_flags(parser: argparse.ArgumentParser, dry_run_help: str) -> None:
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    parser.add_argument("--no-launch", action="store_true",
                        help="write the study's trial list and run nothing (for your own sbatch --array line)")


def _launch_and_summarise(study, trials, cfg, no_launch: bool = False) -> int:
    from .launch import launch
    from .stop import Interrupted

    if no_launch:
        print(f"trials written, none launched. Run them with e.g.\n  sbatch --array=$(muso status {study.path} "
              f"--pending) scripts/slurm_array.sh {study.path}\nor `muso run-trial {study.path} <index>`.")
        return 0
    try:
        counts = launch(study, trials, cfg.launcher)
    except Interrupted:
        print(f"interrupted: finished results are kept; run the same command again to finish {study.path}",
              file=sys.stderr)
        return 130
    summary = ", ".join(f"{counts[k]} {k}" for k in track.STATUSES if counts[k])
    print(f"{study.path}: {summary}")
    return 1 if counts[track.FAILED] else 0


def cmd_sweep(args: list[str]) -> int:
    ns = _parse("sweep", args, "Grid of learning rate × damping (× seeds) per parameterization at the base width "
                "(and at study.widths); resumable: finished trials are skipped, failed ones retried.",
                lambda p: _plan_flags(p, "print the plan and its size"))
    from . import study as study_mod

    overrides = _study_overrides(ns.overrides)
    cfg = compose_valid(overrides)
    grid = study_mod.check(cfg)
    param_configs = {p: to_container(compose_valid([*overrides, f"param={p}"])) for p in grid.params}
    trials = study_mod.plan_sweep(cfg, param_configs)
    study = study_mod.Study(Path(cfg.study.root) / study_mod.study_name(cfg))
    if ns.dry_run:
        _print_plan(study.path, trials)
        done = sum(1 for t in trials if study.path.exists() and study.status(t) in track.FINAL_STATUSES)
        print(f"{done} of them finished already; {len(trials) - done} to run (launcher={cfg.launcher.name})")
        return 0
    study = study_mod.open_or_create(cfg, overrides)
    trials = study.add(trials)
    _print_plan(study.path, trials)
    return _launch_and_summarise(study, trials, cfg, ns.no_launch)


def _open_study(path: str):
    from .study import Study
    return Study.open(path)


def cmd_transfer(args: list[str]) -> int:
    ns = _parse("transfer", args, "Pick each parameterization's best (lr, damping) at the base width from a sweep "
                "and train it at study.widths. Refuses a base width without a finite optimum, and one whose "
                "optimum sits at the grid edge unless --allow-edge.",
                lambda p: (_plan_flags(p, "print the choice and the plan"),
                           p.add_argument("--allow-edge", action="store_true",
                                          help="transfer an optimum that lies at the edge of its grid")),
                positionals=[STUDY_ARG])
    from . import study as study_mod
    from .errors import raise_all

    study = _open_study(ns.study)
    cfg = compose_valid([*study.spec()["overrides"], *_study_overrides(ns.overrides)])
    study_mod.check_same_base(study, cfg)
    if cfg.study.widths is None:
        raise UsageError("study.widths", "transfer needs the target widths.", "e.g. study.widths=[256,1024,2048].")
    widths = check_widths("study.widths", cfg.study.widths, minimum=cfg.model.base_width)
    grid = study_mod.check(cfg)
    base = cfg.model.base_width
    best = study_mod.select_best(study, cfg.study.metric, base)
    usable = [p for p in grid.params if best.get(p, {}).get("lr") is not None]
    refusals = []
    for param in grid.params:  # a transfer needs a finite optimum at the base width: refuse before launching
        if param not in best:
            refusals.append(UsageError("study.params", f"{param}: no trial at the base width {base}.",
                                       f"sweep it first (muso sweep ... study.params=[{param}])."))
        elif best[param]["lr"] is None:
            e = best[param]["problem"]
            refusals.append(UsageError(e.key, f"{param}: no finite optimum at the base width: {e.problem}.",
                                       e.fix + (f"; or transfer the others only (study.params=[{','.join(usable)}])"
                                                if usable else "") + "."))
    raise_all(refusals)
    best = {param: best[param] for param in grid.params}
    for param, b in best.items():
        for axis, side in b["edge"].items():
            problem = (f"{param}: the best {axis} at the base width, {b[axis]:.4g}, is at the grid edge (the "
                       f"{'lowest' if side == 'low' else 'highest'} {axis} tried): the optimum may lie beyond.")
            if not ns.allow_edge:
                raise UsageError(f"study.{axis}", problem,
                                 f"widen study.{axis} {'below' if side == 'low' else 'above'} {b[axis]:.4g} "
                                 f"(muso refine {study.path} extends it), or pass --allow-edge to transfer it anyway.")
            print(f"warning: {problem} Transferring it anyway (--allow-edge).", file=sys.stderr)
    _print_best(best, cfg)
    planned = study_mod.plan_transfer(study, best, widths, grid.seeds, runtime=to_container(cfg))
    if ns.dry_run:
        _print_plan(study.path, planned)
        return 0
    trials = study.add(planned)
    study.record_transfers(best, trials, widths)
    _print_plan(study.path, trials)
    return _launch_and_summarise(study, trials, cfg, ns.no_launch)


def _print_best(best: dict, cfg) -> None:
    print(f"best setting at base width {cfg.model.base_width} by final {cfg.study.metric}:")
    for param, b in best.items():
        damping = "" if b["damping"] is None else f" damping={b['damping']:.3g}"
        partial = "" if b["finished"] == b["planned"] else f" (from {b['finished']}/{b['planned']} finished trials)"
        flags = [f"{a} at the grid edge" for a in b["edge"]] + [f"stability-bound in {a}" for a in b["stability_bound"]]
        print(f"  {param:>6}: lr={b['lr']:.4g}{damping}  {cfg.study.metric}={b['value']:.4f}{partial}"
              + (f"  ({'; '.join(flags)})" if flags else ""))


def cmd_refine(args: list[str]) -> int:
    ns = _parse("refine", args, "Add grid points at half the current step on both sides of each cell's optimum "
                "(one step beyond a grid edge), run them, and repeat until the step near every optimum is at most "
                "study.refine_to octaves or every verdict is decided, within study.refine_budget trials.",
                lambda p: _plan_flags(p, "print the next round's plan"), positionals=[STUDY_ARG])
    import time

    from . import report, study as study_mod, verdict

    study = _open_study(ns.study)
    cfg = compose_valid([*study.spec()["overrides"], *_study_overrides(ns.overrides)])
    study_mod.check_same_base(study, cfg)
    grid = study_mod.check(cfg)
    settings = verdict.check(cfg.study)
    refine_to, budget = study_mod.check_refine(cfg.study)
    metric, base = cfg.study.metric, cfg.model.base_width
    used, started, rounds = 0, time.time(), 0
    while True:
        judged = verdict.judge(study_mod.points(study, metric), base, settings, study.transfers())
        open_params = [p for p in grid.params  # a decided verdict needs no finer grid
                       if judged["params"].get(p, {}).get("verdict") not in verdict.DECIDED]
        planned, notes = study_mod.plan_refine(study, metric, open_params, refine_to, grid.seeds,
                                               runtime=to_container(cfg))
        to_run = {t.id for t in planned if study.status(t) not in track.FINAL_STATUSES}
        if not to_run:
            reason = ("every verdict is decided" if not open_params else
                      f"every optimum is resolved to {refine_to:g} octave or has no optimum to refine around")
            print(f"refine: done after {rounds} round(s), {used} trials run in {time.time() - started:.0f} s: "
                  f"{reason}.")
            break
        if used + len(to_run) > budget:
            print(f"refine: round {rounds + 1} needs {len(to_run)} trials, {budget - used} left of study.refine_budget="
                  f"{budget}: stopped after {rounds} round(s), {used} trials run in {time.time() - started:.0f} s. "
                  "Raise study.refine_budget to go on.")
            break
        print(f"refine round {rounds + 1}: {len(to_run)} new trials (budget {budget}, {used} used) for "
              f"{', '.join(open_params)}")
        if ns.dry_run:
            _print_plan(study.path, [t for t in planned if t.id in to_run])
            return 0
        trials = study.add(planned)
        code = _launch_and_summarise(study, trials, cfg, ns.no_launch)
        if ns.no_launch or code == 130:
            return code
        used += len(to_run)
        rounds += 1
    for note in notes:
        print(f"  {note}")
    print("verdict:")
    for line in report.verdict_lines(judged):
        print(f"  {line}")
    return 0


def cmd_status(args: list[str]) -> int:
    ns = _parse("status", args, "Counts of a study's trials by status.",
                lambda p: (p.add_argument("--list", action="store_true", help="one line per trial"),
                           p.add_argument("--pending", action="store_true",
                                          help="print only the indices still to run, as an sbatch --array spec")),
                positionals=[STUDY_ARG])
    study = _open_study(ns.study)
    from collections import Counter

    trials = study.trials()
    statuses = {t.index: study.status(t) for t in trials}
    if ns.pending:
        print(_ranges(sorted(i for i, s in statuses.items() if s in track.TO_RUN)))
        return 0
    if ns.list:
        for t in trials:
            print(f"{t.index:>5}  {t.id}  {t.phase:<8}  {statuses[t.index]:<8}  {t.label()}")
    counts = Counter(statuses.values())
    by_phase = Counter((t.phase, statuses[t.index]) for t in trials)
    print(f"{study.path}: {len(trials)} trials: " + ", ".join(
        f"{counts[k]} {k}" for k in track.STATUSES))
    for phase in sorted({t.phase for t in trials}):
        print(f"  {phase:<8} " + ", ".join(f"{by_phase[phase, k]} {k}" for k in
                                           track.STATUSES if by_phase[phase, k]))
    return 0


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] → '0-2,5,7-8' (an sbatch --array spec)."""
    parts, start = [], None
    for i, x in enumerate(indices):
        if start is None:
            start = x
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            parts.append(f"{start}-{x}" if x != start else str(x))
            start = None
    return ",".join(parts)


def cmd_run_trial(args: list[str]) -> int:
    ns = _parse("run-trial", args, "Run trial <index> of a study (skipped when finished). What launchers and "
                "`sbatch --array` call: array task i runs trial i.",
                lambda p: p.add_argument("--requeue", type=int, metavar="N", default=0,
                                         help="under Slurm: when signalled (USR1/USR2/TERM) checkpoint, requeue "
                                              "this task and exit; at most N times"),
                positionals=[STUDY_ARG, ("index", {"type": int, "help": "the trial's index in trials.jsonl"})])
    if ns.overrides:
        raise UsageError("overrides", f"run-trial takes no overrides (got {' '.join(ns.overrides)}).",
                         "a trial runs with the config stored in its study's trials.jsonl.")
    from .launch import SLURM_STOP_SIGNALS, requeue_self, run_trial
    from .stop import Interrupted, graceful_stop

    study = _open_study(ns.study)
    trial = study.trial(ns.index)
    if study.status(trial) in track.FINAL_STATUSES:
        print(f"trial {ns.index} ({trial.label()}): finished already ({study.status(trial)})")
        return 0
    try:
        with graceful_stop(SLURM_STOP_SIGNALS if ns.requeue else None):
            result = run_trial(study, trial)
    except Interrupted:
        print(f"trial {ns.index} interrupted; a checkpoint is in {study.trial_dir(trial)}", file=sys.stderr)
        if ns.requeue:
            requeue_self(ns.requeue)
        return 130
    if result["status"] == track.RUNNING:
        holder = result.get("holder") or {}
        print(f"trial {ns.index} ({trial.label()}): running elsewhere (host {holder.get('host', '?')}, "
              f"pid {holder.get('pid', '?')}); not started here")
        return 0
    print(f"trial {ns.index} ({trial.label()}): {result['status']}")
    if result["status"] == track.FAILED:
        print(f"  {result.get('error', '')}", file=sys.stderr)
    return 1 if result["status"] == track.FAILED else 0


def cmd_report(args: list[str]) -> int:
    ns = _parse("report", args, "The verdict per parameterization (transfers / drifts / undecided, with intervals "
                "over seeds), then tables and plots: report.json, report.md, results.parquet/csv, loss_vs_lr.png, "
                "drift.png, heatmap_<param>.png, curves.png.",
                lambda p: p.add_argument("--out", help="report folder (default: <study>/report)"),
                positionals=[STUDY_ARG])
    from . import report, verdict
    from .study import check_metric

    study = _open_study(ns.study)
    cfg = compose_valid([*study.spec()["overrides"], *_study_overrides(ns.overrides)], check_data=False)
    check_metric(cfg.study.metric)
    settings = verdict.check(cfg.study)
    out = Path(ns.out) if ns.out else study.path / "report"
    res = report.build(study, out, cfg.study.metric, cfg.model.base_width, settings)
    print("verdict:")
    for line in report.verdict_lines(res["verdict"]):
        print(f"  {line}")
    skipped = ", ".join(f"{v} {k}" for k, v in res["skipped"].items() if v)
    print(f"{len(res['results'])} trial results" + (f" (skipped: {skipped})" if skipped else ""))
    headline = res["tables"].get("headline")
    if headline is not None and not headline.empty:
        print(f"headline ({cfg.study.metric} of the transferred setting per width):")
        print(headline.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    transferred = res["tables"].get("transferred")
    if transferred is not None and not transferred.empty:
        acc = transferred.pivot_table(index="param", columns="width", values="test_acc", dropna=False)
        acc.columns = [f"w{w}" for w in acc.columns]
        print("test accuracy of the transferred setting per width (blank: diverged):")
        print(acc.reset_index().to_string(index=False, na_rep="", float_format=lambda v: f"{v:.4f}"))
    print(f"report: {out / 'report.md'}")
    return 0


def _timestamp() -> str:
    from datetime import datetime
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": cmd_run,
    "params": cmd_params,
    "coord-check": cmd_coord_check,
    "sweep": cmd_sweep,
    "refine": cmd_refine,
    "transfer": cmd_transfer,
    "status": cmd_status,
    "run-trial": cmd_run_trial,
    "report": cmd_report,
}
