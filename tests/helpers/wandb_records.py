"""Read what W&B wrote offline: the records of a ``run-*.wandb`` file.

The file is W&B's append-only log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of records, each with a 7-byte header (CRC, length, type: full / first /
middle / last) and a piece of a serialised ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = 7


def raw_records(path: Path):
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pieces = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        pos += HEADER
        if kind == 0:
            pos += left - HEADER
            continue
        piece, pos = data[pos : pos + length], pos + length
        if kind == 1:
            yield piece
        elif kind == 2:
            pieces = piece
        elif kind == 3:
            pieces += piece
        elif kind == 4:
            yield pieces + piece


def read_run(path: Path) -> dict[str, Any]:
    """``{"group", "job_type", "tags", "config", "summary"}`` of an offline run file."""
    from wandb.proto import wandb_internal_pb2

    run: dict[str, Any] = {"config": {}, "summary": {}}

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(
                group=record.run.run_group, job_type=record.run.job_type, tags=list(record.run.tags)
            )
            run["config"].update(
                {key(i): json.loads(i.value_json) for i in record.run.config.update}
            )
        elif kind == "config":
            run["config"].update({key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "summary":
            run["summary"].update({key(i): json.loads(i.value_json) for i in record.summary.update})
    return run
