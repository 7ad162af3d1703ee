"""Cell shortcuts: a learned linear path between each latent cell's mean colour and the latent.

A latent cell is the block of ``rate`` frames x ``factor`` x ``factor`` pixels one latent position
stands for (the first frame of a video alone, as the causal encoder lays it out). The encoder and the
decoder both end in a per-frame GroupNorm, which removes each channel group's frame-wide mean: the
colour and brightness of a whole frame reach the latent, and come back out of it, only indirectly.
These shortcuts add the direct path around the whole network (in the spirit of the residual
shortcuts of DC-AE, Chen et al. 2024):

    encoder:  latent += W_in  @ mean of the input over each cell          (B, Z, n, h, w)
    decoder:  video  += W_out @ code, repeated over each cell's frames and pixels

Both are zero-initialised, so a model with shortcuts starts out computing exactly what it computed
without them. Each cell is handled alone, so chunked and tiled processing stay exact.
"""

from __future__ import annotations

import torch
from einops import rearrange, reduce, repeat
from torch import Tensor, nn

from magvit2.modules.causal import CausalCache


def _first_chunk(module: nn.Module, cache: CausalCache | None) -> bool:
    """Whether this call holds a video's first frame (no cache, or ``module`` has not run yet)."""
    first = cache is None or not cache.seen(module)
    if cache is not None:
        cache.set(module, True)
    return first


def cell_means(x: Tensor, rate: int, factor: int, first: bool = True) -> Tensor:
    """Mean of each latent cell: ``(B, C, T, H, W)`` -> ``(B, C, n, H/factor, W/factor)``.

    With ``first`` (a video's start) frame 0 is a cell on its own and ``T = 1 + rate*k`` gives
    ``n = 1 + k``; otherwise (a later chunk) ``T = rate*k`` gives ``n = k``.
    """
    head, rest = (x[:, :, :1], x[:, :, 1:]) if first else (None, x)
    parts = [] if head is None else [head]
    if rest.shape[2]:
        parts.append(reduce(rest, "b c (n r) h w -> b c n h w", "mean", r=rate))
    frames = torch.cat(parts, dim=2)
    return reduce(frames, "b c n (h p) (w q) -> b c n h w", "mean", p=factor, q=factor)


def expand_cells(y: Tensor, rate: int, factor: int, first: bool = True) -> Tensor:
    """Inverse layout of :func:`cell_means`: each cell's value repeated over its frames and pixels,
    ``(B, C, n, h, w)`` -> ``(B, C, T, h*factor, w*factor)``."""
    head, rest = (y[:, :, :1], y[:, :, 1:]) if first else (None, y)
    parts = [] if head is None else [head]
    if rest.shape[2]:
        parts.append(repeat(rest, "b c n h w -> b c (n r) h w", r=rate))
    frames = torch.cat(parts, dim=2)
    return repeat(frames, "b c t h w -> b c t (h p) (w q)", p=factor, q=factor)


class CellShortcutIn(nn.Module):
    """Encoder side: video ``(B, C, T, H, W)`` -> ``(B, Z, n, H/factor, W/factor)``, a linear map of
    each cell's mean colour (zero at initialisation). Keys: ``proj.weight`` ``(Z, C)``, ``proj.bias``."""

    def __init__(self, in_channels: int, z_channels: int, rate: int, factor: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, z_channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.rate, self.factor = rate, factor

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        means = cell_means(x, self.rate, self.factor, _first_chunk(self, cache))
        out = self.proj(rearrange(means, "b c n h w -> b n h w c"))
        return rearrange(out, "b n h w z -> b z n h w")


class CellShortcutOut(nn.Module):
    """Decoder side: codes ``(B, Z, n, h, w)`` -> ``(B, C, T, h*factor, w*factor)``, a linear map of
    each cell's code spread over the cell (zero at initialisation). Keys: ``proj.weight`` ``(C, Z)``,
    ``proj.bias``."""

    def __init__(self, z_channels: int, out_channels: int, rate: int, factor: int) -> None:
        super().__init__()
        self.proj = nn.Linear(z_channels, out_channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.rate, self.factor = rate, factor

    def forward(self, q: Tensor, cache: CausalCache | None = None) -> Tensor:
        first = _first_chunk(self, cache)
        out = rearrange(self.proj(rearrange(q, "b z n h w -> b n h w z")), "b n h w c -> b c n h w")
        return expand_cells(out, self.rate, self.factor, first)
