"""Checks of litdata shard folders (``index.json`` + ``chunk-*.bin``) before they are read.

litdata stores each field of a record with a serializer named in ``index.json``; its
``pickle`` serializer (used for any object it has no plain serializer for) unpickles on
read, which runs code from a crafted file. Shards are therefore read only when every field
uses a plain serializer, as ``hdrunet-prepare stream`` writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from hdrunet_pl.errors import HDRUNetError

SAFE_FIELD_FORMATS = frozenset(
    {
        "str",
        "int",
        "float",
        "bool",
        "bytes",
        "numpy",
        "no_header_numpy",
        "tensor",
        "no_header_tensor",
    }
)
"""litdata field serializers that never unpickle (``pickle`` and the rest are refused)."""


def check_shards(folder: Path, expected: int | None = None, chunks: bool = True) -> None:
    """Check a shard folder: an ``index.json`` whose fields are all of plain types (no
    pickled objects, which would run code when read) and chunk files that exist; with
    ``expected``, that it holds that many records. ``chunks=False`` checks the index only
    (remote shards, whose chunks are fetched while reading)."""
    index = folder / "index.json"
    if not index.is_file():
        raise HDRUNetError(
            f"{folder}: no index.json, not a shard folder (make one with hdrunet-prepare stream)"
        )
    try:
        meta = json.loads(index.read_text())
        config = meta["config"]
        formats = [str(f).split(":")[0] for f in config["data_format"]]
        chunks = meta["chunks"]
        records = sum(int(c["chunk_size"]) for c in chunks)
        files = [folder / str(c["filename"]) for c in chunks]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise HDRUNetError(
            f"{index}: not a litdata index written by hdrunet-prepare ({err!r})"
        ) from None
    unsafe = sorted(set(formats) - SAFE_FIELD_FORMATS)
    if unsafe:
        raise HDRUNetError(
            f"{index}: fields stored as {', '.join(unsafe)}; refused (reading them could run "
            f"code; hdrunet-prepare stores only {', '.join(sorted(SAFE_FIELD_FORMATS))})"
        )
    if config.get("encryption") or config.get("item_loader") != "PyTreeLoader":
        raise HDRUNetError(f"{index}: not a shard set written by hdrunet-prepare; refused")
    missing = [f.name for f in files if f.parent != folder or (chunks and not f.is_file())]
    if missing:
        raise HDRUNetError(f"{index}: chunk files missing: {', '.join(missing[:5])}")
    if expected is not None and records != expected:
        raise HDRUNetError(f"{folder}: {records} records written, {expected} expected")
