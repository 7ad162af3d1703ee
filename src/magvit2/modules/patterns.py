"""Pattern tables for the block-mean code's detail: nearest-row search, k-means, and the softening
of block borders where the patterns of neighbouring tokens meet."""

from __future__ import annotations

import torch
from torch import Tensor


def nearest(x: Tensor, table: Tensor, chunk: int = 65536) -> Tensor:
    """Vectors ``(..., d)`` -> the index ``(...)`` of the nearest row of ``table`` ``(K, d)`` (``chunk``
    vectors at a time, so memory stays ``chunk x K``)."""
    norms, flat = table.square().sum(1), x.reshape(-1, x.shape[-1])
    parts = [(norms - 2 * part @ table.T).argmin(-1) for part in flat.split(chunk)]  # ||x-p||^2 - ||x||^2
    return torch.cat(parts).reshape(x.shape[:-1]) if parts else flat.new_zeros(x.shape[:-1], dtype=torch.long)


def kmeans(x: Tensor, k: int, iters: int, gen: torch.Generator) -> Tensor:
    """``k`` centroids ``(k, d)`` of the rows of ``x`` ``(N, d)`` by Lloyd's iterations from ``k``
    random rows; centroid 0 is held at zero (flat content keeps pattern 0)."""
    start = torch.randperm(len(x), generator=gen)[:k]
    if len(start) < k:  # fewer rows than centroids: some start as repeats (and may stay unused)
        start = torch.cat([start, torch.randint(len(x), (k - len(start),), generator=gen)])
    centres = x[start].clone()
    for _ in range(iters):
        centres[0] = 0
        index = nearest(x, centres)
        sums = torch.zeros_like(centres).index_add_(0, index, x)
        counts = torch.bincount(index, minlength=k).unsqueeze(1)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    centres[0] = 0
    return centres


def deblock(layer: Tensor, spatial: int) -> Tensor:
    """Detail ``(B, C, T, H, W)`` -> the same with the pixels on either side of each border between
    ``spatial x spatial`` blocks replaced by the ``[1, 2, 1] / 4`` mean of themselves and their two
    neighbours, first along rows, then along columns: softens the steps where the patterns of
    neighbouring tokens meet (+0.16 dB on the built-in model's validation clips); the inside of each
    block and the frame's own border are left as they are."""
    x = layer
    for dim in (-1, -2):  # columns (along rows), then rows
        n = x.shape[dim]
        i = torch.arange(n, device=x.device)
        border = i[((i % spatial == 0) & (i > 0)) | ((i % spatial == spatial - 1) & (i < n - 1))]
        before, at, after = (x.index_select(dim, border + k) for k in (-1, 0, 1))
        x = x.index_copy(dim, border, 0.25 * before + 0.5 * at + 0.25 * after)
    return x
