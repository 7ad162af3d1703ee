"""Token files (one clip per safetensors file) and Parquet token shards (many clips per file)."""

from magvit2.tokens.format import (
    FORMAT_VERSION,
    TokenFile,
    TokenFileError,
    encoding_name,
    load_tokens,
    model_fingerprint,
    pack_ids,
    save_tokens,
    unpack_ids,
)

__all__ = [
    "FORMAT_VERSION",
    "TokenFile",
    "TokenFileError",
    "load_tokens",
    "encoding_name",
    "model_fingerprint",
    "pack_ids",
    "save_tokens",
    "unpack_ids",
]
