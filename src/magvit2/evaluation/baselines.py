"""Reference reconstructions a tokenizer should beat: the block average at the tokenizer's grid.

``block_average`` keeps, for every block of ``1 + 4k`` frames x 8 x 8 pixels that one token covers,
the exact mean colour (unquantized: more information than 18 bits), and upsamples those means back
to full size bicubically. It is not a codec but a floor: a tokenizer that spends 18 bits per block
and loses to it has not learned the picture.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def block_average(video: np.ndarray, temporal: int = 4, spatial: int = 8) -> np.ndarray:
    """``video`` uint8 ``(T, H, W, 3)`` -> uint8 ``(T, H, W, 3)`` made of block means.

    Time is grouped as the causal tokenizer groups it: frame 0 alone, then ``temporal`` frames at a
    time (a last short group is averaged over the frames it has). Each group's ``spatial x spatial``
    block means are upsampled bicubically (edges replicated) and shown on every frame of the group.
    ``H`` and ``W`` must be multiples of ``spatial``.
    """
    t, h, w, _ = video.shape
    if h % spatial or w % spatial:
        raise ValueError(f"block_average: expected H and W multiples of {spatial}, got {h}x{w}")
    x = torch.from_numpy(video).double()
    out = torch.empty_like(x)
    starts = [0, *range(1, t, temporal)]
    for s in starts:
        e = 1 if s == 0 else min(s + temporal, t)
        mean = rearrange(x[s:e].mean(0), "h w c -> 1 c h w")
        small = F.avg_pool2d(mean, spatial)
        big = F.interpolate(
            F.pad(small, (1, 1, 1, 1), mode="replicate"), scale_factor=spatial, mode="bicubic"
        )
        big = big[..., spatial : spatial + h, spatial : spatial + w]
        out[s:e] = rearrange(big, "1 c h w -> h w c")
    return out.round().clamp(0, 255).to(torch.uint8).numpy()
