"""Runs made anywhere: the verdict, tables and figures of ``muso report`` for runs muso did not launch, from a CSV
file (one row per run) or from W&B (an offline run folder, or a project online).

A CSV (``muso report --from runs.csv``) has one row per run and the columns

    param   width   lr   seed   <metric>   [damping]   [status]   [phase]

``<metric>`` is the study's selection metric (``study.metric``: train_loss, test_loss or test_acc); ``status``
(ok | diverged | failed; default: ok where the metric is finite, diverged where it is not) and ``damping`` and
``phase`` (sweep | transfer | verify, shown in the tables) are optional. The base width is the smallest width;
there every parameterization is the same run, so a base-width run listed under one serves all of them.

W&B (``muso report --from wandb:<folder with offline-run-*>`` or ``--from wandb:<entity>/<project>``): each run's
config and summary, under muso's own names (param.name, model.width, optimizer.lr, optimizer.damping, seed, and
the summary's status and final/<metric>, as muso's trials log them); ``--map width=config.d_model`` (repeatable)
names other keys (``config.<dotted key>`` or ``summary.<key>``).

Nothing here imports or runs anything a run names: values are read as data, and a row that cannot be read is
refused with its line and column.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from . import track
from .errors import UsageError
from .parametrize import PARAMS
from .study.spec import METRICS

FIELDS = ("param", "width", "lr", "damping", "seed")
DEFAULT_KEYS = {"param": "config.param.name", "width": "config.model.width", "lr": "config.optimizer.lr",
                "damping": "config.optimizer.damping", "seed": "config.seed", "status": "summary.status"}


class ExternalRuns:
    """Runs read from elsewhere, as the report reads a study: a name, entries (what muso_cli.verdict reads), no
    recorded transfer (the verdict transfers the base width's fitted optimum), no per-run metrics files."""

    has_metrics = False

    def __init__(self, name: str, rows: pd.DataFrame, metric: str):
        self.name, self.rows, self.metric = name, _shared_base(rows), metric

    def entries(self, metric: str) -> list[dict]:
        out = []
        sign = -1.0 if METRICS[metric] == "max" else 1.0
        for i, r in enumerate(self.rows.itertuples(index=False)):
            value = getattr(r, metric)
            status = r.status
            objective = math.inf if status == track.DIVERGED else (sign * value if status == track.OK else math.nan)
            final = {metric: None if status != track.OK else float(value)}
            out.append({"index": i, "trial_id": f"run{i:05d}", "phase": r.phase, "param": r.param,
                        "width": int(r.width), "lr": float(r.lr), "damping": float(r.damping), "seed": int(r.seed),
                        "status": status, "objective": objective, "result": {"status": status, "final": final},
                        "config": {}})
        return out

    def transfers(self) -> dict:
        return {}

    def metrics(self, trial_id: str) -> list[dict] | None:
        return None

    def folder(self, trial_id: str) -> str:
        return trial_id


def _shared_base(df: pd.DataFrame) -> pd.DataFrame:
    """At the base width (the smallest) every parameterization is the same run (muso_cli.parametrize.identity): a
    base-width run recorded under one parameterization serves each of the others that has no run of that setting."""
    base = df.width.min()
    at_base = df[df.width == base]
    extra = []
    for param in df.param.unique():
        mine = at_base[at_base.param == param]
        have = set(zip(mine.lr, mine.damping.fillna(-1), mine.seed))
        others = at_base[(at_base.param != param)
                         & ~pd.Series(list(zip(at_base.lr, at_base.damping.fillna(-1), at_base.seed)),
                                      index=at_base.index).isin(have)]
        extra.append(others.drop_duplicates(["lr", "damping", "seed"]).assign(param=param))
    return pd.concat([df, *extra], ignore_index=True)


def _checked(df: pd.DataFrame, metric: str, where: str) -> pd.DataFrame:
    """The rows with muso's columns and types, or UsageError naming the row and column."""
    missing = [c for c in ("param", "width", "lr", "seed", metric) if c not in df.columns]
    if missing:
        raise UsageError("--from", f"{where} has no column {', '.join(missing)} (it has {', '.join(map(str, df.columns))}).",
                         f"give one row per run with param, width, lr, seed and {metric} (study.metric); "
                         "damping, status and phase are optional.")
    df = df.copy()
    if "damping" not in df:
        df["damping"] = math.nan
    if "phase" not in df:
        df["phase"] = "sweep"
    for column, kind in (("width", int), ("lr", float), ("seed", int), ("damping", float), (metric, float)):
        for i, value in df[column].items():
            try:
                number = kind(value) if not (column in ("damping", metric) and pd.isna(value)) else math.nan
            except (TypeError, ValueError):
                raise UsageError("--from", f"{where}, row {i + 1}: {column} is {value!r}, not a number.",
                                 f"write numbers in the {column} column.") from None
            if column in ("width", "lr") and not number > 0:
                raise UsageError("--from", f"{where}, row {i + 1}: {column} must be > 0, got {value!r}.",
                                 f"fix the {column} column.")
        df[column] = df[column].astype(float if kind is float else int)
    bad = sorted(set(df.param) - set(PARAMS))
    if bad:
        raise UsageError("--from", f"{where}: unknown parameterization(s) {bad}.", f"use {', '.join(PARAMS)}.")
    if "status" not in df:
        df["status"] = [track.OK if math.isfinite(v) else track.DIVERGED for v in df[metric]]
    df["status"] = df.status.fillna(track.OK).astype(str)
    odd = sorted(set(df.status) - set(track.RESULT_STATUSES))
    if odd:
        raise UsageError("--from", f"{where}: unknown status {odd}.", f"use {', '.join(track.RESULT_STATUSES)}.")
    return df


def read_csv(path: str | Path, metric: str) -> ExternalRuns:
    """Runs from a CSV file (see the module docstring)."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UsageError("--from", f"cannot read {path}: {str(e).splitlines()[0]}.",
                         "give a CSV file with a header row (param,width,lr,seed,<metric>).") from None
    return ExternalRuns(path.stem, _checked(df, metric, str(path)), metric)


def _lookup(record: dict, key: str) -> Any:
    """``config.a.b`` / ``summary.k`` in a run's {config, summary}."""
    section, _, dotted = key.partition(".")
    node: Any = record.get(section, {})
    if section == "summary" and dotted in node:
        return node[dotted]
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def read_wandb(source: str, metric: str, mapping: dict[str, str] | None = None) -> ExternalRuns:
    """Runs from W&B: a folder holding offline runs (wandb/offline-run-*), or ``<entity>/<project>`` online."""
    keys = {**DEFAULT_KEYS, metric: f"summary.final/{metric}", **(mapping or {})}
    folder = Path(source)
    records = _offline(folder) if folder.exists() else _online(source)
    rows = []
    for record in records:
        row = {field: _lookup(record, key) for field, key in keys.items()}
        if row["param"] is None and row["width"] is None:
            continue  # not a trial run (a report, a run of something else)
        rows.append(row)
    if not rows:
        raise UsageError("--from", f"found no runs with {keys['param']} and {keys['width']} in {source}.",
                         "name the keys that hold them: --map param=config.<key> --map width=config.<key>.")
    df = pd.DataFrame(rows)
    df = df.drop(columns=[c for c in df.columns if df[c].isna().all() and c in ("damping", "status")])
    return ExternalRuns(folder.name if folder.exists() else source.replace("/", "-"), _checked(df, metric, source),
                        metric)


def _offline(folder: Path) -> list[dict]:
    """{config, summary} of every offline run under ``folder`` (its .wandb transaction logs)."""
    import json

    from .wandb_log import read_records

    runs = []
    for log in sorted(folder.rglob("offline-run-*/run-*.wandb")):
        config, summary = {}, {}
        for record in read_records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in record.config.update})
            elif kind == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.summary.update})
        runs.append({"config": {k: v.get("value", v) if isinstance(v, dict) and "value" in v else v
                                for k, v in config.items()}, "summary": summary})
    return runs


def _online(path: str) -> list[dict]:
    import wandb

    try:
        runs = wandb.Api(timeout=30).runs(path)
        return [{"config": dict(r.config), "summary": dict(r.summary)} for r in runs]
    except Exception as e:  # no network, no key, no such project
        raise UsageError("--from", f"cannot read the W&B project {path}: {type(e).__name__}: {str(e)[:200]}.",
                         "check the path (entity/project), WANDB_API_KEY and the network, or export the runs to "
                         "CSV.") from None


def report(source: str, overrides: list[str], out: str | None, mapping: list[str]) -> tuple[dict, object, Path]:
    """``muso report --from SOURCE``: the report of runs made elsewhere, with muso's verdict settings (conf/config.yaml's
    study section) and ``overrides`` (study.* keys) on top; the base width is the smallest. Returns what
    muso_cli.workflow.report returns: (what report.build returns, the settings, the report folder)."""
    from omegaconf import OmegaConf

    from . import report as report_mod, verdict
    from .config import compose
    from .study.spec import parse_metric
    from .workflow import check_report_folder

    bad = [o for o in overrides if not o.partition("=")[0].lstrip("+~").startswith("study.")]
    if bad:
        raise UsageError(bad[0].partition("=")[0], "muso report --from takes study.* keys only.",
                         "e.g. study.metric=test_loss or study.delta=0.01.")
    settings = OmegaConf.create({"study": OmegaConf.to_container(compose(overrides).study, resolve=True)})
    metric = parse_metric(settings.study.metric)
    keys = {}
    for pair in mapping:
        field, _, key = pair.partition("=")
        if field not in (*DEFAULT_KEYS, metric) or not key.startswith(("config.", "summary.")):
            raise UsageError("--map", f"cannot read {pair!r}.", f"write FIELD=config.<key> or FIELD=summary.<key>, FIELD "
                             f"one of {', '.join((*DEFAULT_KEYS, metric))}.")
        keys[field] = key
    runs = (read_wandb(source.removeprefix("wandb:"), metric, keys) if source.startswith("wandb:")
            else read_csv(source, metric))
    folder = check_report_folder(Path(out) if out else Path(f"report-{runs.name}"))
    base = int(runs.rows.width.min())
    res = report_mod.build(runs, folder, metric, base, verdict.parse_settings(settings.study),
                           f"{runs.name} (runs made elsewhere)")
    return res, settings, folder
