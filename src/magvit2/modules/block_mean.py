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
stretch stays flat. The decoder adds its output to that picture, so flat colours, ramps and a clip's
overall colour are right by construction and the network models the detail.

Channel order of a code: the ``slope_bits`` first, then Y, Co and Cg, each least significant bit
first (so in an LFQ token id the mean colour is the low ``sum(bits)`` bits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn


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
    """Fixed (parameter-free) code of block mean colours; see the module docstring.

    Args:
        bits: bits for ``(Y, Co, Cg)``, each 1 to 8.
        temporal, spatial: the tokenizer's temporal and spatial factors (frames and pixels per token).
        slope: how far :meth:`render` carries the change between consecutive groups' means into the
            frames of a group, in [0, 1] (0: each group's mean on all its frames).
        slope_bits: 0, or 2 to code that factor per block and group (then ``slope`` must be 0).
    """

    def __init__(
        self, bits: tuple[int, int, int], temporal: int, spatial: int, slope: float = 0.0, slope_bits: int = 0
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

    @property
    def channels(self) -> int:
        """Code channels (bits per token): the slope bits and the block means."""
        return self.slope_bits + sum(self.bits)

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, temporal={self.temporal}, spatial={self.spatial}, slope={self.slope}, "
            f"slope_bits={self.slope_bits}"
        )

    def quantize(self, ycocg: Tensor) -> list[Tensor]:
        """YCoCg ``(B, 3, ...)`` -> per component int64 level indices ``(B, ...)``."""
        levels = []
        for i, (b, c) in enumerate(zip(self.bits, ycocg.unbind(1), strict=True)):
            u = c if i == 0 else c.sign() * c.abs().sqrt()
            top = 2**b - 2
            levels.append(((u.clamp(-1, 1) + 1) / 2 * top).round().long())
        return levels

    def dequantize(self, levels: list[Tensor]) -> Tensor:
        """Per component level indices ``(B, ...)`` -> YCoCg ``(B, 3, ...)`` (indices past the top
        level, which the encoder never writes, read as the top level)."""
        out = []
        for i, (b, q) in enumerate(zip(self.bits, levels, strict=True)):
            top = 2**b - 2
            u = q.clamp(max=top).float() / top * 2 - 1
            out.append(u if i == 0 else u.sign() * u.square())
        return torch.stack(out, dim=1)

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
        levels = self.quantize(rgb_to_ycocg(group_means(frames, t, 1, first)))
        codes = [to_signs(q, b) for b, q in zip(self.bits, levels, strict=True)]
        if self.slope_bits:
            means = ycocg_to_rgb(self.dequantize(levels))
            steps = self.choose_steps(frames, means, first, previous, previous_is_frame0)
            codes.insert(0, to_signs(steps, self.slope_bits))
        return torch.cat(codes, dim=1).to(video.dtype)

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

    def decode(self, codes: Tensor) -> Tensor:
        """Codes ``(B, channels, n, h, w)`` (sign read) -> RGB block means ``(B, 3, n, h, w)``
        (about [-1, 1]; a code no pixels give, e.g. one an LM sampled, may lie outside the cube)."""
        levels, start = [], self.slope_bits
        for b in self.bits:
            levels.append(from_signs(codes[:, start : start + b]))
            start += b
        return ycocg_to_rgb(self.dequantize(levels))

    def decode_steps(self, codes: Tensor) -> Tensor | float:
        """Codes ``(B, channels, n, h, w)`` -> each block's slope factor ``(B, 1, n, h, w)`` (with
        ``slope_bits``), else the fixed ``slope``."""
        if not self.slope_bits:
            return self.slope
        table = torch.tensor(SLOPE_STEPS, device=codes.device)
        return table[from_signs(codes[:, : self.slope_bits])].unsqueeze(1)

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
        repeats = torch.full((n,), t, device=means.device)
        offsets = torch.arange(t, device=means.device, dtype=means.dtype).repeat(n) - (t - 1) / 2
        if first:
            repeats[0] = 1
            offsets = torch.cat([offsets.new_zeros(1), offsets[t:]])
        frames = big.repeat_interleave(repeats, dim=2)
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


def to_signs(values: Tensor, bits: int) -> Tensor:
    """Non-negative ints ``(B, ...)`` -> ``(B, bits, ...)`` of +-1, least significant bit first."""
    return torch.stack([((values >> k) & 1) * 2 - 1 for k in range(bits)], dim=1)


def from_signs(codes: Tensor) -> Tensor:
    """Inverse of :func:`to_signs`: ``(B, bits, ...)`` read by sign -> int64 ``(B, ...)``."""
    weights = 2 ** torch.arange(codes.shape[1], device=codes.device)
    return ((codes > 0).long() * weights.view(1, -1, *([1] * (codes.ndim - 2)))).sum(1)
