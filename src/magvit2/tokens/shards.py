"""Parquet token shards: many clips per file, one row per clip, readable by pandas and ``datasets``.

Schema (one row per clip): ``source`` (path as given), ``frames``, ``height``, ``width`` (the source
clip), ``fps``, ``shape`` (``[T', h, w]`` of the token grid), ``ids`` (flat int32 list, row-major
over ``shape``) and ``checksum`` (:func:`row_checksum`: the ids, the row's fields and the shard's
model and vocabulary; verified by every reader here, so a damaged row is refused; shards written
before it existed read without the check). The file's schema metadata records the model fingerprint
and the vocabulary.

Files are assigned to shards by sorted order, ``shard_size`` clips each, so a rerun plans the same
shards: a shard whose final file exists is finished and skipped. Each shard is written to a temporary
name and renamed, so an interrupted run never leaves a partial shard. Under ``torchrun`` rank ``r``
of ``W`` takes shards ``r, r + W, r + 2W, ...``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from magvit2.fileio import atomic_path
from magvit2.tokens.format import ONE_PASS, TokenFile, TokenFileError, check_ids, damaged, ids_checksum

SHARD_FORMAT = "magvit2-token-shard"
SHARD_VERSION = 1
#: Settings of a shard folder. The leading dot makes Arrow (pandas) and ``datasets`` skip it, so the
#: folder loads as a Parquet data set; folders made before read as well (:data:`OLD_MANIFEST_NAME`).
MANIFEST_NAME = ".magvit2-shards.json"
OLD_MANIFEST_NAME = "magvit2-shards.json"
#: Settings of a folder of token files (``magvit2 tokenize INPUTS -o FOLDER``): a rerun that skips the
#: files already there must have made them the same way.
TOKEN_FOLDER_MANIFEST = "magvit2-tokens.json"

SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("frames", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("fps", pa.float64()),
        ("shape", pa.list_(pa.int32())),
        ("ids", pa.list_(pa.int32())),
        ("checksum", pa.string()),
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
        raise ValueError(f"shard_size (--shard-size) must be >= 1, got {shard_size}")
    ordered = sorted(files, key=str)
    plans = []
    for index, start in enumerate(range(0, len(ordered), shard_size)):
        if index % world_size != rank:
            continue
        chunk = tuple(ordered[start : start + shard_size])
        plans.append(ShardPlan(index, out_dir / f"shard-{index:05d}.parquet", chunk))
    return plans


def row_checksum(row: dict, model: str, vocabulary: int) -> str:
    """:func:`~magvit2.tokens.format.ids_checksum` of a shard row: its ids, ``shape``, ``frames``,
    ``height``, ``width``, ``fps`` and the shard's ``model`` and ``vocabulary``."""
    fields = {
        "model": model,
        "vocabulary": str(vocabulary),
        "shape": ",".join(str(int(s)) for s in row["shape"]),
        "frames": str(int(row["frames"])),
        "height": str(int(row["height"])),
        "width": str(int(row["width"])),
        "fps": repr(float(row["fps"])),
    }
    return ids_checksum(np.asarray(row["ids"], dtype=np.int64), fields)


def verify_row(row: dict, meta: dict[str, str], where: str) -> None:
    """A :class:`TokenFileError` saying ``where`` is damaged if ``row`` (a dict of the schema's keys)
    does not match its checksum; rows without one (older shards) pass."""
    expected = row.get("checksum")
    if (
        expected
        and row_checksum(row, meta.get("magvit2.model", ""), int(meta.get("magvit2.vocabulary", 0)))
        != expected
    ):
        raise damaged(where, "shard row")


def write_shard(
    path: Path,
    rows: list[dict],
    *,
    model: str,
    vocabulary: int,
    spatial_factor: int | None = None,
    failed: list[str] | None = None,
    encoding: str = ONE_PASS,
) -> None:
    """Write ``rows`` (dicts with the schema's keys) to ``path`` atomically.

    The schema metadata records ``magvit2.format`` / ``magvit2.version``, the model fingerprint, the
    vocabulary, the spatial factor (to recover the padding), the files that could not be read
    (``magvit2.failed``, a JSON list) and how the tokens were found (``magvit2.encoding``:
    ``encoder`` or ``refined steps=N lr=X``; shards without the key were made by the encoder).
    """
    meta = {
        "magvit2.format": SHARD_FORMAT,
        "magvit2.version": str(SHARD_VERSION),
        "magvit2.model": model,
        "magvit2.vocabulary": str(vocabulary),
        "magvit2.failed": json.dumps(failed or []),
        "magvit2.encoding": encoding,
    }
    if spatial_factor is not None:
        meta["magvit2.spatial_factor"] = str(spatial_factor)
    rows = [{**row, "checksum": row_checksum(row, model, vocabulary)} for row in rows]
    table = pa.Table.from_pylist(rows, schema=SCHEMA).replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_shard(path: str | Path) -> pa.Table:
    """Read one shard (a pyarrow Table; ``.to_pandas()`` for a DataFrame)."""
    return pq.read_table(path)


def token_row(tf: TokenFile) -> dict:
    """One clip's tokens as a shard row (the :data:`SCHEMA`'s keys); the model, vocabulary and
    encoding are the shard's, recorded once in its metadata by :func:`write_shard`."""
    return {
        "source": tf.source,
        "frames": tf.frames,
        "height": tf.height,
        "width": tf.width,
        "fps": float(tf.fps),
        "shape": list(tf.ids.shape),
        "ids": tf.ids.reshape(-1).numpy().astype(np.int32),
    }


def read_row(
    path: str | Path, row: int | None, expect_model: str | None = None, spatial_factor: int | None = None
) -> TokenFile:
    """Row ``row`` of a shard as a :class:`TokenFile` (the inverse of :func:`token_row`).

    ``expect_model``: the fingerprint the shard must carry (a :class:`TokenFileError` otherwise, as
    :func:`~magvit2.tokens.load_tokens`); ``spatial_factor``: for shards whose metadata lacks it (it
    gives the padding). Ids outside the recorded vocabulary are refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such shard")
    meta = shard_metadata(path)
    model = meta.get("magvit2.model", "")
    if expect_model is not None and model != expect_model:
        raise TokenFileError(
            f"{path}: made by another model (fingerprint {model}, this model is {expect_model}); "
            "decode it with the model that tokenized it (--model)"
        )
    try:
        table = read_shard(path)
    except (OSError, pa.ArrowException) as err:
        raise TokenFileError(f"{path}: not a readable Parquet token shard: {err}") from err
    n = table.num_rows
    if row is None:
        raise ValueError(f"{path}: a shard holds {n} clips; choose one with --row K (0..{n - 1})")
    if not 0 <= row < n:
        raise ValueError(f"{path}: --row must be in [0, {n}), got {row}")
    r = table.slice(row, 1).to_pylist()[0]
    verify_row(r, meta, f"{path} row {row}")
    ids = torch.as_tensor(np.asarray(r["ids"], dtype=np.int64)).reshape(r["shape"])
    vocabulary = int(meta.get("magvit2.vocabulary", 0))
    if vocabulary:
        check_ids(ids, vocabulary, f"{path} row {row}")
    s = int(meta.get("magvit2.spatial_factor", spatial_factor or 0))
    if not s:
        raise ValueError(f"{path}: the shard does not record its spatial factor; pass spatial_factor")
    return TokenFile(
        ids=ids,
        model=model,
        vocabulary=vocabulary,
        frames=r["frames"],
        height=r["height"],
        width=r["width"],
        pad_bottom=r["shape"][1] * s - r["height"],
        pad_right=r["shape"][2] * s - r["width"],
        fps=Fraction(r["fps"]).limit_denominator(1001000),
        source=r["source"],
        encoding=meta.get("magvit2.encoding", ONE_PASS),
    )


def verify_shard(path: str | Path) -> int:
    """Check every row of a shard against its checksum (a :class:`TokenFileError` naming the first
    damaged row); returns how many rows carry one (0 for shards written before checksums)."""
    meta = shard_metadata(path)
    try:
        table = read_shard(path)
    except (OSError, pa.ArrowException) as err:
        raise TokenFileError(f"{path}: not a readable Parquet token shard: {err}") from err
    if "checksum" not in table.column_names:
        return 0
    ids = table.column("ids").combine_chunks()
    flat, offsets = ids.values.to_numpy(zero_copy_only=False), ids.offsets.to_numpy()
    for i, r in enumerate(table.drop_columns(["ids"]).to_pylist()):
        verify_row({**r, "ids": flat[offsets[i] : offsets[i + 1]]}, meta, f"{path} row {i}")
    return table.num_rows


def shard_metadata(path: str | Path) -> dict[str, str]:
    """The ``magvit2.*`` schema metadata of a shard (without reading its rows)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as err:
        raise ValueError(
            f"{path}: not a readable Parquet token shard (truncated or corrupted?): {err}"
        ) from err
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"magvit2.")}


def manifest(
    files: list[Path], shard_size: int, model: str, encoding: str = ONE_PASS, max_frames: int | None = None
) -> dict:
    """What a shard folder was made from: a rerun must match it to resume.

    ``encoding`` is recorded only for refined tokens and ``max_frames`` only when set, so that folders
    made before they were recorded (by the encoder, whole clips) still match a plain rerun.
    """
    names = "\n".join(sorted(str(f) for f in files)).encode("utf-8", "surrogateescape")  # any file name
    digest = hashlib.sha256(names).hexdigest()[:16]
    return (
        {
            "format": SHARD_FORMAT,
            "version": SHARD_VERSION,
            "model": model,
            "shard_size": shard_size,
            "files": len(files),
            "files_digest": digest,
        }
        | ({} if encoding == ONE_PASS else {"encoding": encoding})
        | ({} if max_frames is None else {"max_frames": max_frames})
    )


def token_folder_manifest(
    model: str, encoding: str, max_frames: int | None, packed: bool, nested: bool = False
) -> dict:
    """The settings a folder of token files was made with (see :data:`TOKEN_FOLDER_MANIFEST`);
    ``nested``: files named by their path under the inputs' common folder (recorded only then, so
    folders made before it was recorded still match)."""
    names = {"names": "path under the inputs' common folder"} if nested else {}
    return {"model": model, "encoding": encoding, "max_frames": max_frames, "packed": packed} | names


def manifest_path(out_dir: Path, name: str = MANIFEST_NAME) -> Path:
    """Where the settings file of ``out_dir`` is: ``name``, or for shard folders made before the
    rename :data:`OLD_MANIFEST_NAME` when only that exists."""
    path = out_dir / name
    old = out_dir / OLD_MANIFEST_NAME
    return old if name == MANIFEST_NAME and not path.is_file() and old.is_file() else path


def check_manifest(
    out_dir: Path, expected: dict, overwrite: bool, name: str = MANIFEST_NAME, what: str = "shards"
) -> None:
    """Write ``out_dir/name`` (default ``.magvit2-shards.json``), or check that the one there matches
    ``expected``.

    A folder made with other settings (model, encoding, frames; for shards also shard size and file
    list, or its shards would not line up) is refused unless ``overwrite``: a rerun skips the outputs
    already there, which must then be what this run would have written. A shard folder's file under
    its old name is read, then replaced by the new name.
    """
    path = manifest_path(out_dir, name)
    if path.is_file() and not overwrite:
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            found = None
        if found != expected:
            keys = set(expected) | (set(found) if isinstance(found, dict) else set())
            diff = sorted(k for k in keys if not isinstance(found, dict) or found.get(k) != expected.get(k))
            raise ValueError(
                f"{out_dir}: holds {what} made with other settings ({', '.join(diff)} differ); "
                "pass --overwrite to redo them or choose another folder"
            )
        if path.name == name:
            return
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / name) as tmp:
        tmp.write_text(json.dumps(expected, indent=2) + "\n")
    if name == MANIFEST_NAME:
        (out_dir / OLD_MANIFEST_NAME).unlink(missing_ok=True)
