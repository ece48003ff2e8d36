"""Results store: per-run files written atomically, and their Weights & Biases mirror.

A run folder holds ``config.yaml`` (the resolved config), ``metrics.jsonl`` (one line per evaluation) and
``result.json`` (status ok | diverged | failed, final and best metrics). Every file is written to a temporary
name in the same folder and renamed, so a reader never sees half a file and concurrent writers to different
folders need no locks. W&B (online, offline or disabled) mirrors what the files hold; files come first.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import check_one_of

RESULT, METRICS, CONFIG, CHECKPOINT = "result.json", "metrics.jsonl", "config.yaml", "checkpoint.pt"
HEARTBEAT = "running.json"   # present while a process holds the run's claim (muso_cli.claims)
# The status vocabulary. A result.json holds ok, diverged or failed; a trial without one is running (a live
# heartbeat) or pending. ok and diverged are final: never rerun; failed trials are retried.
OK, DIVERGED, FAILED, RUNNING, PENDING = "ok", "diverged", "failed", "running", "pending"
FINAL_STATUSES = (OK, DIVERGED)
RESULT_STATUSES = (OK, DIVERGED, FAILED)
STATUSES = (OK, DIVERGED, FAILED, RUNNING, PENDING)   # in display order
TO_RUN = (PENDING, FAILED)
_UMASK = os.umask(0)
os.umask(_UMASK)


def check(cfg) -> list:
    """Problems with the ``logger.*`` keys (the W&B mirror)."""
    return [check_one_of("logger.mode", cfg.mode, ("disabled", "offline", "online"))]


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp's 0600 would hide results from collaborators
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def finite_or_none(x: Any) -> Any:
    """JSON has no inf/NaN: non-finite floats are stored as null (the status says why)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite_or_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite_or_none(v) for v in x]
    return x


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, json.dumps(finite_or_none(obj), indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> dict | None:
    """The JSON object at ``path``, or None when missing or unreadable."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def read_json_lines(path: Path) -> list[dict] | None:
    """The objects of a JSON-lines file (trials.jsonl, metrics.jsonl), or None when the file is missing, unreadable
    or malformed: a file that is not whole is not trusted in part."""
    try:
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None


def write_result(run_dir: Path, result: dict) -> dict:
    """Write ``result.json`` unless a finished result (ok, diverged) is there already: that one is never
    replaced (a failed one is). Returns the result now on disk."""
    path = Path(run_dir) / RESULT
    existing = read_json(path)
    if existing and existing.get("status") in FINAL_STATUSES:
        return existing
    if existing is not None or path.exists():
        write_json(path, result)  # replaces a failed (or unreadable) result
        return result
    # absent: create it with link(), which fails instead of replacing a result that appeared in the meantime
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(finite_or_none(result), indent=2, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return write_result(run_dir, result)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return result


class Recorder:
    """Writes one run's files and mirrors them to W&B.

    out_dir: the run folder. config: the resolved config (a dict). wandb_cfg: the logger node (mode, project,
    entity, dir, tags). run_id: W&B run id (a trial's id: a resumed trial continues its W&B run).
    group / job_type / tags: W&B grouping (study name, sweep | transfer, param/optimizer/width).
    owns_metrics: False when someone else writes metrics.jsonl (your own training script): :meth:`log` then only
    mirrors a row to W&B.
    """

    def __init__(self, out_dir: Path, config: dict, *, wandb_cfg: dict | None = None, run_id: str | None = None,
                 name: str | None = None, group: str | None = None, job_type: str | None = None, tags: list[str] | None = None,
                 metrics: list[dict] | None = None, owns_metrics: bool = True):
        import yaml

        self.out_dir = Path(out_dir)
        self.owns_metrics = owns_metrics
        self.metrics: list[dict] = list(metrics or [])
        write_atomic(self.out_dir / CONFIG, yaml.safe_dump(config, sort_keys=False))
        self.wandb = None
        wandb_cfg = wandb_cfg or {}
        if wandb_cfg.get("mode", "disabled") != "disabled":
            self.wandb = _wandb_init(self.out_dir, config, wandb_cfg, run_id, name, group, job_type, tags)

    def log(self, row: dict) -> None:
        """Append one evaluation row (must hold ``step``) to metrics.jsonl and W&B."""
        self.metrics.append(finite_or_none(row))
        if self.owns_metrics:
            write_atomic(self.out_dir / METRICS, "".join(json.dumps(r) + "\n" for r in self.metrics))
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=int(row["step"]))

    def finish(self, result: dict) -> dict:
        """Write result.json (never over a finished one: see write_result) and close the W&B run with the result
        as its summary. Returns the result on disk."""
        result = write_result(self.out_dir, result)
        if self.wandb is not None:
            self.wandb.summary.update(flatten(finite_or_none(result)))
            # the summary's headline metrics are the result's, not the last history row's (a diverged run's
            # last row is the batch that blew up): train_loss is null for a diverged run, as final/train_loss
            self.wandb.summary.update({k: v for k, v in finite_or_none(result.get("final") or {}).items()})
            self.wandb.finish(exit_code=0 if result.get("status") in FINAL_STATUSES else 1)
            self.wandb = None
        return result

    def close(self) -> None:
        """Close the W&B run without a final result (an interrupted run that will resume)."""
        if self.wandb is not None:
            self.wandb.finish(exit_code=1)
            self.wandb = None


def flatten(d: dict, sep: str = "/", prefix: str = "") -> dict:
    """{"a": {"b": 1}} → {"a/b": 1}: nested keys joined by ``sep``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, sep, f"{prefix}{k}{sep}"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _wandb_init(out_dir: Path, config: dict, wcfg: dict, run_id, name, group, job_type, tags):
    import wandb

    wandb_dir = Path(wcfg.get("dir") or out_dir)
    wandb_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(project=wcfg.get("project") or "muso", entity=wcfg.get("entity"), group=group,
                      job_type=job_type, tags=list(wcfg.get("tags") or []) + list(tags or []), config=config,
                      id=run_id, resume="allow" if run_id else None, dir=str(wandb_dir), mode=wcfg["mode"],
                      name=name or run_id, reinit="create_new", settings=wandb.Settings(silent=True, console="off"))


def log_report(wandb_cfg: dict, study: str, folder: Path, verdict: dict) -> str | None:
    """Mirror a study's report to W&B: one run in the study's group (job type ``report``, id ``<study>-report``,
    resumed by the next report) whose summary holds each parameterization's verdict, transferred setting and
    regret per width, with report.json / report.md as files and every figure as an image. Returns the run's
    folder (None when the mirror is disabled)."""
    if wandb_cfg.get("mode", "disabled") == "disabled":
        return None
    import wandb

    run = _wandb_init(Path(folder), {"study": study, "settings": verdict.get("settings")}, wandb_cfg,
                      f"{study}-report"[-64:], f"{study} report", study, "report", ["report"])
    summary = {"verdict/interval": verdict.get("interval")}
    for param, pv in verdict.get("params", {}).items():
        summary[f"verdict/{param}"] = pv["verdict"]
        summary[f"sentence/{param}"] = pv["sentence"]
        if pv.get("transferred"):
            summary[f"transferred/{param}/lr"] = pv["transferred"]["lr"]
        for r in pv.get("regret", []):
            summary[f"regret/{param}/w{r['width']}"] = r["regret"]
            summary[f"regret_verdict/{param}/w{r['width']}"] = r["verdict"]
    run.summary.update(finite_or_none(summary))
    run.log({f"figure/{png.stem}": wandb.Image(str(png)) for png in sorted(Path(folder).glob("*.png"))})
    for name in ("report.json", "report.md"):
        if (Path(folder) / name).exists():
            run.save(str(Path(folder) / name), base_path=str(folder), policy="now")
    directory = run.dir
    run.finish()
    return directory
