"""The token file: a safetensors file holding one clip's token ids and what is needed to decode them.

Layout (format version 1):

* tensor ``ids``: int32 ``(T', h, w)`` token ids, or, when packed, tensor ``packed``: uint8 bytes of
  the ids written with ``bits`` bits each, most significant bit first (``numpy.packbits`` order);
* metadata (safetensors' string map): ``format`` = ``magvit2-tokens``, ``version``, ``model`` (the
  fingerprint of the model that made it), ``bits``, ``vocabulary``, ``shape`` (``T',h,w``),
  ``frames`` (frames of the source), ``height``/``width`` (source size), ``pad_bottom``/``pad_right``
  (pixels added to reach a multiple of the spatial factor), ``fps`` (a fraction ``num/den``),
  ``source`` (file name), ``packed`` (``0``/``1``), ``encoding`` (how the ids were found:
  ``encoder`` for the encoder's one pass, ``refined steps=N lr=X`` for token refinement; files
  written before this key existed read as ``encoder``), ``checksum`` (:func:`ids_checksum` of the
  ids and of the fields that decoding uses: ``model``, ``vocabulary``, ``shape``, ``frames``,
  ``height``, ``width``, ``pad_bottom``, ``pad_right``, ``fps``; verified on every read, so a flipped
  byte is refused as damaged; files written before this key existed read without the check).

A file written by another model, of an unknown version, truncated or corrupted raises
:class:`TokenFileError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from magvit2.fileio import atomic_path, set_default_permissions

FORMAT_NAME = "magvit2-tokens"
FORMAT_VERSION = 1
ONE_PASS = "encoder"  # the encoding of the encoder's own tokens (and of files without the key)


class TokenFileError(ValueError):
    """A token file that cannot be used (wrong model, unknown version, damaged)."""


@dataclass
class TokenFile:
    """One clip's tokens and the facts needed to turn them back into the source's frames.

    Attributes:
        ids: int64 token ids ``(T', h, w)``.
        model: fingerprint of the model that produced them (:func:`model_fingerprint`).
        vocabulary: the model's vocabulary size.
        frames, height, width: the source clip's frame count and size (before padding).
        pad_bottom, pad_right: pixels of padding added to reach multiples of the spatial factor.
        fps: frame rate of the source (1 for images).
        source: the source file's name.
        encoding: how the ids were found (:func:`encoding_name`): ``encoder`` (one pass) or
            ``refined steps=N lr=X`` (:mod:`magvit2.inference.refine`). The decoder reads both alike.
    """

    ids: torch.Tensor
    model: str
    vocabulary: int
    frames: int
    height: int
    width: int
    pad_bottom: int = 0
    pad_right: int = 0
    fps: Fraction = Fraction(1)
    source: str = ""
    encoding: str = ONE_PASS

    @property
    def bits(self) -> int:
        """Bits needed per id."""
        return max(1, (self.vocabulary - 1).bit_length())


def encoding_name(refine_steps: int = 0, refine_lr: float = 0.0) -> str:
    """The ``encoding`` recorded with tokens: ``encoder`` or ``refined steps=N lr=X``."""
    return ONE_PASS if refine_steps == 0 else f"refined steps={refine_steps} lr={refine_lr:g}"


def model_fingerprint(config: dict, state_dict: dict[str, torch.Tensor]) -> str:
    """A short hash of a model's config and weights: token files record it to refuse other models."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


#: The metadata fields of a token file that its checksum covers (those decoding uses).
CHECKED_FIELDS = (
    "model",
    "vocabulary",
    "shape",
    "frames",
    "height",
    "width",
    "pad_bottom",
    "pad_right",
    "fps",
)


def ids_checksum(ids: torch.Tensor | np.ndarray, fields: dict[str, str]) -> str:
    """``sha256:`` + the SHA-256 of ``fields`` (as sorted compact JSON, UTF-8) followed by the ids as
    little-endian int64 in row-major order: what token files and shard rows record to detect damage.

    To check one by hand: ``hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":"))
    .encode() + np.asarray(ids, "<i8").tobytes())``.
    """
    h = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    array = ids.numpy() if isinstance(ids, torch.Tensor) else ids
    h.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
    return "sha256:" + h.hexdigest()


def damaged(where: str, what: str = "token file") -> TokenFileError:
    """The error for ids or header fields that no longer match their checksum."""
    return TokenFileError(
        f"{where}: damaged {what}: its ids or header no longer match the checksum written with them"
    )


def pack_ids(ids: torch.Tensor, bits: int) -> torch.Tensor:
    """int ids (any shape) -> uint8 bytes holding ``bits`` bits per id, most significant first."""
    flat = ids.reshape(-1).to(torch.int64).numpy()
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        raise ValueError(f"ids must lie in [0, 2**{bits}) to be packed with {bits} bits")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    bit_matrix = ((flat[:, None] >> shifts) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(bit_matrix.reshape(-1)))


def unpack_ids(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_ids`: the first ``count`` ids as a flat int64 tensor."""
    raw = np.unpackbits(packed.numpy())
    if raw.size < count * bits:
        raise ValueError(f"packed data holds {raw.size} bits, {count} ids of {bits} bits need {count * bits}")
    bit_matrix = raw[: count * bits].reshape(count, bits).astype(np.int64)
    weights = np.left_shift(1, np.arange(bits - 1, -1, -1, dtype=np.int64))
    return torch.from_numpy(bit_matrix @ weights)


def save_tokens(path: str | Path, tf: TokenFile, *, packed: bool = False) -> None:
    """Write ``tf`` to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    ids = tf.ids.to(torch.int64)
    if packed:
        tensors = {"packed": pack_ids(ids, tf.bits)}
    else:
        if tf.vocabulary > 2**31:
            raise ValueError(f"vocabulary {tf.vocabulary} does not fit int32 ids; save with packed=True")
        tensors = {"ids": ids.to(torch.int32).contiguous()}
    meta = {
        "format": FORMAT_NAME,
        "version": str(FORMAT_VERSION),
        "model": tf.model,
        "bits": str(tf.bits),
        "vocabulary": str(tf.vocabulary),
        "shape": ",".join(str(s) for s in ids.shape),
        "frames": str(tf.frames),
        "height": str(tf.height),
        "width": str(tf.width),
        "pad_bottom": str(tf.pad_bottom),
        "pad_right": str(tf.pad_right),
        "fps": f"{tf.fps.numerator}/{tf.fps.denominator}",
        "source": tf.source,
        "packed": "1" if packed else "0",
        "encoding": tf.encoding,
    }
    meta["checksum"] = ids_checksum(ids, {k: meta[k] for k in CHECKED_FIELDS})
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except Exception as err:  # safetensors raises its own error type, not an OSError
            raise OSError(f"{path}: cannot write the token file ({err})") from err
        set_default_permissions(tmp)


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several error types for damaged files
        raise TokenFileError(f"{path}: not a readable token file (truncated or corrupted?): {err}") from err
    return meta, tensors


def load_tokens(path: str | Path, *, expect_model: str | None = None) -> TokenFile:
    """Read a token file; with ``expect_model`` refuse files made by another model."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {path} does not exist")
    meta, tensors = _read(path)
    if meta.get("format") != FORMAT_NAME:
        raise TokenFileError(f"{path}: not a magvit2 token file (format={meta.get('format')!r})")
    if meta.get("version") != str(FORMAT_VERSION):
        raise TokenFileError(
            f"{path}: token file version {meta.get('version')!r} is not supported "
            f"(this magvit2 reads version {FORMAT_VERSION})"
        )
    if expect_model is not None and meta["model"] != expect_model:
        raise TokenFileError(
            f"{path}: made by another model (fingerprint {meta['model']}, this model is {expect_model}); "
            "decode it with the model that tokenized it (--model)"
        )
    try:
        shape = tuple(int(s) for s in meta["shape"].split(","))
        bits = int(meta["bits"])
        if meta["packed"] == "1":
            ids = unpack_ids(tensors["packed"], bits, int(np.prod(shape))).reshape(shape)
        else:
            ids = tensors["ids"].to(torch.int64).reshape(shape)
        num, den = meta["fps"].split("/")
        tf = TokenFile(
            ids=ids,
            model=meta["model"],
            vocabulary=int(meta["vocabulary"]),
            frames=int(meta["frames"]),
            height=int(meta["height"]),
            width=int(meta["width"]),
            pad_bottom=int(meta["pad_bottom"]),
            pad_right=int(meta["pad_right"]),
            fps=Fraction(int(num), int(den)),
            source=meta.get("source", ""),
            encoding=meta.get("encoding", ONE_PASS),
        )
    except (KeyError, ValueError, RuntimeError) as err:
        raise TokenFileError(f"{path}: damaged token file metadata or data: {err}") from err
    if "checksum" in meta and ids_checksum(ids, {k: meta[k] for k in CHECKED_FIELDS}) != meta["checksum"]:
        raise damaged(str(path))
    check_ids(ids, tf.vocabulary, str(path))
    return tf


def check_ids(ids: torch.Tensor, vocabulary: int, where: str) -> None:
    """A :class:`TokenFileError` naming ``where`` if any id lies outside ``[0, vocabulary)``."""
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocabulary):
        raise TokenFileError(
            f"{where}: token ids out of range [0, {vocabulary}): found [{int(ids.min())}, {int(ids.max())}]"
        )
