"""Study reports: the verdict first, then the tables and figures behind it.

``collect`` reads every trial's files into one pandas table (one row per trial entry with a result: grid values,
status, final/best metrics, the flattened config). The verdict (:func:`muso_cli.verdict.judge`: fitted valleys,
the transferred setting's regret against δ, transfers / fails / undecided per parameterization, the drift of the
optimum and its width law) is written as report.json and printed first in report.md; the tables are views of it:

- regret: per width above the base, the transferred setting's regret with its interval, δ and the width's verdict
  (what decides), and what would decide an undecided one;
- optima: per (param, width) the grid optimum, the fitted optimum and its interval, and its flags, or why there
  is none;
- drift: the fitted optimum's drift from the base width in octaves with its interval (a description);
- law: β of log2 lr* = a + β·log2 width with its interval, and the check that leaves the largest width out;
- compute: the trial-seconds spent at each width against tuning the base grid there;
- transferred / wider is better / headline: the transferred setting's loss and test accuracy per width.

Files written: report.json, report.md, results.parquet, results.csv, loss_vs_lr.png, drift.png (with a fitted
optimum above the base width), and where damping was swept loss_vs_damping.png and heatmap_<param>.png;
curves.png after a transfer (muso_cli.figures). Unreadable or half-written trial folders are counted and skipped,
never fatal.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import cells, figures, track, verdict
from .figures import METRIC_LABEL, ordered, setting_rows
from .study.results import UNREADABLE, points
from .study.spec import METRICS
from .study.store import Study

TITLES = {"regret": "Regret of the transferred setting (what decides)", "optima": "Optimum per width",
          "drift": "Drift of the fitted optimum (octaves from the base width)", "law": "The width law of the optimum",
          "compute": "Compute: what the transfer saved", "headline": "Transferred setting per parameterization",
          "transferred": "Transferred setting per width", "wider": "Wider is better?"}


def collect(entries: list[dict]) -> tuple[pd.DataFrame, dict[str, int]]:
    """(one row per trial entry with a result, counts of skipped entries: pending / running / unreadable).

    ``entries``: :func:`muso_cli.study.points`."""
    rows, skipped = [], {track.PENDING: 0, track.RUNNING: 0, UNREADABLE: 0}
    for e in entries:
        result = e["result"]
        if result is None:
            skipped[e["status"]] += 1
            continue
        final, best = result.get("final") or {}, result.get("best") or {}
        rows.append({"index": e["index"], "trial_id": e["trial_id"], "phase": e["phase"], "param": e["param"],
                     "width": e["width"], "lr": e["lr"], "damping": e["damping"], "seed": e["seed"],
                     "status": e["status"], "objective": e["objective"],
                     **{f"final_{k}": final.get(k) for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
                     **{f"best_{k}": best.get(k) for k in ("train_loss", "test_loss", "test_acc")},
                     "steps": result.get("steps"), "wall_seconds": result.get("wall_seconds"),
                     "device": result.get("device"),
                     **{f"config.{k}": str(v) if isinstance(v, list) else v  # lists: one parquet type per column
                        for k, v in track.flatten(e["config"], ".").items()}})
    df = pd.DataFrame(rows)
    if not df.empty:
        df["damping"] = df["damping"].astype(float)
        df["log2_lr"] = np.log2(df["lr"])
    return df, skipped


# ------------------------------------------------------------------------------------------------------
# Tables: views of the verdict

def _log2(x: float | None) -> str:
    return "" if x is None else f"{x:+.2f}"


def _notes(axes: dict) -> str:
    """The flags of an optimum, in words."""
    notes = []
    for a, info in axes.items():
        if info["edge"]:
            notes.append(f"{a} at the grid edge ({'lowest' if info['edge'] == 'low' else 'highest'} {a}): "
                         "the optimum may lie beyond")
        if info["stability_bound"]:
            notes.append(f"stability-bound: the next {'larger' if a == 'lr' else 'smaller'} {a} diverged")
        fit = info.get("fit")
        if fit is not None and not fit["bracketed"]:
            notes.append(f"the {a} valley is not bracketed: the fitted optimum may lie beyond")
    return "; ".join(notes)


def optima_table(v: dict, sign: float) -> pd.DataFrame:
    """One row per (param, width) with a grid (or no optimum): the grid optimum, the fitted optimum (log2) with its
    interval, the score in the metric's units, seeds at the optimum, settings tried, flags."""
    rows = []
    for c in v["cells"]:
        opt = c["optimum"]
        row = {"param": c["param"], "width": c["width"], "settings": c["counts"]["settings"]}
        if opt is None:
            rows.append({**row, "notes": f"no optimum: {c['problem']}: {c['fix']}"})
            continue
        if not opt["axes"] and c["width"] != v["base_width"]:
            continue  # one setting, not a grid
        row.update({"lr*": opt["lr"], "damping*": opt["damping"], "loss*": sign * opt["objective"],
                    "seeds": opt["seeds"], "notes": _notes(opt["axes"])})
        for a, info in opt["axes"].items():
            row[f"log2 {a}*"] = info["log2"]
            fit = info.get("fit")
            row[f"fitted log2 {a}*"] = _log2(fit["x_hat"]) if fit else ""
            row[f"{a}* interval"] = (verdict.fmt_interval(*fit["interval"]) if fit and fit["interval"]
                                     else "no interval" if fit else "")
        rows.append(row)
    order = ["param", "width", "lr*", "log2 lr*", "fitted log2 lr*", "lr* interval", "damping*", "log2 damping*",
             "fitted log2 damping*", "damping* interval", "loss*", "seeds", "settings", "notes"]
    df = pd.DataFrame(rows)
    return df[[c for c in order if c in df.columns]] if len(df) else pd.DataFrame(columns=order)


def regret_table(v: dict, sign: float) -> pd.DataFrame:
    """Per param and width above the base: the transferred setting, its regret (metric units, ≥ 0) with its
    interval, δ, the width's verdict, and why (what would decide it when undecided)."""
    rows = []
    for p in ordered(v["params"]):
        pv = v["params"][p]
        for r in pv["regret"]:
            by_width = (pv["transferred"] or {}).get("lr_by_width") or {}
            interval = ("diverged" if r["diverged"] else verdict.fmt_interval(*r["interval"], octaves=False)
                        if r["interval"] else "")
            note = r["why"] + (("; decide: " + "; ".join(r["decide"])) if r["verdict"] == "undecided" and r["decide"]
                               else "")
            rows.append({"param": p, "width": r["width"],
                         "lr": float(by_width.get(str(r["width"]), pv["transferred"]["lr"])),
                         "damping": pv["transferred"].get("damping"), "regret": r["regret"], "interval": interval,
                         "delta": r["delta"], "verdict": r["verdict"], "note": note})
    return pd.DataFrame(rows, columns=["param", "width", "lr", "damping", "regret", "interval", "delta", "verdict",
                                       "note"])


def drift_table(v: dict) -> pd.DataFrame:
    """Per param, swept axis and width: the fitted optimum's drift from the base width (octaves) and its
    interval (a description: the regret decides)."""
    rows = []
    for p in ordered(v["params"]):
        for a, drift in v["params"][p].get("drift", {}).items():
            for r in drift:
                rows.append({"param": p, "axis": a, "width": r["width"], "drift_octaves": r["drift"],
                             "interval": verdict.fmt_interval(*r["interval"]) if r["interval"] else "no interval",
                             "note": "" if r["bracketed"] else "not bracketed: the optimum may lie beyond"})
    return pd.DataFrame(rows, columns=["param", "axis", "width", "drift_octaves", "interval", "note"])


def law_table(v: dict) -> pd.DataFrame:
    """Per param and swept axis with a fitted law: β (octaves of the optimum per doubling of width) with its
    interval, whether it contains 0 (µP's claim), and the check that leaves the largest width out."""
    rows = []
    for p in ordered(v["params"]):
        for a, law in v["params"][p].get("law", {}).items():
            lo, hi = law["beta_interval"]
            h = law["holdout"]
            rows.append({"param": p, "axis": a, "widths": ", ".join(map(str, law["scales"])), "beta": law["beta"],
                         "interval": verdict.fmt_interval(lo, hi), "contains 0": "yes" if lo <= 0 <= hi else "no",
                         "held out": h["scale"], "predicted": f"{h['predicted']:+.2f} "
                         f"{verdict.fmt_interval(*h['predicted_interval'])}",
                         "fitted": f"{h['fitted']:+.2f} {verdict.fmt_interval(*h['fitted_interval'])}",
                         "check": "consistent" if h["consistent"] else "inconsistent"})
    return pd.DataFrame(rows)


def compute_table(df: pd.DataFrame, v: dict) -> pd.DataFrame:
    """What the transfer saved: per width above the base with trials, the trial-seconds spent there, against an
    estimate of tuning the base width's grid there (its settings × seeds × the mean trial time measured at that
    width, per parameterization); and the base width's own spending."""
    if df.empty or "wall_seconds" not in df:
        return pd.DataFrame()
    base = v["base_width"]
    runs = df.drop_duplicates("trial_id")
    at_base = df[(df.width == base) & df.phase.isin(["sweep", "refine"])]
    settings = at_base.groupby("param").apply(lambda g: len(g[["lr", "damping"]].drop_duplicates()),
                                              include_groups=False)
    seeds = max(1, df.seed.nunique())
    rows = [{"width": base, "trial-seconds": runs[runs.width == base].wall_seconds.sum(), "tuning estimate": None,
             "ratio": None}]
    for width, g in runs[runs.width != base].groupby("width"):
        mean_time = g.wall_seconds.mean()
        estimate = float(sum(settings.get(p, 0) for p in g.param.unique()) * seeds * mean_time)
        spent = float(g.wall_seconds.sum())
        rows.append({"width": int(width), "trial-seconds": spent, "tuning estimate": estimate,
                     "ratio": spent / estimate if estimate else None})
    return pd.DataFrame(rows)


def transferred(df: pd.DataFrame, transfers: dict) -> pd.DataFrame:
    """The transferred setting's results per (param, width), the sweep's widths included (the same lr and damping
    there): mean loss and test accuracy over seeds."""
    rows = []
    for param, choice in transfers.items():
        for width, w in setting_rows(df, param, choice).groupby("width"):
            ok = w[w.status.isin(track.FINAL_STATUSES)]
            lr = float((choice.get("lr_by_width") or {}).get(str(width), choice["lr"]))
            rows.append({"param": param, "width": width, "lr": lr, "damping": choice.get("damping"),
                         "loss": ok.objective.mean(), "test_acc": ok.final_test_acc.astype(float).mean(),
                         "seeds": len(ok), "diverged": int((ok.status == track.DIVERGED).sum())})
    return pd.DataFrame(rows, columns=["param", "width", "lr", "damping", "loss", "test_acc", "seeds", "diverged"])


def wider_is_better(tr: pd.DataFrame) -> pd.DataFrame:
    """Per param: does the transferred setting's loss fall (within 1%) each time the width grows?"""
    rows = []
    for param, g in tr.groupby("param"):
        g = g.sort_values("width")
        losses, widths = g.loss.to_numpy(float), g.width.to_numpy()
        worse = [f"{widths[i + 1]} vs {widths[i]}" for i in range(len(g) - 1)
                 if not losses[i + 1] <= losses[i] * 1.01]
        rows.append({"param": param, "widths": " → ".join(map(str, widths)),
                     "wider_is_better": "yes" if not worse else "no (" + "; ".join(worse) + ")"})
    return pd.DataFrame(rows, columns=["param", "widths", "wider_is_better"])


def headline(tr: pd.DataFrame, wider: pd.DataFrame, transfers: dict, sign: float) -> pd.DataFrame:
    """One row per transferred parameterization: the setting, its score per width (w<width> columns, metric
    units), and whether wider was better."""
    rows = []
    for param in ordered(transfers):
        choice = transfers[param]
        row = {"param": param, "lr": choice["lr"], "damping": choice.get("damping")}
        for _, r in tr[tr.param == param].sort_values("width").iterrows():
            row[f"w{r.width}"] = sign * r.loss
        w = wider[wider.param == param]
        row["wider_is_better"] = w.wider_is_better.iloc[0] if len(w) else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------------

class StudyRuns:
    """A study folder as the report reads it: its name, its entries (muso_cli.study.results.points), its recorded
    transfers, each trial's metrics rows and folder. (muso_cli.external.ExternalRuns reads runs made elsewhere
    the same way.)"""

    has_metrics = True

    def __init__(self, study: Study):
        self.study, self.name = study, study.name

    def entries(self, metric: str) -> list[dict]:
        return points(self.study, metric)

    def transfers(self) -> dict:
        return self.study.transfers()

    def metrics(self, trial_id: str) -> list[dict] | None:
        return track.read_json_lines(self.study.path / "trials" / trial_id / track.METRICS)

    def folder(self, trial_id: str) -> str:
        return str(self.study.path / "trials" / trial_id)


def build(runs, out_dir: Path, metric: str, base_width: int,
          settings: verdict.Settings = verdict.Settings(), title: str = "", scale: str = "width") -> dict:
    """Write every file of the report into ``out_dir``; return {results, skipped, tables, verdict, unreadable (the
    trial folders whose result or metrics cannot be trusted)}. ``runs``: a Study (or :class:`StudyRuns`), or runs
    made elsewhere (muso_cli.external.ExternalRuns). ``title``: what the plots are of (study, optimizer, model,
    data), shown above them. ``scale``: the study's axis, width or depth (then ``base_width`` is the base depth): the
    verdict is judged over it, and the tables and plots, written for widths, label it."""
    runs = StudyRuns(runs) if isinstance(runs, Study) else runs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = runs.entries(metric)
    transfers = runs.transfers()
    v = verdict.judge(entries, base_width, settings, transfers, scale=scale)
    if scale != "width":  # the tables and plots read the study's axis from the entries' "width"
        entries = [{**e, "width": e[scale]} for e in entries]
    df, skipped = collect(entries)
    # what the report shows as transferred: transfer.json's choices, else the verdict's (the base optimum)
    shown = {p: pv["transferred"] for p, pv in v["params"].items() if pv["transferred"]}
    # strict JSON for machines: an unbounded interval end (±inf) and NaN are written as null
    track.write_json(out_dir / "report.json", json.loads(json.dumps({"study": runs.name, "metric": metric, **v},
                                                                    default=_plain), parse_constant=lambda _: None))
    sign = -1.0 if METRICS[metric] == "max" else 1.0
    tables = {"regret": regret_table(v, sign), "optima": optima_table(v, sign), "drift": drift_table(v),
              "law": law_table(v)}
    if not df.empty:
        df.to_parquet(out_dir / "results.parquet", index=False)
        df.to_csv(out_dir / "results.csv", index=False)
        tables["compute"] = compute_table(df, v)
        tr = transferred(df, shown)
        tables["transferred"] = tr.assign(loss=sign * tr.loss)
        tables["wider"] = wider_is_better(tr)
        tables["headline"] = headline(tr, tables["wider"], shown, sign)
        grid = cells.cells(entries)
        cells.fit_cells(grid, settings, base_width)
        for axis in cells.AXES:
            if any(axis in c.swept for c in grid.values()):
                figures.plot_loss_vs(grid, out_dir / f"loss_vs_{axis}.png", metric, axis, title, scale)
        figures.plot_heatmaps(grid, lambda p: out_dir / f"heatmap_{p}.png", metric, scale)
        figures.plot_drift(v, out_dir / "drift.png")
        figures.plot_curves(runs, df, shown, out_dir / "curves.png", base_width, title, scale)
    _write_markdown(out_dir / "report.md", runs.name, v, tables, skipped, len(df), metric, out_dir)
    unreadable = sorted({runs.folder(e["trial_id"]) for e in entries if e["status"] == UNREADABLE})
    return {"results": df, "skipped": skipped, "tables": tables, "verdict": v, "unreadable": unreadable}


def _plain(value):
    """numpy scalars (a float64, a bool_) as the Python values JSON knows."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def on_scale(text: str, scale: str) -> str:
    """A label of the report, written for widths, for a study whose axis is ``scale`` (depth: "per depth", "deeper is
    better", a score column L8 for depth 8)."""
    if scale == "width":
        return text
    text = re.sub(r"^w(\d+)$", rf"{scale[0].upper()}\1", text)
    return text.replace("widths", f"{scale}s").replace("width", scale).replace("wider", "deeper")


def relabel(table: pd.DataFrame, scale: str) -> pd.DataFrame:
    """``table`` with its columns labelled for the study's axis (:func:`on_scale`)."""
    return table if scale == "width" else table.rename(columns=lambda c: on_scale(c, scale) if isinstance(c, str) else c)


def summary_lines(res: dict, metric: str) -> list[str]:
    """What ``muso report`` prints after the verdict: the regret, drift and law tables, the compute the transfer
    saved, the count of results read, the headline and the transferred setting's test accuracy per width (per depth
    for a study over depth)."""
    scale = res["verdict"].get("scale", "width")
    lines, tables = [], {k: relabel(t, scale) for k, t in res["tables"].items()}
    columns_of = lambda names: [on_scale(c, scale) for c in names]  # noqa: E731
    number = lambda v: f"{v:.4g}"  # noqa: E731
    for key, title, columns in (("regret", "regret of the transferred setting per width (δ: what it may cost)",
                                 ["param", "width", "lr", "regret", "interval", "delta", "verdict"]),
                                ("drift", "drift of the fitted optimum from the base width (octaves)",
                                 ["param", "axis", "width", "drift_octaves", "interval"]),
                                ("law", "width law of the optimum: log2 lr* = a + β·log2 width",
                                 ["param", "axis", "widths", "beta", "interval", "contains 0", "held out",
                                  "predicted", "fitted"])):
        table = tables.get(key)
        if table is not None and not table.empty:
            lines += [on_scale(f"{title}:", scale), table[[c for c in columns_of(columns) if c in table]].to_string(
                index=False, na_rep="", float_format=number)]
    compute = res["tables"].get("compute")
    if compute is not None and len(compute) > 1:
        wider = compute[compute.width != compute.width.iloc[0]]
        spent, estimate = wider["trial-seconds"].sum(), wider["tuning estimate"].sum()
        lines.append(on_scale(f"compute: {compute['trial-seconds'].sum():.0f} trial-seconds in all, {spent:.0f} above "
                              f"the base width; tuning the base grid at widths {', '.join(map(str, wider.width))} "
                              f"instead would take ≈ {estimate:.0f} (measured trial times): the transfer cost "
                              f"{spent / estimate:.2f} of that.", scale)
                     if estimate else f"compute: {compute['trial-seconds'].sum():.0f} trial-seconds in all.")
    skipped = ", ".join(f"{v} {k}" for k, v in res["skipped"].items() if v)
    lines.append(f"{len(res['results'])} trial results" + (f" (skipped: {skipped})" if skipped else ""))
    headline = tables.get("headline")
    if headline is not None and not headline.empty:
        lines += [on_scale(f"headline ({metric} of the transferred setting per width):", scale),
                  headline.to_string(index=False, float_format=number)]
    transferred = res["tables"].get("transferred")
    if transferred is not None and not transferred.empty and transferred.test_acc.notna().any():
        acc = transferred.pivot_table(index="param", columns="width", values="test_acc", dropna=False)
        acc = acc.reindex(ordered(acc.index))
        acc.columns = [on_scale(f"w{w}", scale) for w in acc.columns]
        lines += [on_scale("test accuracy of the transferred setting per width (blank: diverged):", scale),
                  acc.reset_index().to_string(index=False, na_rep="", float_format=lambda v: f"{v:.4f}")]
    return lines


def verdict_lines(v: dict) -> list[str]:
    """The verdict sentences, one per parameterization, and how the intervals were made (labelled for the study's
    axis: :func:`on_scale`)."""
    return [on_scale(line, v.get("scale", "width")) for line in [pv["sentence"] for pv in v["params"].values()]
            + [v["interval"]]]


def _write_markdown(path: Path, name: str, v: dict, tables: dict, skipped: dict, n: int, metric: str,
                    out_dir: Path) -> None:
    lines = [f"# Study {name}", "", "## Verdict", ""]
    lines += [f"- {line}" for line in verdict_lines(v)[:-1]] + ["", verdict_lines(v)[-1], ""]
    lines += [f"{n} trial results read" + (
        "; skipped: " + ", ".join(f"{k} {key}" for key, k in skipped.items() if k) if any(skipped.values()) else "")
        + f". Selection metric: {METRIC_LABEL[metric]}. Machine-readable verdict: report.json.", ""]
    scale = v.get("scale", "width")
    for key, title in TITLES.items():
        table = tables.get(key)
        if table is None or table.empty:
            continue
        lines += [f"## {on_scale(title, scale)}", "", relabel(table, scale).to_markdown(index=False, floatfmt=".4g"), ""]
    for png in sorted(out_dir.glob("*.png")):
        lines += [f"![{png.stem}]({png.name})", ""]
    track.write_atomic(path, "\n".join(lines))
