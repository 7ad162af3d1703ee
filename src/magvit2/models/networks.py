"""Causal 3D CNN encoder and decoder (MAGVIT-v2 figure / Open-MAGVIT2 video layout and key names)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from magvit2.models.config import TokenizerConfig
from magvit2.modules import CausalCache, CausalConv3d, ResBlock, Upsampler, downsample, swish
from magvit2.modules.block_mean import BlockMeanCode
from magvit2.modules.norm import make_adaptive_norm, make_norm


class Encoder(nn.Module):
    """Video ``(B, in_channels, 1+t*k, H, W)`` -> latent ``(B, z_channels, 1+k, H/s, W/s)``.

    With ``cfg.mean_bits`` the network's ``learned_channels`` come first, then the block-mean code
    (+-1, :class:`~magvit2.modules.block_mean.BlockMeanCode`) of the same frames; with no learned
    channel there is no network.

    Keys: ``conv_in``, ``down.{i}.block.{j}``, ``down.{i}.downsample``, ``mid_block.{j}``,
    ``norm_out``, ``conv_out`` (each conv's weight under ``.conv_1``).
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.block_mean = mean_code(cfg)
        if cfg.learned_channels == 0:  # every bit is fixed: no network
            return
        g, eps, pooled, kind, pad = cfg.norm_groups, cfg.norm_eps, cfg.time_pooled_norm, cfg.norm, cfg.padding
        self.conv_in = CausalConv3d(cfg.in_channels, cfg.ch, 3, bias=False, padding=pad)
        self.down = nn.ModuleList()
        block_in = cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            block_out = cfg.ch * mult
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks[i]):
                level.block.append(ResBlock(block_in, block_out, g, eps, pooled, kind, pad))
                block_in = block_out
            if i < len(cfg.ch_mult) - 1:
                level.downsample = downsample(block_in, cfg.temporal_downsample[i], pad)
            self.down.append(level)
        self.mid_block = nn.ModuleList(
            [ResBlock(block_in, block_in, g, eps, pooled, kind, pad) for _ in range(cfg.num_mid_blocks)]
        )
        self.norm_out = make_norm(kind, block_in, g, eps, pooled)
        self.conv_out = CausalConv3d(block_in, cfg.learned_channels, 1, bias=True)

    def forward(self, video: Tensor, cache: CausalCache | None = None) -> Tensor:
        code = self.encode_fixed(video, cache)
        if not hasattr(self, "conv_in"):
            return code
        x = self.conv_in(video, cache)
        for level in self.down:
            for block in level.block:
                x = block(x, cache)
            if hasattr(level, "downsample"):
                x = level.downsample(x, cache)
        for block in self.mid_block:
            x = block(x, cache)
        z = self.conv_out(swish(self.norm_out(x)), cache)
        return z if code is None else torch.cat([z, code], dim=1)

    def encode_fixed(self, video: Tensor, cache: CausalCache | None) -> Tensor | None:
        """The block-mean code of ``video`` (None without ``mean_bits``); the last latent frame's
        decoded means go into ``cache`` for the next chunk's slope."""
        if self.block_mean is None:
            return None
        previous = cache.get(self.block_mean) if cache is not None else None
        code = self.block_mean.encode(video, *(previous or ()))
        if cache is not None:
            first = previous is None
            cache.set(
                self.block_mean, (self.block_mean.decode(code[:, :, -1:]), first and code.shape[2] == 1)
            )
        return code


class Decoder(nn.Module):
    """Quantized latent ``(B, z_channels, 1+k, h, w)`` -> video ``(B, out, 1+t*k, h*s, w*s)``.

    Keys: ``conv_in``, ``mid_block.{j}``, ``up.{i}.block.{j}``, ``up.{i}.upsample.conv1``,
    ``adaptive.{i}.gamma/beta``, ``norm_out``, ``conv_out``. Level ``i`` runs from the last to the
    first; ``up.{i}`` mirrors encoder level ``i`` and its upsampler undoes ``down.{i-1}.downsample``.
    With ``cfg.mean_bits`` the output is added to the block means the last code channels hold,
    upsampled (:meth:`~magvit2.modules.block_mean.BlockMeanCode.render`; the last latent frame's means
    go into ``cache`` for the next chunk's first group).
    """

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        self.block_mean = mean_code(cfg)
        self.temporal_factor = cfg.temporal_factor
        if not cfg.decoder_network:  # the block-mean code's reconstruction alone
            return
        g, eps, pooled, kind, pad = cfg.norm_groups, cfg.norm_eps, cfg.time_pooled_norm, cfg.norm, cfg.padding
        levels = len(cfg.ch_mult)
        block_in = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = CausalConv3d(cfg.z_channels, block_in, 3, bias=True, padding=pad)
        self.mid_block = nn.ModuleList(
            [ResBlock(block_in, block_in, g, eps, pooled, kind, pad) for _ in range(cfg.num_mid_blocks)]
        )
        up: list[nn.Module] = [nn.Module() for _ in range(levels)]
        adaptive: list[nn.Module] = [nn.Module() for _ in range(levels)]
        self.rates: list[int] = [1] * levels  # frame rate (relative to the latent) entering level i
        rate = 1
        for i in reversed(range(levels)):
            block_out = cfg.ch * cfg.ch_mult[i]
            self.rates[i] = rate
            adaptive[i] = make_adaptive_norm(kind, cfg.z_channels, block_in, g, eps, pooled)
            up[i].block = nn.ModuleList()
            for _ in range(cfg.decoder_num_res_blocks[i]):
                up[i].block.append(ResBlock(block_in, block_out, g, eps, pooled, kind, pad))
                block_in = block_out
            if i > 0:
                bt = 2 if cfg.temporal_downsample[i - 1] else 1
                up[i].upsample = Upsampler(block_in, (bt, 2, 2), pad)
                rate *= bt
        self.up = nn.ModuleList(up)
        self.adaptive = nn.ModuleList(adaptive)
        self.norm_out = make_norm(kind, block_in, g, eps, pooled)
        self.conv_out = CausalConv3d(block_in, cfg.in_channels, 3, bias=True, padding=pad)

    def forward(self, q: Tensor, cache: CausalCache | None = None) -> Tensor:
        frames = self.reconstruct_fixed(q, cache)
        if not hasattr(self, "conv_in"):
            return frames
        x = self.conv_in(q, cache)
        for block in self.mid_block:
            x = block(x, cache)
        for i in reversed(range(len(self.up))):
            x = self.adaptive[i](x, q, self.rates[i], cache)
            for block in self.up[i].block:
                x = block(x, cache)
            if hasattr(self.up[i], "upsample"):
                x = self.up[i].upsample(x, cache)
        out = self.conv_out(swish(self.norm_out(x)), cache)
        return out if frames is None else out + frames.to(out.dtype)

    def reconstruct_fixed(self, q: Tensor, cache: CausalCache | None) -> Tensor | None:
        """Latent ``(B, z_channels, n, h, w)`` -> the block-mean code's frames ``(B, 3, T, H, W)`` (None
        without ``mean_bits``); the last latent frame's means go into ``cache`` for the next chunk."""
        if self.block_mean is None:
            return None
        t = self.temporal_factor
        previous = cache.get(self.block_mean) if cache is not None else None
        first = t == 1 or previous is None  # a clip's first chunk: latent frame 0 is frame 0 alone
        code = q[:, -self.block_mean.channels :]
        frames = self.block_mean.reconstruct(code, first, *(previous or ()))
        if cache is not None:
            cache.set(self.block_mean, (self.block_mean.decode(code[:, :, -1:]), first and q.shape[2] == 1))
        return frames


def mean_code(cfg: TokenizerConfig) -> BlockMeanCode | None:
    """The block-mean code of ``cfg`` (``cfg.mean_bits``), or None when every channel is learned."""
    if cfg.mean_bits is None:
        return None
    return BlockMeanCode(
        cfg.mean_bits,
        cfg.temporal_factor,
        cfg.spatial_factor,
        cfg.mean_slope,
        cfg.mean_slope_bits,
        cfg.mean_chroma_share,
        cfg.mean_detail_bits,
    )
