"""Read back what a W&B offline run wrote, to test the mirror without a server (muso_cli.wandb_log reads the log)."""
from __future__ import annotations

import json
from pathlib import Path

from muso_cli.wandb_log import read_records


def offline_run(wandb_dir: Path, run_id: str) -> dict:
    """{run: the run record, history: [{key: value}], summary: {key: value}} of the offline W&B run ``run_id``
    under ``wandb_dir`` (a study keeps all its runs in <study>/wandb)."""
    logs = sorted(Path(wandb_dir).glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    out = {"run": None, "history": [], "summary": {}, "files": logs}
    for log in logs:
        for r in read_records(log):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                out["run"] = r.run
            elif kind == "history":
                out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
            elif kind == "summary":
                out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                       for i in r.summary.update})
    return out
