"""Language-model data: the clips of Parquet token shards, random training windows of whole latent
frames, held-out windows, and the unigram counts of the training tokens.

A training micro-batch is a pure function of ``(seed, step, micro-batch, rank)``: no iterator state,
so a resumed run reads exactly what an uninterrupted run would. Under ``torchrun`` rank ``r`` of
``W`` draws from clips ``r, r+W, ...`` (all clips when there are fewer than ``W``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from torch import Tensor

from magvit2.config_io import resolve_path
from magvit2.tokens.format import TokenFileError
from magvit2.tokens.shards import SHARD_FORMAT, read_shard, shard_metadata


@dataclass
class TokenClips:
    """Clips of token grids: ``ids[i]`` int64 ``(T', h, w)``, from ``sources[i]``."""

    ids: list[Tensor]
    sources: list[str]
    vocabulary: int

    @property
    def grid(self) -> tuple[int, int]:
        """The smallest ``(h, w)`` over the clips."""
        return min(c.shape[1] for c in self.ids), min(c.shape[2] for c in self.ids)

    def counts(self) -> Tensor:
        """How often each id occurs: ``(vocabulary,)`` int64."""
        flat = torch.cat([c.reshape(-1) for c in self.ids])
        return torch.bincount(flat, minlength=self.vocabulary)


def shard_files(paths: list[str], what: str = "data.paths") -> list[Path]:
    """Shard files and folders of them (``*.parquet``, sorted) -> files."""
    files: list[Path] = []
    for item in paths:
        path = Path(resolve_path(item))
        if path.is_dir():
            found = sorted(path.glob("*.parquet"))
            if not found:
                raise FileNotFoundError(f"{path}: no token shards (*.parquet) in this folder ({what})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such shard or folder ({what})")
    if not files:
        raise ValueError(f"{what}: expected token shards (magvit2 tokenize ... --shard-size N), got none")
    return files


def load_clips(
    paths: list[str], fingerprint: str | None, tokenizer: str = "", what: str = "data.paths"
) -> TokenClips:
    """Read every clip of the shards; shards made by a tokenizer whose fingerprint differs from
    ``fingerprint`` are refused with a one-line error naming the shard."""
    ids, sources, vocabulary = [], [], None
    for path in shard_files(paths, what):
        meta = shard_metadata(path)
        if meta.get("magvit2.format") != SHARD_FORMAT:
            raise TokenFileError(f"{path}: not a magvit2 token shard (no {SHARD_FORMAT} metadata)")
        model = meta.get("magvit2.model", "")
        if fingerprint is not None and model != fingerprint:
            raise TokenFileError(
                f"{path}: tokens of another tokenizer (fingerprint {model}); the tokenizer {tokenizer or ''} "
                f"named by the config has fingerprint {fingerprint}: tokenize with it, or name the one that "
                "made them"
            )
        vocab = int(meta.get("magvit2.vocabulary", 0))
        if vocabulary is not None and vocab != vocabulary:
            raise TokenFileError(f"{path}: vocabulary {vocab}, the shards before it have {vocabulary}")
        vocabulary = vocab
        try:
            table = read_shard(path)
        except (OSError, pa.ArrowException) as err:
            raise TokenFileError(f"{path}: not a readable Parquet token shard: {err}") from err
        columns = [table.column(name).to_pylist() for name in ("source", "shape", "ids")]
        for source, shape, flat in zip(*columns, strict=True):
            ids.append(torch.as_tensor(np.asarray(flat, dtype=np.int64)).reshape(shape))
            sources.append(source)
    if not ids:
        raise ValueError(f"{what}: the shards hold no clips")
    return TokenClips(ids, sources, vocabulary or 0)


def class_names(clips: TokenClips) -> list[str]:
    """Sorted names of the folders the clips' sources lay in (``data.class_from: folder``)."""
    return sorted({Path(s).parent.name for s in clips.sources})


class WindowSampler:
    """Random windows of whole latent frames ``(B, frames, h, w)`` (cropped to ``h x w`` at a random
    place when a clip's grid is larger), with the clips' class ids when ``labels`` is given."""

    def __init__(
        self,
        clips: TokenClips,
        height: int,
        width: int,
        seed: int,
        labels: list[int] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        mine = (
            range(rank, len(clips.ids), world_size) if len(clips.ids) >= world_size else range(len(clips.ids))
        )
        self.clips = [clips.ids[i] for i in mine]
        self.labels = [labels[i] for i in mine] if labels is not None else None
        self.height, self.width, self.seed, self.rank = height, width, seed, rank
        small = [c.shape for c in self.clips if c.shape[1] < height or c.shape[2] < width]
        if small:
            raise ValueError(
                f"data: a clip's token grid {tuple(small[0][1:])} is smaller than the model's "
                f"{height}x{width}"
            )

    def batch(self, step: int, micro: int, frames: int, batch_size: int) -> tuple[Tensor, Tensor | None]:
        """Micro-batch ``micro`` of ``step``: (ids ``(B, frames, h, w)``, classes ``(B,)`` or None)."""
        rng = np.random.default_rng([self.seed, step, micro, self.rank])
        starts = np.array([max(0, c.shape[0] - frames + 1) for c in self.clips], dtype=np.float64)
        if starts.sum() == 0:
            longest = max(c.shape[0] for c in self.clips)
            raise ValueError(f"data: windows of {frames} latent frames, but the longest clip has {longest}")
        picks = rng.choice(len(self.clips), size=batch_size, p=starts / starts.sum())
        out = []
        for i in picks:
            clip = self.clips[i]
            t0 = rng.integers(0, clip.shape[0] - frames + 1)
            r0 = rng.integers(0, clip.shape[1] - self.height + 1)
            c0 = rng.integers(0, clip.shape[2] - self.width + 1)
            out.append(clip[t0 : t0 + frames, r0 : r0 + self.height, c0 : c0 + self.width])
        labels = torch.tensor([self.labels[i] for i in picks]) if self.labels is not None else None
        return torch.stack(out), labels


def eval_windows(
    clips: TokenClips, frames: int, height: int, width: int, max_windows: int | None = None
) -> Tensor:
    """Non-overlapping windows of ``frames`` latent frames from each clip, in order (top-left
    ``h x w`` of larger grids) -> ``(N, frames, h, w)``."""
    out = []
    for clip in clips.ids:
        for t0 in range(0, clip.shape[0] - frames + 1, frames):
            out.append(clip[t0 : t0 + frames, :height, :width])
    if not out:
        longest = max(c.shape[0] for c in clips.ids)
        raise ValueError(f"held-out windows of {frames} latent frames, but the longest clip has {longest}")
    return torch.stack(out[:max_windows] if max_windows else out)
