"""Block-mean code: each token's block mean colour, quantized by a fixed rule into sign bits.

A tokenizer with ``TokenizerConfig.mean_bits = (6, 5, 5)`` spends 16 of its bits per token on the
mean colour of the pixels the token covers (frame 0 alone, then groups of ``t`` frames; ``s x s``
pixels), with ``mean_slope_bits = 2`` 2 more on how that colour moves across the group's frames, and
the rest (if any) on what its encoder learns:

* colour space YCoCg (exactly invertible, decorrelates natural images' channels)::

      Y  = (R + 2G + B) / 4       Co = (R - B) / 2       Cg = (2G - R - B) / 4      (each in [-1, 1])
      R  = Y + Co - Cg            G  = Y + Cg            B  = Y - Co - Cg

* ``Y`` on ``2^b - 1`` uniform levels from -1 to 1 (so black, white and mid grey are levels);
  ``Co`` and ``Cg`` through ``u = sign(c) sqrt(|c|)`` on ``2^b - 1`` uniform levels of ``u``:
  steps are fine near grey, where natural colours lie, and 0, +-0.5 and +-1 (the RGB cube's
  corners) are (nearly) levels;
* each level index written in binary, least significant bit first, as +-1 code channels, so the
  LFQ quantizer after the encoder leaves them as they are and the token id holds them as bits.

``render`` turns decoded means back into frames: bicubic upsampling with replicated edges, then
back-projection so that each block of the picture has its mean. In time the frames of a group follow
a line through the group's mean whose slope is ``a`` times the change since the previous group's
mean (per frame), scaled down per block where a frame would leave [-1, 1]::

    frame_k = m_j + a * (m_j - m_{j-1}) / d * (k - (t - 1) / 2)      k = 0 .. t-1

(``d``: frames between the two groups' centres). ``a`` is either one number for every block
(``slope``; 0: each group's mean on all its frames) or, with ``slope_bits = 2``, chosen per block
and group among :data:`SLOPE_STEPS` by the encoder: the step whose line is nearest the least-squares
line through the group's own frames, written as two more sign bits. The offsets sum to zero, so each
group keeps its mean; the line only uses earlier groups, so coding stays causal; a flat or black
stretch stays flat. A decoder network (where there is one) adds its output to that picture, so flat
colours, ramps and a clip's overall colour are right by construction and the network models the
detail.

Two options spend bits on detail inside the block instead of on colour precision:

* ``chroma_share = 2``: one ``(Co, Cg)`` per 2x2 tokens (16x16 pixels at ``s = 8``), its
  ``bits[1] + bits[2]`` bits split into four equal pieces, one per token (row-major in the 2x2).
  The decoder interpolates that chroma to the token grid (:func:`render_blocks` at factor 2) before
  rendering. Tokens of an incomplete 2x2 at the bottom or right edge of an odd grid keep their own
  ``(Co, Cg)`` instead, in the bits their piece and detail would use.
* ``detail_bits = d``: the index of one of ``2^d`` luma patterns added to the token's pixels (the
  same to R, G and B): a pattern of ``t`` frames of ``s x s`` pixels for a group, and a pattern of
  one frame for frame 0 alone (a clip's first latent frame, an image); the table ``detail`` holds
  both, ``(2^d, 1 + t, s*s)``. The patterns are the model's fitted part: :func:`fit_detail` fits
  them by k-means to what the rendered means miss on training clips; pattern 0 is all zeros, so
  flat content stays exact. The encoder picks the pattern nearest the token's luma residual, which
  minimises its squared error; the decoder softens the pixels on either side of each block border
  (:func:`~magvit2.modules.patterns.deblock`), where the patterns of neighbouring tokens meet.

The built-in model uses both: ``bits = (6, 6, 6)``, ``slope = 0.75``, ``chroma_share = 2`` and
``detail_bits = 9``, so a token is 6 bits of luma, a 3-bit chroma piece and a 9-bit pattern index
(18 bits), with no network on either side.

Channel order of a code, each field least significant bit first: the ``slope_bits``; Y; then Co and
Cg (or, with ``chroma_share = 2``, the token's chroma piece); then the detail index. So in an LFQ
token id of the plain code the mean colour is the low ``sum(bits)`` bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from magvit2.modules.patterns import deblock, kmeans, nearest


def rgb_to_ycocg(x: Tensor) -> Tensor:
    """RGB ``(B, 3, ...)`` in [-1, 1] -> YCoCg ``(B, 3, ...)``, each channel in [-1, 1]."""
    r, g, b = x.unbind(1)
    return torch.stack(((r + 2 * g + b) / 4, (r - b) / 2, (2 * g - r - b) / 4), dim=1)


def ycocg_to_rgb(x: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycocg`: YCoCg ``(B, 3, ...)`` -> RGB ``(B, 3, ...)``."""
    y, co, cg = x.unbind(1)
    return torch.stack((y + co - cg, y + cg, y - co - cg), dim=1)


def group_means(video: Tensor, temporal: int, spatial: int, first: bool) -> Tensor:
    """Video ``(B, C, T, H, W)`` -> block means ``(B, C, n, H/s, W/s)``: the mean of every block one
    token covers (``H`` and ``W`` multiples of ``s``).

    ``first``: the frames start a clip, so frame 0 is a group of its own (``T = 1 + t*k`` gives
    ``n = 1 + k``); otherwise they continue one (``T = t*k`` gives ``n = k``). Then groups of ``t``
    frames; a last short group is averaged over the frames it has.
    """
    parts = [video[:, :, :1]] if first else []
    rest = video[:, :, 1:] if first else video
    if rest.shape[2]:
        parts.append(F.avg_pool3d(rest, (temporal, 1, 1), ceil_mode=True))
    return F.avg_pool3d(torch.cat(parts, dim=2), (1, spatial, spatial))


def upsample_blocks(small: Tensor, spatial: int) -> Tensor:
    """Block values ``(N, C, h, w)`` -> ``(N, C, h*s, w*s)``: bicubic upsampling with the edges
    replicated (each value lands on the centre of its block)."""
    h, w, s = small.shape[2], small.shape[3], spatial
    big = F.interpolate(F.pad(small, (1, 1, 1, 1), mode="replicate"), scale_factor=s, mode="bicubic")
    return big[..., s : s + h * s, s : s + w * s]


#: Back-projection passes of :func:`render_blocks`. Each at least halves the error of the picture's
#: block means (random means: mean error 0.13 with none, 0.022 after two); on the built-in model's
#: validation clips two add 0.12 dB to plain bicubic upsampling of the means, and more add nothing.
BACK_PROJECTION_PASSES = 2


#: The slope multipliers ``slope_bits = 2`` choose between (index = the two bits, low bit first).
#: Part of the token format: other values would change what existing tokens decode to.
SLOPE_STEPS = (0.0, 0.5, 1.0, 2.0)


def render_blocks(small: Tensor, spatial: int, passes: int = BACK_PROJECTION_PASSES) -> Tensor:
    """Block means ``(N, C, h, w)`` -> a picture ``(N, C, h*s, w*s)`` whose ``s x s`` block means are
    (nearly) those values: :func:`upsample_blocks`, then ``passes`` back-projection steps, each adding
    the upsampled difference between the wanted means and the picture's own."""
    big = upsample_blocks(small, spatial)
    for _ in range(passes):
        big = big + upsample_blocks(small - F.avg_pool2d(big, spatial), spatial)
    return big


class BlockMeanCode(nn.Module):
    """Fixed code of block mean colours (with ``detail_bits``, plus a fitted pattern table); see the
    module docstring.

    Args:
        bits: bits for ``(Y, Co, Cg)``, each 1 to 8.
        temporal, spatial: the tokenizer's temporal and spatial factors (frames and pixels per token).
        slope: how far :meth:`render` carries the change between consecutive groups' means into the
            frames of a group, in [0, 1] (0: each group's mean on all its frames).
        slope_bits: 0, or 2 to code that factor per block and group (then ``slope`` must be 0).
        chroma_share: 1 (each token its own chroma) or 2 (one chroma per 2x2 tokens).
        detail_bits: 0, or the bits of a luma pattern index per token (table ``detail``, zeros until
            fitted or loaded).
    """

    def __init__(
        self,
        bits: tuple[int, int, int],
        temporal: int,
        spatial: int,
        slope: float = 0.0,
        slope_bits: int = 0,
        chroma_share: int = 1,
        detail_bits: int = 0,
    ) -> None:
        super().__init__()
        if len(bits) != 3 or not all(1 <= int(b) <= 8 for b in bits):
            raise ValueError(f"BlockMeanCode: expected 3 bit counts (Y, Co, Cg) in [1, 8], got {bits}")
        if not 0 <= slope <= 1:
            raise ValueError(f"BlockMeanCode: expected slope in [0, 1], got {slope}")
        if slope_bits not in (0, 2) or (slope_bits and slope):
            raise ValueError(
                f"BlockMeanCode: expected slope_bits 0, or 2 with slope 0; got {slope_bits}, {slope}"
            )
        self.bits = tuple(int(b) for b in bits)
        self.temporal, self.spatial, self.slope, self.slope_bits = temporal, spatial, float(slope), slope_bits
        self.chroma_share, self.detail_bits = chroma_share, detail_bits
        check_layout(self.bits, chroma_share, detail_bits)
        #: bits of the chroma field each token holds: its (Co, Cg), or its piece of the shared one
        self.chroma_bits = (bits[1] + bits[2]) // chroma_share**2
        #: with chroma_share 2, the bits of Co and of Cg of an edge token (its own chroma)
        self.own_bits = (self.chroma_bits + detail_bits) // 2
        table = torch.zeros(2**detail_bits, 1 + temporal, spatial * spatial) if detail_bits else None
        self.register_buffer("detail", table)  # (patterns, 1 + t, s*s) luma: frame 0, then a group

    @property
    def channels(self) -> int:
        """Code channels (bits per token): slope, Y, chroma field and detail index."""
        return self.slope_bits + self.bits[0] + self.chroma_bits + self.detail_bits

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, temporal={self.temporal}, spatial={self.spatial}, slope={self.slope}, "
            f"slope_bits={self.slope_bits}, chroma_share={self.chroma_share}, detail_bits={self.detail_bits}"
        )

    def quantize(self, ycocg: Tensor) -> list[Tensor]:
        """YCoCg ``(B, 3, ...)`` -> per component int64 level indices ``(B, ...)`` at ``bits``."""
        return [quantize_level(ycocg[:, i], b, companded=i > 0) for i, b in enumerate(self.bits)]

    def dequantize(self, levels: list[Tensor]) -> Tensor:
        """Per component level indices ``(B, ...)`` -> YCoCg ``(B, 3, ...)`` (indices past the top
        level, which the encoder never writes, read as the top level)."""
        parts = [dequantize_level(levels[i], b, companded=i > 0) for i, b in enumerate(self.bits)]
        return torch.stack(parts, dim=1)

    @torch.no_grad()
    def encode(
        self, video: Tensor, previous: Tensor | None = None, previous_is_frame0: bool = False
    ) -> Tensor:
        """Video ``(B, 3, T, H, W)`` (a clip's first chunk ``1 + t*k`` frames, or a later chunk of
        ``t*k``) -> codes ``(B, channels, n, H/s, W/s)`` of +-1, in ``video``'s dtype. ``previous``,
        ``previous_is_frame0``: as in :meth:`render` (the decoded means before a later chunk)."""
        t = self.temporal
        first = t == 1 or video.shape[2] % t == 1
        frames = group_means(video.float(), 1, self.spatial, first=False)  # (B, 3, T, h, w)
        ycocg = rgb_to_ycocg(group_means(frames, t, 1, first))
        luma = quantize_level(ycocg[:, 0], self.bits[0], companded=False)
        piece, own = self.encode_chroma(ycocg[:, 1:])
        edge = self.edge_tokens(*piece.shape[-2:], piece.device)
        means = self.means(luma, torch.where(edge, own, piece))
        steps = torch.zeros_like(luma)
        if self.slope_bits:
            steps = self.choose_steps(frames, means, first, previous, previous_is_frame0)
        if self.detail_bits:
            shown = self.render(means, first, previous, previous_is_frame0, self.step_factor(steps))
            piece = piece | self.choose_detail(video.float() - shown, first) << self.chroma_bits
        return self.pack(steps, luma, torch.where(edge, own, piece)).to(video.dtype)

    def choose_steps(
        self, frames: Tensor, means: Tensor, first: bool, previous: Tensor | None, previous_is_frame0: bool
    ) -> Tensor:
        """Per-frame block means ``(B, 3, T, h, w)`` and the decoded group means ``(B, 3, n, h, w)`` ->
        per block and group the index ``(B, n, h, w)`` into :data:`SLOPE_STEPS` whose line (limited as
        :meth:`render` limits it) is nearest the least-squares slope of the group's frames (summed
        over R, G, B: the frames' squared error grows with that distance)."""
        t = self.temporal
        grouped = rearrange(frames[:, :, 1:] if first else frames, "b c (n k) h w -> b c n k h w", k=t)
        offsets = torch.arange(t, device=frames.device, dtype=frames.dtype) - (t - 1) / 2
        target = (grouped * offsets.view(1, 1, 1, t, 1, 1)).sum(3) / offsets.square().sum()
        if first:
            target = torch.cat([torch.zeros_like(means[:, :, :1]), target], dim=2)  # frame 0: no line
        changes = self.group_changes(means, first, previous, previous_is_frame0)
        errors = [(self.limit(step * changes, means) - target).square().sum(1) for step in SLOPE_STEPS]
        return torch.stack(errors).argmin(0)

    def choose_detail(self, residual: Tensor, first: bool) -> Tensor:
        """What the rendered means miss, ``(B, 3, T, H, W)`` -> per token the index ``(B, n, h, w)`` of
        the ``detail`` pattern nearest the luma of that residual over the token's frames."""
        head, groups = luma_patches(residual, self.temporal, self.spatial, first)
        table = self.detail.float()
        index = [nearest(groups, table[:, 1:].flatten(1))]
        if head is not None:
            index.insert(0, nearest(head, table[:, 0]))
        return torch.cat(index, dim=1)

    def pack(self, steps: Tensor, luma: Tensor, rest: Tensor) -> Tensor:
        """Slope index, Y level and the rest (chroma field, detail index above it) ``(B, n, h, w)``
        -> codes ``(B, channels, n, h, w)`` of +-1 (the module docstring's channel order)."""
        fields = [(steps, self.slope_bits), (luma, self.bits[0]), (rest, self.chroma_bits + self.detail_bits)]
        return torch.cat([to_signs(v, b) for v, b in fields if b], dim=1).float()

    def unpack(self, codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Inverse of :meth:`pack`: codes ``(B, channels, n, h, w)`` read by sign -> slope index, Y
        level and rest, each ``(B, n, h, w)``."""
        a, b = self.slope_bits, self.slope_bits + self.bits[0]
        return from_signs(codes[:, :a]), from_signs(codes[:, a:b]), from_signs(codes[:, b:])

    def encode_chroma(self, chroma: Tensor) -> tuple[Tensor, Tensor]:
        """Block ``(Co, Cg)`` ``(B, 2, n, h, w)`` -> each token's chroma field ``(B, n, h, w)`` (its own
        levels, or its piece of the 2x2's shared levels) and, with ``chroma_share = 2``, its own
        levels at ``own_bits`` (what an edge token holds instead)."""
        b1, b2 = self.bits[1], self.bits[2]
        if self.chroma_share == 1:
            field = join_chroma(chroma, b1, b2)
            return field, field
        own = join_chroma(chroma, self.own_bits, self.own_bits)
        value = join_chroma(F.avg_pool3d(chroma, (1, 2, 2), ceil_mode=True), b1, b2)
        h, w = chroma.shape[-2:]
        value = value.repeat_interleave(2, -2).repeat_interleave(2, -1)[..., :h, :w]
        piece = self.piece_index(h, w, chroma.device) * self.chroma_bits
        return (value >> piece) & ((1 << self.chroma_bits) - 1), own

    def decode_chroma(self, rest: Tensor) -> Tensor:
        """Each token's rest field ``(B, n, h, w)`` -> its ``(Co, Cg)`` ``(B, 2, n, h, w)``: its own, or
        the shared chroma of the 2x2s interpolated to the token grid."""
        b1, b2, cb = self.bits[1], self.bits[2], self.chroma_bits
        field = rest & ((1 << cb) - 1)
        if self.chroma_share == 1:
            return split_chroma(field, b1, b2)
        h, w = rest.shape[-2:]
        own = split_chroma(rest, self.own_bits, self.own_bits)
        pieces = F.pad(field, (0, w % 2, 0, h % 2))
        pieces = rearrange(pieces, "b n (h i) (w j) -> b n h w (i j)", i=2, j=2)
        value = (pieces << (torch.arange(4, device=rest.device) * cb)).sum(-1)
        shared = split_chroma(value, b1, b2)
        edge = self.edge_tokens(h, w, rest.device)
        own_shared = F.avg_pool3d(own, (1, 2, 2), ceil_mode=True)
        shared = torch.where(F.max_pool2d(edge[None].float(), 2, ceil_mode=True)[0] > 0, own_shared, shared)
        small = rearrange(shared, "b c n h w -> (b n) c h w")
        smooth = rearrange(render_blocks(small, 2)[..., :h, :w], "(b n) c h w -> b c n h w", b=rest.shape[0])
        return torch.where(edge, own, smooth)

    def piece_index(self, h: int, w: int, device: torch.device) -> Tensor:
        """Which piece of its 2x2's chroma each token holds, ``(h, w)``: 0 1 / 2 3 in each 2x2."""
        rows, cols = torch.arange(h, device=device) % 2, torch.arange(w, device=device) % 2
        return rows[:, None] * 2 + cols[None, :]

    def edge_tokens(self, h: int, w: int, device: torch.device) -> Tensor:
        """Tokens of an incomplete 2x2 (last row of an odd-height grid, last column of an odd-width
        one), ``(h, w)`` bool; all False with ``chroma_share = 1``."""
        rows, cols = torch.arange(h, device=device), torch.arange(w, device=device)
        if self.chroma_share == 1:
            return torch.zeros(h, w, dtype=torch.bool, device=device)
        return (rows >= h - h % 2)[:, None] | (cols >= w - w % 2)[None, :]

    def means(self, luma: Tensor, rest: Tensor) -> Tensor:
        """Y levels and rest fields ``(B, n, h, w)`` -> RGB block means ``(B, 3, n, h, w)``."""
        y = dequantize_level(luma, self.bits[0], companded=False)
        return ycocg_to_rgb(torch.cat([y.unsqueeze(1), self.decode_chroma(rest)], dim=1))

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``(B, channels, n, h, w)`` (sign read) -> RGB block means ``(B, 3, n, h, w)``
        (about [-1, 1]; a code no pixels give, e.g. one an LM sampled, may lie outside the cube)."""
        _, luma, rest = self.unpack(codes)
        return self.means(luma, rest)

    def decode_steps(self, codes: Tensor) -> Tensor | float:
        """Codes ``(B, channels, n, h, w)`` -> each block's slope factor ``(B, 1, n, h, w)`` (with
        ``slope_bits``), else the fixed ``slope``."""
        return self.step_factor(self.unpack(codes)[0])

    def step_factor(self, steps: Tensor) -> Tensor | float:
        """Slope indices ``(B, n, h, w)`` -> factors ``(B, 1, n, h, w)`` (with ``slope_bits``), else the
        fixed ``slope``."""
        if not self.slope_bits:
            return self.slope
        return torch.tensor(SLOPE_STEPS, device=steps.device)[steps].unsqueeze(1)

    def reconstruct(
        self, codes: Tensor, first: bool, previous: Tensor | None = None, previous_is_frame0: bool = False
    ) -> Tensor:
        """Codes ``(B, channels, n, h, w)`` -> frames ``(B, 3, T, h*s, w*s)``: the rendered means
        (:meth:`render`; arguments as there) plus the detail patterns (:meth:`detail_frames`)."""
        steps, luma, rest = self.unpack(codes)
        means, factor = self.means(luma, rest), self.step_factor(steps)
        frames = self.render(means, first, previous, previous_is_frame0, factor)
        return frames + self.detail_frames(rest, first) if self.detail_bits else frames

    def detail_frames(self, rest: Tensor, first: bool) -> Tensor:
        """The tokens' rest fields ``(B, n, h, w)`` (:meth:`unpack`) -> the luma their detail indices
        add, ``(B, 1, T, h*s, w*s)``: each token's pattern over its frames (frame 0's own pattern when
        ``first``), block borders softened (:func:`~magvit2.modules.patterns.deblock`); nothing on edge
        tokens, whose bits hold chroma."""
        index, table = rest >> self.chroma_bits, self.detail.float()
        keep = ~self.edge_tokens(*rest.shape[-2:], rest.device)[..., None, None]  # (h, w, 1, 1)
        parts = [table[:, 1:][index[:, int(first) :]] * keep]  # (B, n', h, w, t, s*s)
        if first:
            parts.insert(0, table[:, :1][index[:, :1]] * keep)  # (B, 1, h, w, 1, s*s)
        to_frames = "b n h w k (p q) -> b 1 (n k) (h p) (w q)"
        luma = torch.cat([rearrange(x, to_frames, p=self.spatial) for x in parts], dim=2)
        return deblock(luma, self.spatial)

    def render(
        self,
        means: Tensor,
        first: bool,
        previous: Tensor | None = None,
        previous_is_frame0: bool = False,
        steps: Tensor | float | None = None,
    ) -> Tensor:
        """Block means ``(B, 3, n, h, w)`` -> frames ``(B, 3, T, h*s, w*s)``: :func:`render_blocks`
        in space (block means kept), the module docstring's line in time (group means kept).

        ``first``: the means start a clip (``T = 1 + t*(n-1)``, latent frame 0 is frame 0 alone);
        otherwise they continue one (``T = t*n``) and ``previous`` ``(B, 3, 1, h, w)`` is the latent
        frame before them (the last of the previous chunk; None: no line for the first group;
        ``previous_is_frame0``: that chunk was frame 0 alone). ``steps``: the slope factor, one
        number or per block ``(B, 1, n, h, w)`` (:meth:`decode_steps`); None: ``slope``.
        """
        b, n, t = means.shape[0], means.shape[2], self.temporal
        means = means.float()
        factor = self.slope if steps is None else steps
        slopes = self.group_slopes(means, first, previous, previous_is_frame0, factor)
        small = rearrange(torch.cat([means, slopes]), "b c n h w -> (b n) c h w")
        big = rearrange(render_blocks(small, self.spatial), "(b n) c h w -> b c n h w", b=2 * b)
        offsets = torch.arange(t, device=means.device, dtype=means.dtype).repeat(n) - (t - 1) / 2
        if first:
            offsets = torch.cat([offsets.new_zeros(1), offsets[t:]])
        frames = expand_groups(big, t, first)
        return frames[:b] + offsets.view(1, 1, -1, 1, 1) * frames[b:]

    def group_slopes(
        self,
        means: Tensor,
        first: bool,
        previous: Tensor | None,
        previous_is_frame0: bool = False,
        factor: Tensor | float = 1.0,
    ) -> Tensor:
        """Block means ``(B, 3, n, h, w)`` -> per-frame slopes ``(B, 3, n, h, w)`` of the frames of each
        group: ``factor`` times :meth:`group_changes`, :meth:`limit`-ed. Arguments as in :meth:`render`."""
        if self.temporal == 1 or (isinstance(factor, float) and factor == 0):
            return torch.zeros_like(means)
        return self.limit(factor * self.group_changes(means, first, previous, previous_is_frame0), means)

    def group_changes(
        self, means: Tensor, first: bool, previous: Tensor | None, previous_is_frame0: bool = False
    ) -> Tensor:
        """Block means ``(B, 3, n, h, w)`` -> the change per frame from the previous group's mean to each
        group's, centre to centre (0 where there is no earlier group). Arguments as in :meth:`render`."""
        t = self.temporal
        if previous is None:
            previous = means[:, :, :1]  # no earlier group: zero change
        before = torch.cat([previous.float(), means[:, :, :-1]], dim=2)
        gaps = torch.full((means.shape[2],), float(t), device=means.device)
        if first and means.shape[2] > 1:
            gaps[1] = (t + 1) / 2  # from frame 0 to the centre of the first group
        if not first and previous_is_frame0:
            gaps[0] = (t + 1) / 2
        return (means - before) / gaps.view(1, 1, -1, 1, 1)

    def limit(self, slopes: Tensor, means: Tensor) -> Tensor:
        """Slopes ``(B, 3, n, h, w)`` scaled down per block so that ``mean +- slope * (t-1)/2`` stays in
        [-1, 1] (one scale for the three channels, so the line keeps its hue)."""
        room = (1 - means.abs()).clamp_min(0) / ((self.temporal - 1) / 2)
        scale = (room / slopes.abs().clamp_min(1e-12)).clamp(max=1).amin(dim=1, keepdim=True)
        return slopes * scale


def check_layout(bits: tuple[int, ...], chroma_share: int, detail_bits: int) -> None:
    """Raise ValueError unless ``bits`` ``(Y, Co, Cg)``, ``chroma_share`` and ``detail_bits`` make a
    code (pieces of whole bits, edge tokens' own chroma of 1 to 8 bits per component)."""
    if chroma_share not in (1, 2):
        raise ValueError(f"block-mean code: expected chroma_share 1 or 2, got {chroma_share}")
    if not 0 <= detail_bits <= 12:
        raise ValueError(f"block-mean code: expected detail_bits in [0, 12], got {detail_bits}")
    if chroma_share == 2:
        piece = (bits[1] + bits[2]) / 4
        own = (piece + detail_bits) / 2
        if piece != int(piece) or own != int(own) or not 1 <= own <= 8:
            raise ValueError(
                f"block-mean code: chroma_share 2 splits Co + Cg bits ({bits[1]} + {bits[2]}) into 4 "
                f"whole pieces, and an edge token holds its own Co and Cg in piece + detail_bits "
                f"({detail_bits}) bits, half each (1 to 8); got a piece of {piece} and halves of {own}"
            )


def quantize_level(c: Tensor, bits: int, companded: bool) -> Tensor:
    """Values in [-1, 1] -> int64 level indices in ``[0, 2^bits - 2]`` (``companded``: uniform in
    ``sign(c) sqrt(|c|)``, as for Co and Cg; see the module docstring)."""
    u = c.sign() * c.abs().sqrt() if companded else c
    return ((u.clamp(-1, 1) + 1) / 2 * (2**bits - 2)).round().long()


def dequantize_level(q: Tensor, bits: int, companded: bool) -> Tensor:
    """Inverse of :func:`quantize_level` (indices past the top level read as the top level)."""
    top = 2**bits - 2
    u = q.clamp(max=top).float() / top * 2 - 1
    return u.sign() * u.square() if companded else u


def join_chroma(chroma: Tensor, b1: int, b2: int) -> Tensor:
    """``(Co, Cg)`` ``(B, 2, ...)`` -> one int field ``(B, ...)``: Co's level in the low ``b1`` bits,
    Cg's at ``b2`` bits above it."""
    return quantize_level(chroma[:, 0], b1, True) | quantize_level(chroma[:, 1], b2, True) << b1


def split_chroma(field: Tensor, b1: int, b2: int) -> Tensor:
    """Inverse of :func:`join_chroma`: int field ``(B, ...)`` -> ``(Co, Cg)`` ``(B, 2, ...)``."""
    co = dequantize_level(field & ((1 << b1) - 1), b1, True)
    return torch.stack([co, dequantize_level((field >> b1) & ((1 << b2) - 1), b2, True)], dim=1)


def expand_groups(x: Tensor, temporal: int, first: bool) -> Tensor:
    """Per latent frame ``(B, C, n, H, W)`` -> per frame ``(B, C, T, H, W)``: each value on every frame of
    its group (``first``: latent frame 0 is frame 0 alone)."""
    repeats = torch.full((x.shape[2],), temporal, device=x.device)
    if first:
        repeats[0] = 1
    return x.repeat_interleave(repeats, dim=2)


def luma_patches(residual: Tensor, temporal: int, spatial: int, first: bool) -> tuple[Tensor | None, Tensor]:
    """RGB ``(B, 3, T, H, W)`` -> its luma cut into one patch per token: frame 0 alone ``(B, 1, h, w,
    s*s)`` (``first``; else None) and the groups' frames ``(B, n, h, w, t*s*s)``."""
    luma = rearrange(rgb_to_ycocg(residual)[:, 0], "b t (h p) (w q) -> b t h w (p q)", p=spatial, q=spatial)
    groups = rearrange(luma[:, 1:] if first else luma, "b (n k) h w d -> b n h w (k d)", k=temporal)
    return (luma[:, :1] if first else None), groups


@torch.no_grad()
def fit_detail(
    code: BlockMeanCode, clips: list[Tensor], iters: int = 30, seed: int = 0, samples: int = 600_000
) -> dict[str, float]:
    """Fit ``code.detail`` by k-means to what ``code``'s rendered means miss on ``clips`` (each
    ``(B, 3, 1 + t*k, H, W)``, frames starting a clip; edge tokens left out): the group patterns to
    the luma of each token's ``t`` frames in the clips, the frame-0 patterns to each token's luma in
    every frame of them coded as an image; each from at most ``samples`` patches drawn at random.
    Returns the mean squared luma error per pixel of the group patches before and after, and of the
    frame-0 patches."""
    gen = torch.Generator().manual_seed(seed)
    t, s, k = code.temporal, code.spatial, len(code.detail)
    code.detail.zero_()
    heads, groups = [], []
    for clip in clips:
        images = rearrange(clip.float(), "b c t h w -> (b t) c 1 h w")
        for video, out in ((clip.float(), groups), (images, heads)):
            codes = code.encode(video)
            keep = ~code.edge_tokens(*codes.shape[-2:], codes.device)
            head, group = luma_patches(video - code.reconstruct(codes, first=True), t, s, True)
            out.append((head if out is heads else group)[:, :, keep].flatten(0, 2))
    heads, groups = (
        torch.cat(x)[torch.randperm(sum(map(len, x)), generator=gen)[:samples]] for x in (heads, groups)
    )
    first, rest = kmeans(heads, k, iters, gen), kmeans(groups, k, iters, gen)
    code.detail.copy_(torch.cat([first.unsqueeze(1), rearrange(rest, "k (t d) -> k t d", t=t)], dim=1))
    error = lambda x, table: float((x - table[nearest(x, table)]).square().mean())
    return {
        "mse_before": float(groups.square().mean()),
        "mse_after": error(groups, rest),
        "first_mse_before": float(heads.square().mean()),
        "first_mse_after": error(heads, first),
    }


def to_signs(values: Tensor, bits: int) -> Tensor:
    """Non-negative ints ``(B, ...)`` -> ``(B, bits, ...)`` of +-1, least significant bit first."""
    return torch.stack([((values >> k) & 1) * 2 - 1 for k in range(bits)], dim=1)


def from_signs(codes: Tensor) -> Tensor:
    """Inverse of :func:`to_signs`: ``(B, bits, ...)`` read by sign -> int64 ``(B, ...)``."""
    weights = 2 ** torch.arange(codes.shape[1], device=codes.device)
    return ((codes > 0).long() * weights.view(1, -1, *([1] * (codes.ndim - 2)))).sum(1)
