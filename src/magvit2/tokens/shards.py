"""Parquet token shards: many clips per file, one row per clip, readable by pandas and ``datasets``.

Schema (one row per clip): ``source`` (path as given), ``frames``, ``height``, ``width`` (the source
clip), ``fps``, ``shape`` (``[T', h, w]`` of the token grid) and ``ids`` (flat int32 list, row-major
over ``shape``). The file's schema metadata records the model fingerprint and the vocabulary.

Files are assigned to shards by sorted order, ``shard_size`` clips each, so a rerun plans the same
shards: a shard whose final file exists is finished and skipped. Each shard is written to a temporary
name and renamed, so an interrupted run never leaves a partial shard. Under ``torchrun`` rank ``r``
of ``W`` takes shards ``r, r + W, r + 2W, ...``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("frames", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("fps", pa.float64()),
        ("shape", pa.list_(pa.int32())),
        ("ids", pa.list_(pa.int32())),
    ]
)


@dataclass(frozen=True)
class ShardPlan:
    """Shard ``index`` holds ``files``; it is written to ``path``."""

    index: int
    path: Path
    files: tuple[Path, ...]


def plan_shards(files: list[Path], out_dir: Path, shard_size: int, rank: int = 0, world_size: int = 1):
    """Split sorted ``files`` into shards of ``shard_size``; return this rank's :class:`ShardPlan` list."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    ordered = sorted(files, key=str)
    plans = []
    for index, start in enumerate(range(0, len(ordered), shard_size)):
        if index % world_size != rank:
            continue
        chunk = tuple(ordered[start : start + shard_size])
        plans.append(ShardPlan(index, out_dir / f"shard-{index:05d}.parquet", chunk))
    return plans


def write_shard(path: Path, rows: list[dict], *, model: str, vocabulary: int) -> None:
    """Write ``rows`` (dicts with the schema's keys) to ``path`` atomically."""
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(
        {"magvit2.model": model, "magvit2.vocabulary": str(vocabulary)}
    )
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_shard(path: str | Path) -> pa.Table:
    """Read one shard (a pyarrow Table; ``.to_pandas()`` for a DataFrame)."""
    return pq.read_table(path)
