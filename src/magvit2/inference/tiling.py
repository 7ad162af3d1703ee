"""Padding frames to the spatial factor, and encoding/decoding frames larger than a tile.

Tiling works on one token grid for the whole frame, so a tiled token file has exactly the shape of
an untiled one and either can be decoded either way:

* **encode**: the padded frame is cut into overlapping tiles; each tile is encoded; every latent
  position takes its token from the tile whose centre is nearest (the overlap is split down the
  middle), so positions near a tile's border, which see less context, are not used.
* **decode**: the token grid is cut into the same overlapping tiles; each is decoded and the pixels
  are blended with weights that ramp linearly across each overlap, so no seam is visible.
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

    ``own_rows``/``own_cols`` are the latent rows/columns whose tokens this tile provides.
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
    starts = list(range(0, length - tile, stride)) + [length - tile]
    starts = sorted(set(starts))
    out = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (starts[i - 1] + tile + s) // 2
        hi = length if i == len(starts) - 1 else (s + tile + starts[i + 1]) // 2
        out.append((s, lo, hi))
    return out


def plan_tiles(h: int, w: int, tile: int, overlap: int) -> list[Tile]:
    """Overlapping tiles covering an ``h`` x ``w`` latent grid (all sizes in latent units)."""
    if tile < 1 or overlap < 0 or overlap >= tile:
        raise ValueError(
            f"tiles need tile >= 1 and 0 <= overlap < tile (latent units), got {tile}, {overlap}"
        )
    rows, cols = _axis_tiles(h, tile, overlap), _axis_tiles(w, tile, overlap)
    return [
        Tile(r, c, min(tile, h), min(tile, w), (r0, r1), (c0, c1)) for r, r0, r1 in rows for c, c0, c1 in cols
    ]


def _ramp(size: int, lead: int, trail: int, margin: int = 0) -> Tensor:
    """1-D blending weights: 0 over the first ``margin`` of ``lead`` samples, then a linear rise over
    the rest of ``lead``, 1 in the middle, and the mirror image over the last ``trail`` samples.

    The margin drops the pixels next to a tile's inner border, which the network computed with too
    little context (zero padding instead of the neighbour's content); the neighbouring tile covers
    them with full weight.
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


def encode_tiled(
    video: Tensor, encode: Callable[[Tensor, int], Tensor], factor: int, tile: int, overlap: int
) -> Tensor:
    """Encode ``(B, C, T, H, W)`` tile by tile -> the token grid ``(B, T', H/f, W/f)``.

    ``encode(video_tile, tile_index)`` returns the tile's ids ``(B, T', th, tw)``; ``tile`` and
    ``overlap`` are in pixels (multiples of ``factor``).
    """
    h, w = video.shape[-2] // factor, video.shape[-1] // factor
    out = None
    for i, t in enumerate(plan_tiles(h, w, tile // factor, overlap // factor)):
        crop = video[
            ..., t.top * factor : (t.top + t.size_h) * factor, t.left * factor : (t.left + t.size_w) * factor
        ]
        ids = encode(crop, i)
        if out is None:
            out = ids.new_zeros((*ids.shape[:-2], h, w))
        (r0, r1), (c0, c1) = t.own_rows, t.own_cols
        out[..., r0:r1, c0:c1] = ids[..., r0 - t.top : r1 - t.top, c0 - t.left : c1 - t.left]
    return out


def decode_tiled(
    ids: Tensor,
    decode: Callable[[Tensor, int], Tensor],
    factor: int,
    tile: int,
    overlap: int,
    margin: int = 0,
) -> Tensor:
    """Decode a token grid ``(B, T', h, w)`` tile by tile, blending overlaps -> ``(B, C, T, h*f, w*f)``.

    ``decode(ids_tile, tile_index)`` returns the tile's pixels ``(B, C, T, th*f, tw*f)``. ``margin``
    (pixels): at each inner tile border, that many pixels get weight 0 and the linear ramp runs over
    the rest of the overlap (at most half the overlap is dropped, so the two tiles always blend).
    """
    h, w = ids.shape[-2:]
    tiles = plan_tiles(h, w, tile // factor, overlap // factor)
    acc = weight = None
    for i, t in enumerate(tiles):
        pix = decode(ids[..., t.top : t.top + t.size_h, t.left : t.left + t.size_w], i)
        if acc is None:
            acc = pix.new_zeros((*pix.shape[:-2], h * factor, w * factor))
            weight = pix.new_zeros((h * factor, w * factor))
        # overlap with neighbours on each side, in pixels
        lead_r = (t.own_rows[0] - t.top) * 2 * factor if t.top > 0 else 0
        trail_r = (t.top + t.size_h - t.own_rows[1]) * 2 * factor if t.own_rows[1] < h else 0
        lead_c = (t.own_cols[0] - t.left) * 2 * factor if t.left > 0 else 0
        trail_c = (t.left + t.size_w - t.own_cols[1]) * 2 * factor if t.own_cols[1] < w else 0
        ph, pw = t.size_h * factor, t.size_w * factor
        wr = _ramp(ph, min(lead_r, ph), min(trail_r, ph), margin)
        wc = _ramp(pw, min(lead_c, pw), min(trail_c, pw), margin)
        wt = (wr[:, None] * wc[None, :]).to(pix)
        rs, cs = slice(t.top * factor, t.top * factor + ph), slice(t.left * factor, t.left * factor + pw)
        acc[..., rs, cs] += pix * wt
        weight[rs, cs] += wt
    return acc / weight
