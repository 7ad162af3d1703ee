"""``magvit2 info``: describe a tokenizer folder, token files (one or a folder) or token shards."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open

from magvit2.cli.common import add_model_args, load_model
from magvit2.data.video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from magvit2.tokens import load_tokens, model_fingerprint
from magvit2.tokens.format import ONE_PASS
from magvit2.tokens.shards import (
    TOKEN_FOLDER_MANIFEST,
    manifest_path,
    read_shard,
    shard_metadata,
    verify_shard,
)

EXAMPLE = """examples:
  magvit2 info my_tokenizer/            (config, parameters, factors, vocabulary, fingerprint)
  magvit2 info clip.safetensors         (token file metadata)
  magvit2 info shards/ --json           (shard folder: clips, tokens, model)
  magvit2 info tokens/                  (folder of token files: files, frames, tokens, settings)"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``info`` sub-command."""
    p = sub.add_parser(
        "info",
        help="describe a model folder, token file or shards",
        description="Print what a tokenizer folder, a token file or a folder of them, a Parquet shard or a "
        "folder of shards holds.\n\n" + EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "target", nargs="?", default=None, metavar="MODEL_OR_TOKENS", help="default: the built-in model"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    add_model_args(p, inference=False)
    p.set_defaults(func=run)


def model_info(target: str | None) -> dict:
    """Config, parameter counts, fitted detail patterns, factors, vocabulary and fingerprint of a
    tokenizer."""
    model = load_model(target, "cpu")
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    total = sum(p.numel() for p in model.parameters())
    table = model.decoder.block_mean.detail if model.decoder.block_mean is not None else None
    return {
        "kind": "model",
        "path": target or "built-in",
        "parameters": total,
        "encoder_parameters": enc,
        "decoder_parameters": dec,
        "detail_patterns": 0 if table is None else int(table.shape[0]),
        "temporal_factor": model.temporal_factor,
        "spatial_factor": model.spatial_factor,
        "vocabulary": model.codebook_size,
        "bits_per_token": model.quantizer.bits_per_token,
        "fingerprint": model_fingerprint(model.config.to_dict(), model.state_dict()),
        "config": model.config.to_dict(),
    }


def token_file_info(path: Path) -> dict:
    """Metadata and grid of a token file."""
    tf = load_tokens(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {
        "kind": "token file",
        "path": str(path),
        "version": int(meta["version"]),
        "model": tf.model,
        "vocabulary": tf.vocabulary,
        "packed": meta.get("packed") == "1",
        "token_grid": list(tf.ids.shape),
        "tokens": int(tf.ids.numel()),
        "frames": tf.frames,
        "height": tf.height,
        "width": tf.width,
        "pad_bottom": tf.pad_bottom,
        "pad_right": tf.pad_right,
        "fps": f"{tf.fps.numerator}/{tf.fps.denominator}",
        "source": tf.source,
        "encoding": tf.encoding,
        "bytes": path.stat().st_size,
    }


def shards_info(paths: list[Path], where: Path) -> dict:
    """Clips, tokens, models and failed files of Parquet shards; every row with a checksum is verified
    (a damaged one is an error)."""
    clips = tokens = verified = 0
    models, encodings, failed = set(), set(), []
    for p in paths:
        meta = shard_metadata(p)
        models.add(meta.get("magvit2.model"))
        encodings.add(meta.get("magvit2.encoding", ONE_PASS))
        failed += json.loads(meta.get("magvit2.failed", "[]"))
        verified += verify_shard(p)
        table = read_shard(p).select(["shape"])
        clips += table.num_rows
        for shape in table.column("shape").to_pylist():
            n = 1
            for s in shape:
                n *= s
            tokens += n
    out = {
        "kind": "token shards",
        "path": str(where),
        "shards": len(paths),
        "clips": clips,
        "tokens": tokens,
        "models": sorted(m for m in models if m),
        "encodings": sorted(encodings),
        "failed": failed,
        "checksums_verified": verified,
    }
    manifest = manifest_path(where) if where.is_dir() else None
    if manifest is not None and manifest.is_file():
        out["manifest"] = json.loads(manifest.read_text())
    return out


def token_folder_info(paths: list[Path], where: Path) -> dict:
    """Files, frames, tokens, models and encodings of a folder of token files (``tokenize -o DIR``)."""
    files = [load_tokens(p) for p in paths]
    out = {
        "kind": "token files",
        "path": str(where),
        "files": len(files),
        "frames": sum(tf.frames for tf in files),
        "tokens": sum(int(tf.ids.numel()) for tf in files),
        "models": sorted({tf.model for tf in files}),
        "encodings": sorted({tf.encoding for tf in files}),
        "bytes": sum(p.stat().st_size for p in paths),
    }
    manifest = where / TOKEN_FOLDER_MANIFEST
    if manifest.is_file():
        out["manifest"] = json.loads(manifest.read_text())
    return out


def describe(target: str | None) -> dict:
    """Dispatch on what ``target`` is."""
    if target is None:
        return model_info(None)
    path = Path(target)
    if not path.exists():
        raise FileNotFoundError(f"{target}: no such file or folder")
    if path.is_dir():
        if (path / "config.json").is_file():
            return model_info(target)
        shards = sorted(path.glob("shard-*.parquet"))
        if shards:
            return shards_info(shards, path)
        token_files = sorted(p for p in path.rglob("*.safetensors") if not p.name.startswith("."))
        if token_files:
            return token_folder_info(token_files, path)
        raise ValueError(
            f"{target}: neither a tokenizer folder (config.json) nor a folder of token files or shards"
        )
    if path.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
        raise ValueError(
            f"{target}: an image or video; info describes model folders, token files and shards "
            "(magvit2 reconstruct shows what a model makes of it)"
        )
    if path.suffix == ".parquet":
        return shards_info([path], path)
    return token_file_info(path)


def _print(d: dict, indent: str = "") -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            print(f"{indent}{k}:")
            _print(v, indent + "  ")
        else:
            print(f"{indent}{k}: {v}")


def run(args: argparse.Namespace) -> int:
    """Print the description as text or JSON."""
    d = describe(args.target if args.target is not None else args.model)
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        _print(d)
    return 0
