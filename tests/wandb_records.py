"""Read back what a W&B offline run wrote (its .wandb transaction log), to test the mirror without a server.

The file is ":W&B" + magic 0xBEE1 + version 0, then LevelDB-log records (crc32, 2-byte length, type: 1 full,
2 first, 3 middle, 4 last) in 32 KiB blocks, each carrying a serialized wandb Record protobuf.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, HEADER = 32768, 7


def read_records(path: Path) -> list:
    raw = Path(path).read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, records, pending = HEADER, [], b""
    while pos + HEADER <= len(raw):
        if BLOCK - pos % BLOCK < HEADER:  # a block's tail too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + HEADER])
        if kind == 0 and length == 0:
            break
        pending += raw[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


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
