"""Reads the records of an offline W&B run file (``run-*.wandb``) for assertions in tests.

The file is ``:W&B`` + magic + version (7 bytes), then LevelDB-log-style chunks in 32 KiB
blocks (header: crc32c 4 bytes, length 2, type 1; types full/first/middle/last), each
record a ``wandb_internal_pb2.Record`` protobuf.
"""

import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < HEADER:  # block trailer padding
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history_keys(records) -> set[str]:
    return {
        item.key or "/".join(item.nested_key)
        for r in records
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
    }


def records_when_written(
    run_dir: Path, keys: set[str], timeout: float = 60.0
) -> list[wandb_internal_pb2.Record]:
    """The records of ``run_dir``'s run file once its history holds ``keys``: W&B's service
    may still be writing the file for a moment after ``wandb.finish()`` returns on a busy
    machine. After ``timeout`` seconds, the records as they are."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(run_dir.glob("run-*.wandb"))
        records = read_records(files[0]) if files else []
        if keys <= history_keys(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def finished_records(run_dir: Path, timeout: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The records of ``run_dir``'s run file once it holds the run's exit record (written by
    ``wandb.finish()``; W&B's service may still be writing it when the process has ended).
    After ``timeout`` seconds, the records as they are."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(run_dir.glob("run-*.wandb"))
        records = read_records(files[0]) if files else []
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            return records
        time.sleep(0.5)


def step_values(records, key: str, step_key: str = "trainer/global_step") -> list[int]:
    """The training steps (Lightning's ``trainer/global_step``) of the history rows that
    hold ``key``, in the order they were logged."""
    steps = []
    for r in records:
        if r.WhichOneof("record_type") != "history":
            continue
        row = {item.key or "/".join(item.nested_key): item.value_json for item in r.history.item}
        if key in row:
            steps.append(int(float(row[step_key])))
    return steps
