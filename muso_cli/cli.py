"""The ``muso`` command: subcommand dispatch, Hydra composition and friendly errors.

Every subcommand takes Hydra overrides (``key=value``, ``group=option``). Bad input is reported before any work
starts as one paragraph naming the key and the fix, with exit status 2; ``MUSO_DEBUG=1`` adds the traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Sequence

from . import config, track
from .config import CONF_DIR, ConfigShown, search_path_override
from .errors import UsageError, raise_all
from .logs import to_console
from .validate import compose_valid, validate

USAGE = """usage: muso <command> [overrides ...]

commands:
  run          one training run; a plain Hydra app (`muso run -m key=a,b` is a multirun)
  params       show what the parameterization does to each parameter (role, width multiplier, init, lr, damping)
  coord-check  per-layer feature updates against width: plot, slopes and a verdict per layer
  sweep        tune learning rate × damping at the base width (a study)
  refine       add grid points near each optimum of a study until it is resolved (study.refine_to)
  transfer     train a study's best setting at larger widths
  report       the verdict per parameterization (transfers / fails / undecided), tables and plots
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
    from .completion import shell_completion

    completion = shell_completion(argv, list(COMMANDS))
    if completion is not None:
        return completion
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"muso: error: {command}: is not a muso command. Fix: use one of {', '.join(COMMANDS)} (muso --help).",
              file=sys.stderr)
        return 2
    if command != "run":  # muso run is a Hydra app: Hydra's job logging takes the muso logger
        to_console()
    config.SHOW_FIRST_COMPOSITION["on"] = False
    try:
        return COMMANDS[command](args) or 0
    except ConfigShown:
        return 0
    except BrokenPipeError:  # `muso status S | head`: the reader left; end quietly, as a killed-by-SIGPIPE tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except UsageError as e:
        if os.environ.get("MUSO_DEBUG"):
            traceback.print_exc()
        print(f"muso {command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine, not the input: a full disk, a folder that vanished, a read-only mount
        if os.environ.get("MUSO_DEBUG"):
            traceback.print_exc()
        print(f"muso {command}: error: {e.filename or 'a file'}: {e.strerror or e}. Fix: free space or choose a folder "
              "you can write to; finished results are kept and a rerun of the same command goes on from them.",
              file=sys.stderr)
        return 2


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are muso's usage errors: the argument, the problem and the fix (exit status 2)."""

    def error(self, message: str):
        missing = re.search(r"the following arguments are required: (.+)", message)
        if missing:
            names = [n for n in missing.group(1).split(", ") if n != "overrides"] or ["overrides"]
            raise UsageError(names[0], f"is missing: `{self.prog}` needs {', '.join(names)}.",
                             f"usage: {self.format_usage().strip().removeprefix('usage: ')}")
        unknown = re.search(r"unrecognized arguments: (.+)", message)
        if unknown:
            raise UsageError(unknown.group(1).split()[0], f"is not an option of `{self.prog}` (unrecognized: "
                             f"{unknown.group(1)}).", f"see `{self.prog} --help` for its options.")
        raise UsageError(self.prog.split()[-1], f"{message}.", f"see `{self.prog} --help`.")


def _help_epilog() -> str:
    """The config groups and their options, as Hydra's own --help lists them."""
    from .config import group_options

    groups = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir())
    lines = ["Config groups (group=option):"]
    lines += [f"  {g:<10} {', '.join(group_options(g))}" for g in groups]
    lines += ["Any key can be overridden (key=value), e.g. model.width=1024 optimizer.lr=0.05 study.lr=log2:-8:0;",
              "`--cfg job` prints the composed config with every key. Grammar:",
              "https://hydra.cc/docs/advanced/override_grammar/basic/"]
    return "\n".join(lines)


def _parse(prog: str, args: Sequence[str], description: str,
           extra: Callable[[argparse.ArgumentParser], None] | None = None,
           positionals: Sequence[tuple[str, dict]] = ()) -> argparse.Namespace:
    """Options of a subcommand; after its ``positionals``, every other argument is a Hydra override."""
    parser = _ArgumentParser(prog=f"muso {prog}", description=description, epilog=_help_epilog(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, kwargs in positionals:
        parser.add_argument(name, **kwargs)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.width=1024 optimizer=kfac")
    parser.add_argument("--cfg", choices=["job"], help="print the composed config and exit")
    parser.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                        help="a folder of your own config groups (conf/model/mynet.yaml ...), searched after "
                             "muso's; repeatable; recorded as the hydra.searchpath override")
    if extra:
        extra(parser)
    ns = parser.parse_intermixed_args(args)
    config.SHOW_FIRST_COMPOSITION["on"] = ns.cfg == "job"
    ns.overrides = _with_config_dirs(ns.overrides, ns.config_dir)
    return ns


def _with_config_dirs(overrides: list[str], dirs: Sequence[str]) -> list[str]:
    """``overrides`` with ``--config-dir`` folders as the hydra.searchpath override (what a study records, so that
    transfer and report find the same configs)."""
    if not dirs:
        return overrides
    if any(o.partition("=")[0].lstrip("+~") == "hydra.searchpath" for o in overrides):
        raise UsageError("hydra.searchpath", "is given twice: as an override and with --config-dir.",
                         "give the folders one way (--config-dir DIR, or hydra.searchpath=[file://...]).")
    return [*overrides, search_path_override(dirs)]


# ------------------------------------------------------------------------------------------------------
# muso run: a plain Hydra app.

_RUN_RESULTS: list[dict] = []


def cmd_run(args: list[str]) -> int:
    """Validate every job of the (multi)run first (--yes: a model above setup.MAX_PARAMETERS or the device's
    memory too), check the output folder it names, then hand the command line to Hydra."""
    from hydra._internal.utils import get_args_parser

    from .setup import below_base_width, check_size, parse_output_folder
    from .stop import Interrupted

    yes, args = "--yes" in args, [a for a in args if a != "--yes"]
    ns = get_args_parser().parse_args(args)
    if not (ns.help or ns.hydra_help or ns.info or ns.shell_completion):
        dirs = [ns.config_dir] if ns.config_dir else []  # Hydra's own --config-dir, which runs the job
        for overrides in config.expand_sweeps(ns.overrides) if ns.multirun else [ns.overrides]:
            cfg = compose_valid(_with_config_dirs(overrides, dirs))
            if cfg.launcher.name != "local":
                raise UsageError("launcher", f"launcher={cfg.launcher.name} chooses how a study's trials run; "
                                 "muso run trains one run in this process and would ignore it.",
                                 "for a study use muso sweep launcher=...; to spread a multirun use Hydra's "
                                 "launchers: muso run -m hydra/launcher=submitit_slurm (or joblib) key=a,b.")
            raise_all([check_size(cfg, cfg.model.width, "model.width", yes=yes)])
            if below_base_width(cfg):
                print(f"warning: {below_base_width(cfg)}", file=sys.stderr)
        for key in ("hydra.sweep.dir" if ns.multirun else "hydra.run.dir",):  # Hydra's own error is a traceback
            given = [o.split("=", 1)[1] for o in ns.overrides if o.split("=", 1)[0].lstrip("+") == key]
            if given and "${" not in given[-1]:
                parse_output_folder(key, given[-1])
    _RUN_RESULTS.clear()
    argv0, sys.argv, full_error = sys.argv, ["muso-run", *args], os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises what it would print as a traceback; main says it in a line
    try:
        _hydra_run()
    except Interrupted:  # _run_task said where the checkpoint is
        return 130
    except OSError as e:  # Hydra's files or the run's: its folder
        raise UsageError("hydra.run.dir", f"the run's files cannot be written ({e.filename or 'a file'}: "
                         f"{e.strerror or e}).", "free space on its disk, or set hydra.run.dir=<a folder>.") from None
    finally:
        sys.argv = argv0
        os.environ.pop("HYDRA_FULL_ERROR") if full_error is None else os.environ.update(HYDRA_FULL_ERROR=full_error)
    return 1 if any(r.get("status") == track.FAILED for r in _RUN_RESULTS) else 0


def _run_task(cfg) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from . import trainers
    from .stop import Interrupted, graceful_stop

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    validate(cfg)
    try:
        with graceful_stop():
            result = trainers.run(cfg, out_dir, quiet=not cfg.train.progress)
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
                "multipliers relative to the base width, and the lr the optimizer steps it with at this width.",
                lambda p: p.add_argument("--json", action="store_true", help="print JSON instead of a table"))
    cfg = compose_valid(ns.overrides, check_data=False)
    from . import data as data_mod, optim
    from .setup import below_base_width, build_model_and_plan

    if below_base_width(cfg):
        print(f"warning: {below_base_width(cfg)}", file=sys.stderr)
    input_shape, num_classes = data_mod.spec(cfg.data)
    model, plan = build_model_and_plan(cfg, input_shape, num_classes, device="meta")
    lrs = optim.step_lrs(optim.build(cfg.optimizer, model, plan, cfg.train.loss))
    rows = [{**row, "lr": lrs.get(row["name"])} for row in plan.rows()]  # a forward multiplier has none
    if ns.json:
        print(json.dumps({"param": plan.param, "optimizer": plan.optimizer, "damping_rule": plan.damping_rule,
                          "width": cfg.model.width, "base_width": cfg.model.base_width, "rows": rows}, indent=2))
        return 0
    import pandas as pd

    table = pd.DataFrame(rows)
    table["shape"] = table["shape"].map(lambda s: "×".join(map(str, s)))
    note = optim.params_note(cfg.optimizer)  # e.g. Muon's adjust_lr_fn, a shape rule outside the table
    print(f"param={plan.param} optimizer={plan.optimizer}{' ' + note if note else ''} damping_rule={plan.damping_rule or '-'} "
          f"model={cfg.model.name} width={cfg.model.width} base_width={cfg.model.base_width}")
    print(table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    return 0


# ------------------------------------------------------------------------------------------------------
# muso coord-check

def cmd_coord_check(args: list[str]) -> int:
    ns = _parse("coord-check", args, "Per-layer RMS of the feature update Δh (Δf at the readout) against width "
                "after a few steps on one fixed batch; writes coord.csv, slopes.csv, verdict.csv, coord.png.",
                lambda p: (p.add_argument("--strict", action="store_true",
                                          help="exit 1 unless every hidden Δh and the output Δf are flat"),
                           p.add_argument("--yes", action="store_true", help="check a width above the size limit")))
    cfg = compose_valid(ns.overrides)
    from . import coord
    from .setup import parse_output_folder

    widths = coord.parse_coord(cfg, yes=ns.yes)
    c = cfg.coord
    out = parse_output_folder("coord.out", c.out or f"outputs/coord/{cfg.param.name}-{cfg.optimizer.name}-"
                              f"{time.strftime('%Y-%m-%d_%H-%M-%S')}")
    print(f"coord-check: {cfg.model.name}, {cfg.optimizer.name} lr={cfg.optimizer.lr}, param={cfg.param.name}, "
          f"widths {widths}, {c.steps} steps, batch {c.batch_size}", file=sys.stderr)
    res = coord.run(cfg, out)
    verdicts = res["verdicts"]
    print(f"slopes of log2 RMS Δh vs log2 width at step {int(verdicts.step.max())}, fitted from width "
          f"{res['fit_from']:g} (slope_all: from the smallest width); tolerance {c.tolerance}")
    print(verdicts.to_string(index=False, float_format=lambda v: f"{v:+.3f}", na_rep="-"))
    for row in res["unobserved"]:  # in verdict.csv as "not observed"
        print(f"not observed: {row['layer']} ({row['role']}): {row['why']}")
    print(f"→ {out}/coord.png, coord.csv, slopes.csv, verdict.csv")
    judged = verdicts[verdicts.role.isin(["hidden", "output"])]
    return 1 if ns.strict and (judged.verdict != "flat").any() else 0


# ------------------------------------------------------------------------------------------------------
# Studies: muso sweep / transfer / status / run-trial

STUDY_ARG = ("study", {"help": "the study folder (printed by muso sweep)"})


def _print_plan(study_path, trials) -> None:
    import pandas as pd

    df = pd.DataFrame([{"param": t.param, "width": t.width, "depth": t.depth or 0, "lr": t.lr, "damping": t.damping,
                        "seed": t.seed} for t in trials])
    print(f"study {study_path}: {_entries_and_runs(trials)}")
    for (param, width, depth), g in df.groupby(["param", "width", "depth"]):
        damp = sorted(g.damping.dropna().unique())
        at = f"width {width:>5}" + (f" depth {depth:>3}" if depth else "")  # depth 0: a model without depth
        print(f"  {param:>6} {at}: {g.lr.nunique()} lr {_grid(sorted(g.lr.unique()))}"
              + (f" × {len(damp)} damping {_grid(damp)}" if damp else "") + f" × {g.seed.nunique()} seeds")


def _entries_and_runs(trials) -> str:
    """'8 trials (4 runs: a base-width run serves every parameterization)', or '8 trials' when each is a run."""
    runs = len({t.id for t in trials})
    if runs == len(trials):
        return f"{len(trials)} trials"
    return f"{len(trials)} trials ({runs} runs: a base-width run serves every parameterization)"


def _grid(values) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values) + "]" if len(values) <= 6 else \
        f"[{values[0]:.3g} … {values[-1]:.3g}]"


def _plan_flags(parser: argparse.ArgumentParser, dry_run_help: str, *, sized: bool = True) -> None:
    """--dry-run and --no-launch; --yes where the command plans new sizes (``sized``: sweep and transfer; refine
    adds settings at widths the study has already trained, within study.refine_budget)."""
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    if sized:
        parser.add_argument("--yes", action="store_true", help="run a grid larger than study.max_trials, or widths "
                            "whose model is above the size limit (setup.MAX_PARAMETERS or the device's memory)")
    parser.add_argument("--no-launch", action="store_true",
                        help="write the study's trial list and run nothing (for your own sbatch --array line)")


def _launch_and_summarise(study, trials, cfg, no_launch: bool = False) -> int:
    from . import workflow
    from .stop import Interrupted

    if no_launch:
        (study.path / "slurm").mkdir(exist_ok=True)  # Slurm does not create the folder of --output
        path = shlex.quote(str(study.path))
        print(f"trials written, none launched. Run them with e.g.\n  sbatch --array=$(muso status {path} --pending) "
              f"--output={shlex.quote(str(study.path / 'slurm'))}/%A_%a.out scripts/slurm_array.sh {path}\n"
              f"or `muso run-trial {path} <index>`.")
        return 0
    try:
        counts = workflow.run(study, trials, cfg)
    except Interrupted:
        print(f"interrupted: finished results are kept; run the same command again to finish {study.path}",
              file=sys.stderr)
        return 130
    summary = ", ".join(f"{counts[k]} {k}" for k in track.STATUSES if counts[k])
    print(f"{study.path}: {sum(counts.values())} runs: {summary}")
    if cfg.logger.mode == "offline":
        runs = shlex.quote(str(Path(cfg.logger.dir or study.path) / "wandb"))
        print(f"W&B runs are offline in {runs}; upload them with: wandb sync {runs}/offline-run-*")
    return 1 if counts[track.FAILED] else 0


def _trust_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust", action="store_true",
                        help="run what a study made by someone else names as code (_target_, a config search path, "
                             "launcher.setup, a trainer's command); without it such a study is refused")


def cmd_sweep(args: list[str]) -> int:
    ns = _parse("sweep", args, "Grid of learning rate × damping (× seeds) per parameterization at the base width "
                "(and at study.widths); resumable: finished trials are skipped, failed ones retried.",
                lambda p: _plan_flags(p, "print the plan and its size"))
    from . import workflow

    sweep = workflow.plan_sweep(ns.overrides, yes=ns.yes)
    if ns.dry_run:
        _print_plan(sweep.folder, sweep.trials)
        runs = len({t.id for t in sweep.trials})
        done = sweep.finished_runs()
        print(f"{done} of {runs} runs finished already; {runs - done} to run (launcher={sweep.cfg.launcher.name})")
        return 0
    study, trials, added = workflow.write_sweep(sweep)
    if added:
        print(f"study {study.path}: its grid now records {' '.join(added)} (refine and transfer include them)")
    _print_plan(study.path, trials)
    return _launch_and_summarise(study, trials, sweep.cfg, ns.no_launch)


def cmd_transfer(args: list[str]) -> int:
    ns = _parse("transfer", args, "Pick each parameterization's best (lr, damping) at the base width from a sweep "
                "and train it at transfer.widths. Refuses a base width without a finite optimum, and one whose "
                "optimum sits at the grid edge unless --allow-edge.",
                lambda p: (_plan_flags(p, "print the choice and the plan"), _trust_flag(p),
                           p.add_argument("--allow-edge", action="store_true",
                                          help="transfer an optimum that lies at the edge of its grid")),
                positionals=[STUDY_ARG])
    from . import workflow

    transfer = workflow.plan_transfer(ns.study, ns.overrides, allow_edge=ns.allow_edge, trust_it=ns.trust, yes=ns.yes)
    for warning in transfer.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    _print_best(transfer.best, transfer.cfg)
    if ns.dry_run:
        _print_plan(transfer.study.path, transfer.trials)
        return 0
    trials = workflow.write_transfer(transfer)
    _print_plan(transfer.study.path, trials)
    return _launch_and_summarise(transfer.study, trials, transfer.cfg, ns.no_launch)


def _print_best(best: dict, cfg) -> None:
    from .workflow import study_scale

    scale, base = study_scale(cfg)
    print(f"best setting at base {scale} {base} by final {cfg.study.metric}:")
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
                lambda p: (_plan_flags(p, "print the next round's plan", sized=False), _trust_flag(p)), positionals=[STUDY_ARG])
    from . import workflow

    refinement = workflow.Refinement(ns.study, ns.overrides, trust_it=ns.trust)
    study, budget = refinement.study, refinement.spec.refine_budget
    while (rnd := refinement.next_round()) is not None:
        print(f"refine round {refinement.rounds + 1}: {len(rnd.to_run)} new trials (budget {budget}, "
              f"{refinement.used} used) for {', '.join(rnd.params)}")
        if ns.dry_run:
            _print_plan(study.path, [t for t in rnd.planned if t.id in rnd.to_run])
            return 0
        code = _launch_and_summarise(study, refinement.write(rnd), refinement.cfg, ns.no_launch)
        if ns.no_launch or code == 130:
            return code
    print(f"refine: {refinement.stopped}")
    for note in refinement.notes:
        print(f"  {note}")
    verdicts = ", ".join(f"{p} {pv['verdict']}" for p, pv in refinement.judged["params"].items())
    print(f"verdicts now: {verdicts} (muso report {shlex.quote(str(study.path))} says why)")
    return 0


def cmd_status(args: list[str]) -> int:
    ns = _parse("status", args, "Counts of a study's trials by status.",
                lambda p: (p.add_argument("--list", action="store_true", help="one line per trial"),
                           p.add_argument("--pending", action="store_true",
                                          help="print only the indices still to run, as an sbatch --array spec")),
                positionals=[STUDY_ARG])
    if ns.overrides:
        raise UsageError("overrides", f"muso status takes no overrides (got {' '.join(ns.overrides)}).",
                         "it reads the study folder as it is: muso status <study> [--list] [--pending].")
    from collections import Counter

    from .study.store import Study

    study = Study.open(ns.study)

    trials = study.trials()
    statuses = {t.index: study.status(t) for t in trials}
    runs = {}  # trial id → its first entry: a base-width run serves several entries and runs once
    for t in trials:
        runs.setdefault(t.id, t)
    if ns.pending:
        print(_ranges(sorted(t.index for t in runs.values() if statuses[t.index] in track.TO_RUN)))
        return 0
    if ns.list:
        for t in trials:
            shared = "" if runs[t.id] is t else f"  (= run of entry {runs[t.id].index})"
            print(f"{t.index:>5}  {t.id}  {t.phase:<8}  {statuses[t.index]:<8}  {t.label()}{shared}")
    counts = Counter(statuses[t.index] for t in runs.values())
    by_phase = Counter((t.phase, statuses[t.index]) for t in trials)
    print(f"{study.path}: {_entries_and_runs(trials)}: " + ", ".join(f"{counts[k]} {k}" for k in track.STATUSES)
          + ("" if len(runs) == len(trials) else " (runs)"))
    for phase in sorted({t.phase for t in trials}):
        print(f"  {phase:<8} entries: " + ", ".join(f"{by_phase[phase, k]} {k}" for k in
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
                lambda p: (_trust_flag(p),
                           p.add_argument("--requeue", type=int, metavar="N", default=0,
                                          help="under Slurm: when signalled (USR1/USR2/TERM) checkpoint, requeue "
                                               "this task and exit; at most N times")),
                positionals=[STUDY_ARG, ("index", {"type": int, "help": "the trial's index in trials.jsonl"})])
    if ns.overrides:
        raise UsageError("overrides", f"run-trial takes no overrides (got {' '.join(ns.overrides)}).",
                         "a trial runs with the config stored in its study's trials.jsonl.")
    from . import workflow
    from .launch import SLURM_STOP_SIGNALS, check_trial_config, requeue_self, run_trial
    from .stop import Interrupted, graceful_stop
    from .study.store import Study

    study = Study.open(ns.study)
    trial = study.trial(ns.index)
    if study.status(trial) in track.FINAL_STATUSES:
        print(f"trial {ns.index} ({trial.label()}): finished already ({study.status(trial)})")
        return 0
    workflow.trusted_to_run(study, trial, ns.trust)
    from omegaconf import OmegaConf

    invalid = check_trial_config(OmegaConf.create(trial.config))
    if invalid:
        raise UsageError(f"trial {ns.index}", invalid.removeprefix("the trial's config in trials.jsonl is not valid: ")
                         + " (its config in trials.jsonl was edited?)",
                         "restore trials.jsonl, or plan the trial again with the command that made it.")
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
    ns = _parse("report", args, "The verdict per parameterization (transfers / fails / undecided: the transferred "
                "setting's regret against δ), then tables and plots: report.json, report.md, results.parquet/csv, "
                "loss_vs_lr.png, drift.png, heatmap_<param>.png, curves.png. With --from, of runs made elsewhere.",
                lambda p: (p.add_argument("--out", help="report folder (default: <study>/report)"),
                           p.add_argument("--from", dest="source", metavar="SOURCE",
                                          help="runs made elsewhere: a CSV file (param,width,lr,seed,<metric>[,damping,"
                                               "status,phase]) or wandb:<folder of offline runs | entity/project>"),
                           p.add_argument("--map", action="append", default=[], metavar="FIELD=KEY",
                                          help="with --from wandb:…, where a field is (e.g. width=config.d_model)")),
                positionals=[("study", {"nargs": "?", "help": "the study folder (printed by muso sweep)"})])
    from . import external, report, workflow

    if ns.study is not None and "=" in ns.study:  # an override, taken for the optional study folder
        ns.overrides.insert(0, ns.study)
        ns.study = None
    if (ns.study is None) == (ns.source is None):
        raise UsageError("study", "muso report takes a study folder or --from SOURCE (one of them).",
                         "e.g. muso report studies/<name>, or muso report --from runs.csv --out report/.")
    if ns.source is None:
        res, settings, out = workflow.report(ns.study, ns.overrides, ns.out)
    else:
        res, settings, out = external.report(ns.source, ns.overrides, ns.out, ns.map)
    print("verdict:")
    for line in report.verdict_lines(res["verdict"]):
        print(f"  {line}")
    for line in report.summary_lines(res, settings.study.metric):
        print(line)
    if res["unreadable"]:
        shown = ", ".join(res["unreadable"][:3]) + (" …" if len(res["unreadable"]) > 3 else "")
        print(f"unreadable (a result or metrics file that is not whole, or not numbers): {shown}; delete such a "
              "folder and run the sweep again to retrain it", file=sys.stderr)
    print(f"report: {out / 'report.md'}")
    return 0


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
