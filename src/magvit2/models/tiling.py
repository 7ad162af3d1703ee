"""Spatial tiling: encode and decode frames larger than memory allows, one overlapping tile at a time.

Tiles are planned on the latent grid of the whole frame, so tiled and untiled token grids have the same
shape and either can be decoded either way:

* **encode**: each tile's pixels are encoded; every latent position takes its value from the tile whose
  centre is nearest (the overlap is split down the middle), so positions near a tile's inner border,
  which see padding instead of the neighbour's pixels, are not used.
* **decode**: each tile's part of the latent grid is decoded and the pixels are blended with weights
  that ramp linearly across each overlap, so no seam is visible.

With ``norm="channel"`` no statistic spans a frame and a latent position depends only on pixels within
the encoder's receptive field: when half the overlap covers that field, tiled encoding gives exactly the
whole-frame tokens. With ``norm="group"`` each tile normalises with its own statistics, so tiling is an
approximation (close for tiles much larger than the objects in them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def pad_to_multiple(video: Tensor, factor: int) -> tuple[Tensor, int, int]:
    """Pad ``(..., H, W)`` at the bottom/right by edge replication to multiples of ``factor``.

    Returns the padded tensor and the padding added (bottom, right); crop it off with
    :func:`crop_padding`.
    """
    h, w = video.shape[-2:]
    pad_b, pad_r = (-h) % factor, (-w) % factor
    if pad_b or pad_r:
        lead = video.shape[:-2]
        flat = video.reshape(-1, 1, h, w)
        flat = F.pad(flat, (0, pad_r, 0, pad_b), mode="replicate")
        video = flat.reshape(*lead, h + pad_b, w + pad_r)
    return video, pad_b, pad_r


def crop_padding(video: Tensor, pad_bottom: int, pad_right: int) -> Tensor:
    """Remove bottom/right padding from ``(..., H, W)``."""
    h, w = video.shape[-2:]
    return video[..., : h - pad_bottom, : w - pad_right]


@dataclass(frozen=True)
class Tile:
    """A tile in latent units: rows ``[top, top+size_h)``, columns ``[left, left+size_w)``.

    ``own_rows``/``own_cols`` are the latent rows/columns whose values this tile provides.
    """

    top: int
    left: int
    size_h: int
    size_w: int
    own_rows: tuple[int, int]
    own_cols: tuple[int, int]


def _axis_tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int, int]]:
    """1-D tiling of ``length`` -> (start, own_start, own_end) per tile, latent units."""
    if tile >= length:
        return [(0, 0, length)]
    stride = max(1, tile - overlap)
    starts = sorted(set(range(0, length - tile, stride)) | {length - tile})
    out = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (starts[i - 1] + tile + s) // 2
        hi = length if i == len(starts) - 1 else (s + tile + starts[i + 1]) // 2
        out.append((s, lo, hi))
    return out


def plan_tiles(h: int, w: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering an ``h`` x ``w`` latent grid (all sizes in latent units); every tile
    has the same size, so tiles can be batched."""
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(
            f"tiles need tile >= 1 and 0 <= overlap < tile (latent units), got {tile}, {overlap}"
        )
    rows, cols = _axis_tiles(h, tile, overlap), _axis_tiles(w, tile, overlap)
    return [
        Tile(r, c, min(tile, h), min(tile, w), (r0, r1), (c0, c1)) for r, r0, r1 in rows for c, c0, c1 in cols
    ]


def ramp(size: int, lead: int, trail: int, margin: int = 0) -> Tensor:
    """1-D blending weights: 0 over the first ``margin`` of ``lead`` samples, then a linear rise over
    the rest of ``lead``, 1 in the middle, and the mirror image over the last ``trail`` samples.

    The margin drops the pixels next to a tile's inner border, which the network computed with too
    little context; the neighbouring tile covers them with full weight.
    """
    w = torch.ones(size)
    if lead:
        m = min(margin, (lead - 1) // 2)
        w[:lead] = 0.0
        w[m:lead] = torch.arange(1, lead - m + 1) / (lead - m + 1)
    if trail:
        m = min(margin, (trail - 1) // 2)
        w[size - trail :] = 0.0
        w[size - trail : size - m] = torch.arange(trail - m, 0, -1) / (trail - m + 1)
    return w


@dataclass(frozen=True)
class Tiling:
    """Tile size and overlap in pixels (see :meth:`VideoTokenizer.enable_tiling`)."""

    tile: int = 256
    overlap: int | None = None  # None: a quarter of the tile

    def __post_init__(self) -> None:
        if not isinstance(self.tile, int) or self.tile < 1:
            raise ValueError(f"tile: expected an int >= 1 (pixels), got {self.tile!r}")
        if self.overlap is not None and not 0 <= self.overlap < self.tile:
            raise ValueError(
                f"tile overlap: expected 0 <= overlap < tile ({self.tile} px), got {self.overlap}"
            )

    def plan(self, h: int, w: int, factor: int) -> TilePlan:
        """The tiles of an ``h`` x ``w`` latent grid at ``factor`` pixels per latent position."""
        tile = max(1, self.tile // factor)
        overlap = self.tile // 4 if self.overlap is None else self.overlap
        return TilePlan(plan_tiles(h, w, tile, min(overlap // factor, tile - 1)), h, w, factor)


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one frame size and the two operations on them: :meth:`encode` (keep each tile's
    owned latent positions) and :meth:`decode` (blend the tiles' pixels)."""

    tiles: list[Tile]
    h: int
    w: int
    factor: int

    def groups(self, batch: int) -> list[range]:
        """Tile indices in groups of at most ``batch`` (one forward pass each)."""
        n = len(self.tiles)
        return [range(i, min(i + batch, n)) for i in range(0, n, batch)]

    def crop(self, x: Tensor, t: Tile, factor: int = 1) -> Tensor:
        """Tile ``t`` of ``x`` ``(..., H, W)``, ``factor`` units of ``x`` per latent position."""
        f = factor
        return x[..., t.top * f : (t.top + t.size_h) * f, t.left * f : (t.left + t.size_w) * f]

    def map(
        self, x: Tensor, run: Callable[[Tensor, int], Tensor], factor: int, batch: int = 1
    ) -> list[Tensor]:
        """``run(crops, group)`` on the tiles of ``x`` (``factor`` units per latent position) in groups
        of ``batch`` tiles concatenated along dim 0 -> each tile's output (in tile order)."""
        b, outs = x.shape[0], []
        for g, group in enumerate(self.groups(batch)):
            out = run(torch.cat([self.crop(x, self.tiles[i], factor) for i in group]), g)
            outs.extend(out.split(b))
        return outs

    def assemble(self, per_tile: list[Tensor]) -> Tensor:
        """Per-tile latent outputs ``(..., th, tw)`` -> the frame's grid ``(..., h, w)``, each position
        from the tile that owns it."""
        out = per_tile[0].new_zeros((*per_tile[0].shape[:-2], self.h, self.w))
        for t, part in zip(self.tiles, per_tile, strict=True):
            (r0, r1), (c0, c1) = t.own_rows, t.own_cols
            out[..., r0:r1, c0:c1] = part[..., r0 - t.top : r1 - t.top, c0 - t.left : c1 - t.left]
        return out

    def blend(self, per_tile: list[Tensor]) -> Tensor:
        """Per-tile pixels ``(..., th*f, tw*f)`` -> the frame ``(..., h*f, w*f)``, overlaps blended with
        linear ramps (the quarter of each overlap next to a tile's inner border left out)."""
        f, h, w = self.factor, self.h, self.w
        acc = per_tile[0].new_zeros((*per_tile[0].shape[:-2], h * f, w * f))
        weight = per_tile[0].new_zeros((h * f, w * f))
        for t, pix in zip(self.tiles, per_tile, strict=True):
            lead_r = (t.own_rows[0] - t.top) * 2 * f if t.top > 0 else 0
            trail_r = (t.top + t.size_h - t.own_rows[1]) * 2 * f if t.own_rows[1] < h else 0
            lead_c = (t.own_cols[0] - t.left) * 2 * f if t.left > 0 else 0
            trail_c = (t.left + t.size_w - t.own_cols[1]) * 2 * f if t.own_cols[1] < w else 0
            ph, pw = t.size_h * f, t.size_w * f
            margin = max(lead_r, trail_r, lead_c, trail_c) // 4
            wr = ramp(ph, min(lead_r, ph), min(trail_r, ph), margin)
            wc = ramp(pw, min(lead_c, pw), min(trail_c, pw), margin)
            wt = (wr[:, None] * wc[None, :]).to(pix)
            rs, cs = slice(t.top * f, t.top * f + ph), slice(t.left * f, t.left * f + pw)
            acc[..., rs, cs] += pix * wt
            weight[rs, cs] += wt
        return acc / weight

    def encode(self, video: Tensor, run: Callable[[Tensor, int], Tensor], batch: int = 1) -> Tensor:
        """Pixels ``(..., H, W)`` -> latent grid ``(..., h, w)`` (``run`` maps a group's pixel crops to
        their latent crops)."""
        return self.assemble(self.map(video, run, self.factor, batch))

    def decode(self, latent: Tensor, run: Callable[[Tensor, int], Tensor], batch: int = 1) -> Tensor:
        """Latent grid (ids ``(B, n, h, w)`` or codes ``(B, Z, n, h, w)``) -> blended pixels (``run`` maps
        a group's latent crops to their pixels)."""
        return self.blend(self.map(latent, run, 1, batch))
