"""Codebook statistics over a dataset (usage, perplexity) and bits per pixel of a token grid.

* usage = number of distinct token ids seen / vocabulary size;
* perplexity = ``exp(H)`` with ``H = -sum_k p_k ln p_k`` the entropy (nats) of the id histogram over all
  tokens seen (1 when one id is always used, the vocabulary size when all ids are equally frequent);
* bits per pixel of a token grid = ``num_tokens * log2(vocab_size) / (frames * H * W)``; the actual bpp
  of an entropy-coded or compressed stream = ``num_bytes * 8 / (frames * H * W)``.

:class:`CodebookStats` streams: ids arrive batch by batch. Vocabularies up to ``2**18`` keep a dense
``torch.bincount`` histogram; larger ones (LFQ with 2^20+ ids) keep only the ids seen, merged with
``torch.unique``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "CodebookStats",
    "codebook_usage",
    "perplexity",
    "bits_per_pixel",
    "token_bits_per_pixel",
    "compressed_bits_per_pixel",
    "DENSE_VOCAB_LIMIT",
]

DENSE_VOCAB_LIMIT = 2**18


class CodebookStats:
    """Histogram of token ids over a dataset. ``update(ids)`` takes an integer tensor of any shape."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 1:
            raise ValueError(f"CodebookStats: vocab_size must be >= 1, got {vocab_size}")
        self.vocab_size = vocab_size
        self.dense = vocab_size <= DENSE_VOCAB_LIMIT
        self._counts = torch.zeros(vocab_size, dtype=torch.int64) if self.dense else None
        self._ids = torch.zeros(0, dtype=torch.int64)
        self._id_counts = torch.zeros(0, dtype=torch.int64)

    def update(self, ids: torch.Tensor) -> None:
        """Count the ids of one batch (integer tensor of any shape, values in [0, vocab_size))."""
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(
                f"CodebookStats.update: expected an integer tensor of ids, got dtype {ids.dtype}"
            )
        flat = ids.detach().reshape(-1).to(device="cpu", dtype=torch.int64)
        if flat.numel() == 0:
            return
        lo, hi = int(flat.min()), int(flat.max())
        if lo < 0 or hi >= self.vocab_size:
            raise ValueError(
                f"CodebookStats.update: ids must lie in [0, {self.vocab_size}), got [{lo}, {hi}]"
            )
        if self.dense:
            self._counts += torch.bincount(flat, minlength=self.vocab_size)
            return
        ids_all = torch.cat([self._ids, flat])
        weights = torch.cat([self._id_counts, torch.ones_like(flat)])
        self._ids, inverse = torch.unique(ids_all, return_inverse=True)
        self._id_counts = torch.zeros(self._ids.numel(), dtype=torch.int64).index_add_(0, inverse, weights)

    def counts(self) -> torch.Tensor:
        """Counts of the ids that occurred at least once, (K,) int64 (K distinct ids)."""
        if self.dense:
            return self._counts[self._counts > 0]
        return self._id_counts.clone()

    @property
    def num_tokens(self) -> int:
        """Total number of tokens counted."""
        return int(self.counts().sum())

    def usage(self) -> float:
        """Fraction of the vocabulary used at least once, in [0, 1]."""
        return self.counts().numel() / self.vocab_size

    def entropy(self, base: float = math.e) -> float:
        """Entropy of the id histogram (nats by default; ``base=2`` for bits)."""
        c = self.counts().to(torch.float64)
        if c.numel() == 0:
            raise ValueError("CodebookStats: no tokens were counted")
        p = c / c.sum()
        return float(-(p * p.log()).sum()) / math.log(base)

    def perplexity(self) -> float:
        """``exp(entropy)``: the effective number of equally used ids."""
        return math.exp(self.entropy())


def codebook_usage(ids: torch.Tensor, vocab_size: int) -> float:
    """Fraction of the vocabulary that occurs in ``ids`` (integer tensor of any shape)."""
    stats = CodebookStats(vocab_size)
    stats.update(ids)
    return stats.usage()


def perplexity(ids: torch.Tensor, vocab_size: int) -> float:
    """Perplexity ``exp(H)`` of the id histogram of ``ids`` (integer tensor of any shape)."""
    stats = CodebookStats(vocab_size)
    stats.update(ids)
    return stats.perplexity()


def bits_per_pixel(num_tokens: int, vocab_size: int, frames: int, height: int, width: int) -> float:
    """``num_tokens * log2(vocab_size) / (frames * height * width)`` (fixed-length code for each token)."""
    if min(num_tokens, frames, height, width) < 0 or vocab_size < 1 or frames * height * width == 0:
        raise ValueError(
            f"bits_per_pixel: expected non-negative sizes and vocab_size >= 1, got num_tokens={num_tokens}, "
            f"vocab_size={vocab_size}, frames={frames}, height={height}, width={width}"
        )
    return num_tokens * math.log2(vocab_size) / (frames * height * width)


def token_bits_per_pixel(
    token_shape: tuple[int, ...], vocab_size: int, video_shape: tuple[int, ...]
) -> float:
    """bpp of a token grid, e.g. token_shape (5, 16, 16) for video_shape (17, 128, 128) (frames, H, W).

    Both shapes exclude batch and channel axes; an image is ``(H, W)`` (one frame).
    """
    if len(video_shape) == 2:
        video_shape = (1, *video_shape)
    if len(video_shape) != 3:
        raise ValueError(f"token_bits_per_pixel: video_shape must be (T, H, W) or (H, W), got {video_shape}")
    return bits_per_pixel(math.prod(token_shape), vocab_size, *video_shape)


def compressed_bits_per_pixel(num_bytes: int, frames: int, height: int, width: int) -> float:
    """Actual bpp of a compressed stream of ``num_bytes`` bytes: ``num_bytes * 8 / (frames * H * W)``."""
    if num_bytes < 0 or frames * height * width <= 0:
        raise ValueError(
            f"compressed_bits_per_pixel: expected num_bytes >= 0 and positive sizes, got {num_bytes}, "
            f"{frames}x{height}x{width}"
        )
    return num_bytes * 8 / (frames * height * width)
