"""Reading a W&B offline run back: its .wandb transaction log (what `wandb sync` uploads), for the report of runs
made elsewhere (muso_cli.external) and the tests of muso's own mirror, without a server.

The file is ":W&B" + magic 0xBEE1 + version 0, then LevelDB-log records (crc32, 2-byte length, type: 1 full,
2 first, 3 middle, 4 last) in 32 KiB blocks, each carrying a serialized wandb Record protobuf. (wandb's own
reader is internal to its service process in this version.)
"""
from __future__ import annotations

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
