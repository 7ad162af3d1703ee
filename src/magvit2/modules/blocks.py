"""Residual block, downsampling and depth-to-space upsampling for causal video networks."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from magvit2.modules.causal import CausalCache, CausalConv3d, swish
from magvit2.modules.norm import make_norm


class ResBlock(nn.Module):
    """Norm (GroupNorm, or ChannelNorm with ``norm="channel"``), swish, causal conv 3x3x3 (no bias),
    twice; causal 1x1x1 ``nin_shortcut`` when the channel count changes (Open-MAGVIT2's video
    ``ResBlock``; same key names).

    Shapes: ``(B, C_in, T, H, W)`` -> ``(B, C_out, T, H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_groups: int = 32,
        eps: float = 1e-6,
        time_pooled: bool = False,
        norm: str = "group",
        padding: str = "zeros",
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, in_channels, num_groups, eps, time_pooled)
        self.norm2 = make_norm(norm, out_channels, num_groups, eps, time_pooled)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, bias=False, padding=padding)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, bias=False, padding=padding)
        if in_channels != out_channels:
            self.nin_shortcut = CausalConv3d(in_channels, out_channels, 1, bias=False)
        else:
            self.nin_shortcut = None

        self.gradient_checkpointing = False

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        """``(B, C_in, T, H, W)`` -> ``(B, C_out, T, H, W)``. With ``gradient_checkpointing`` a training
        pass (gradients on, no causal cache) recomputes the activations in the backward pass."""
        if self.gradient_checkpointing and cache is None and torch.is_grad_enabled():
            return checkpoint(self._forward, x, None, use_reentrant=False)
        return self._forward(x, cache)

    def _forward(self, x: Tensor, cache: CausalCache | None) -> Tensor:
        h = self.conv1(swish(self.norm1(x)), cache)
        h = self.conv2(swish(self.norm2(h)), cache)
        residual = x if self.nin_shortcut is None else self.nin_shortcut(x, cache)
        return h + residual


def depth_to_space_3d(x: Tensor, block: tuple[int, int, int]) -> Tensor:
    """Move channel blocks into time, height and width (DCR order, as Open-MAGVIT2).

    ``(B, bt*bh*bw*C, T, H, W)`` -> ``(B, C, T*bt, H*bh, W*bw)``; the channel index is
    ``((it * bh + ih) * bw + iw) * C + c``.
    """
    bt, bh, bw = block
    return rearrange(x, "b (bt bh bw c) t h w -> b c (t bt) (h bh) (w bw)", bt=bt, bh=bh, bw=bw)


class Upsampler(nn.Module):
    """Causal conv 3x3x3 ``C -> C*bt*bh*bw`` then depth-to-space by ``(bt, bh, bw)``.

    With ``bt > 1`` the video's first frame expands to one frame, not ``bt`` (the extra frames of
    latent frame 0 are dropped), so ``1 + k`` frames become ``1 + bt*k`` and an image stays one frame.
    Key names: ``conv1.conv_1.*`` (Open-MAGVIT2's ``Upsampler``).

    Shapes: ``(B, C, T, H, W)`` -> ``(B, C, T', H*bh, W*bw)`` with ``T' = 1 + bt*(T-1)`` for the
    chunk holding frame 0 and ``bt*T`` for later chunks.
    """

    def __init__(self, channels: int, block: tuple[int, int, int], padding: str = "zeros") -> None:
        super().__init__()
        self.block = tuple(block)
        bt, bh, bw = self.block
        self.conv1 = CausalConv3d(channels, channels * bt * bh * bw, 3, bias=True, padding=padding)

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        out = depth_to_space_3d(self.conv1(x, cache), self.block)
        bt = self.block[0]
        if bt > 1:
            first = cache is None or not cache.seen(self)
            if first:
                out = torch.cat([out[:, :, :1], out[:, :, bt:]], dim=2)
            if cache is not None:
                cache.set(self, True)
        return out


def downsample(channels: int, temporal: bool, padding: str = "zeros") -> CausalConv3d:
    """Causal conv 3x3x3 with stride ``(2 if temporal else 1, 2, 2)`` (with bias), channels kept.

    ``(B, C, 1+2k, H, W)`` -> ``(B, C, 1+k, H/2, W/2)`` when temporal, else ``(B, C, T, H/2, W/2)``.
    """
    stride = (2 if temporal else 1, 2, 2)
    return CausalConv3d(channels, channels, 3, stride=stride, bias=True, padding=padding)
