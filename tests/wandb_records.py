"""Read an offline W&B run's ``run-*.wandb`` file: the records the W&B service would upload.

The file is a LevelDB-style log (W&B's ``datastore``, now written by the Go core, with no Python
reader left in the wandb package): a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
chunks ``crc32 (4) | length (2) | type (1) | data``, type 1 a whole record and 2/3/4 its first,
middle and last parts. Each record is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

FILE_HEADER, CHUNK_HEADER, BLOCK = 7, 7, 32 * 1024


def records(path: str | Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    payloads, partial, pos = [], b"", FILE_HEADER
    while pos + CHUNK_HEADER <= len(data):
        if BLOCK - pos % BLOCK < CHUNK_HEADER:  # block trailer too short for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        chunk = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            payloads.append(partial + chunk)
    out = []
    for payload in payloads:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def complete_records(path: str | Path, timeout: float = 60.0) -> list[Any]:
    """The records once W&B's service has written the run's ``exit`` record and the file stopped growing:
    the service flushes the offline file on its own schedule, after the training process may have exited."""
    import time

    deadline, last_size = time.monotonic() + timeout, -1
    while True:
        size = Path(path).stat().st_size
        recs = records(path)
        if (of_kind(recs, "exit") and size == last_size) or time.monotonic() > deadline:
            return recs
        last_size = size
        time.sleep(1.0)


def of_kind(recs: list[Any], kind: str) -> list[Any]:
    return [getattr(r, kind) for r in recs if r.WhichOneof("record_type") == kind]


def config(recs: list[Any]) -> dict[str, Any]:
    """The run's config as W&B holds it at the end (top-level keys; nested updates applied)."""
    out: dict[str, Any] = {}
    items = [item for run in of_kind(recs, "run") for item in run.config.update]
    items += [item for cfg in of_kind(recs, "config") for item in cfg.update]
    for item in items:
        keys = list(item.nested_key) or [item.key]
        node = out
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(item.value_json)
    return out


def history_keys(recs: list[Any]) -> set[str]:
    return {(item.key or "/".join(item.nested_key)) for h in of_kind(recs, "history") for item in h.item}


def summary(recs: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in of_kind(recs, "summary"):
        for item in s.update:
            out["/".join(item.nested_key) if item.nested_key else item.key] = json.loads(item.value_json)
    return out
