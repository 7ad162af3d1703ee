"""Reference reconstructions a tokenizer should beat: the block average at the tokenizer's grid.

``block_average`` keeps, for every block of ``1 + 4k`` frames x 8 x 8 pixels that one token covers,
the exact mean colour (unquantized: more information than 18 bits), and upsamples those means back
to full size bicubically. It is not a codec but a floor: a tokenizer that spends 18 bits per block
and loses to it has not learned the picture. ``block_mean_psnr`` says how much of a reconstruction's
error is in those block means (the colour of each block) rather than in the detail inside them.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange

from magvit2.modules.block_mean import group_means, upsample_blocks


def block_means(video: np.ndarray, temporal: int = 4, spatial: int = 8) -> np.ndarray:
    """``video`` uint8 ``(T, H, W, 3)`` -> float64 ``(n, H/s, W/s, 3)``: the mean colour of every block
    one token covers, grouped in time as the causal tokenizer groups frames (frame 0 alone, then
    ``temporal`` at a time; :func:`magvit2.modules.block_mean.group_means`). ``H`` and ``W`` must be
    multiples of ``spatial``."""
    t, h, w, _ = video.shape
    if h % spatial or w % spatial:
        raise ValueError(f"block_means: expected H and W multiples of {spatial}, got {h}x{w}")
    x = rearrange(torch.from_numpy(video).double(), "t h w c -> 1 c t h w")
    return rearrange(group_means(x, temporal, spatial, first=True), "1 c n h w -> n h w c").numpy()


def block_average(video: np.ndarray, temporal: int = 4, spatial: int = 8) -> np.ndarray:
    """``video`` uint8 ``(T, H, W, 3)`` -> uint8 ``(T, H, W, 3)`` made of block means.

    Each group's ``spatial x spatial`` block means (:func:`block_means`) are upsampled bicubically
    (edges replicated; :func:`magvit2.modules.block_mean.upsample_blocks`) and shown on every frame
    of the group. ``H`` and ``W`` must be multiples of ``spatial``.
    """
    t, h, w, _ = video.shape
    if h % spatial or w % spatial:
        raise ValueError(f"block_average: expected H and W multiples of {spatial}, got {h}x{w}")
    small = rearrange(torch.from_numpy(block_means(video, temporal, spatial)), "n h w c -> n c h w")
    big = rearrange(upsample_blocks(small, spatial), "n c h w -> n h w c")
    counts = [1, *(min(temporal, t - s) for s in range(1, t, temporal))]
    out = big.repeat_interleave(torch.tensor(counts), dim=0)
    return out.round().clamp(0, 255).to(torch.uint8).numpy()


def block_mean_psnr(rec: np.ndarray, src: np.ndarray, temporal: int = 4, spatial: int = 8) -> float:
    """PSNR (dB, 0-255 scale) between the block means (:func:`block_means`) of ``rec`` and ``src``, uint8
    ``(T, H, W, 3)`` each: how well a reconstruction keeps the mean colour of every block a token
    covers, whatever it does inside the blocks (``inf`` when every block mean is kept exactly)."""
    if rec.shape != src.shape:
        raise ValueError(f"block_mean_psnr: expected videos of one shape, got {rec.shape} and {src.shape}")
    mse = float(((block_means(rec, temporal, spatial) - block_means(src, temporal, spatial)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)
