"""Normalisation for videos: GroupNorm per frame (causal) or pooled over time (Open-MAGVIT2), and
channel LayerNorm at each position; with each, the decoder's adaptive form whose scale and shift are
predicted from the quantized latent."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from magvit2.modules.causal import CausalCache


def group_norm_video(
    x: Tensor,
    num_groups: int,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    time_pooled: bool = False,
) -> Tensor:
    """GroupNorm of ``x`` ``(B, C, T, H, W)`` (or ``(B, C, H, W)``), same shape out.

    ``time_pooled=False``: statistics over ``(C/G, H, W)`` for each frame separately (strictly causal).
    ``time_pooled=True``: statistics over ``(C/G, T, H, W)`` (Open-MAGVIT2's video model; not causal).
    """
    if x.ndim != 5 or time_pooled:
        return F.group_norm(x, num_groups, weight, bias, eps)
    b, t = x.shape[0], x.shape[2]
    frames = rearrange(x, "b c t h w -> (b t) c h w")
    frames = F.group_norm(frames, num_groups, weight, bias, eps)
    return rearrange(frames, "(b t) c h w -> b c t h w", b=b, t=t)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters and key names) whose statistics are per frame by default.

    Shapes: ``(B, C, T, H, W)`` -> same.
    """

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-6, affine: bool = True, time_pooled=False
    ) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)
        self.time_pooled = time_pooled

    def forward(self, x: Tensor) -> Tensor:
        return group_norm_video(x, self.num_groups, self.weight, self.bias, self.eps, self.time_pooled)


def _latent_stats(q: Tensor, eps: float, time_pooled: bool) -> tuple[Tensor, Tensor]:
    """Standard deviation and mean of the quantized latent ``q`` ``(B, Z, n, h, w)``.

    Per latent frame -> two ``(B, n, Z)`` tensors; pooled over time -> two ``(B, 1, Z)`` tensors.
    The variance is the unbiased one plus ``eps`` (as Open-MAGVIT2 computes it), or the biased one
    when a frame has a single position.
    """
    pattern = "b z n h w -> b 1 z (n h w)" if time_pooled else "b z n h w -> b n z (h w)"
    flat = rearrange(q, pattern)
    correction = 1 if flat.shape[-1] > 1 else 0
    var, mean = torch.var_mean(flat, dim=-1, correction=correction)
    return (var + eps).sqrt(), mean


class AdaptiveGroupNorm(nn.Module):
    """GroupNorm without affine parameters, then ``x * gamma(std(q)) + beta(mean(q))``.

    ``gamma`` and ``beta`` are ``nn.Linear(z_channels, channels)`` applied to the per-channel standard
    deviation and mean of the quantized latent ``q``. In causal mode (default) those statistics are
    taken per latent frame and each of ``x``'s frames uses the latent frame it was decoded from:
    at frame rate ``r`` (``x`` has ``1 + r*k`` frames for ``1 + k`` latent frames) frame 0 uses latent
    frame 0 and frame ``t >= 1`` uses latent frame ``ceil(t / r)``.

    Shapes: ``x`` ``(B, C, T, H, W)``, ``q`` ``(B, Z, n, h, w)`` -> ``(B, C, T, H, W)``.
    """

    def __init__(
        self, z_channels: int, channels: int, num_groups: int = 32, eps: float = 1e-6, time_pooled=False
    ) -> None:
        super().__init__()
        self.gn = GroupNorm(num_groups, channels, eps=eps, affine=False, time_pooled=time_pooled)
        self.gamma = nn.Linear(z_channels, channels)
        self.beta = nn.Linear(z_channels, channels)
        self.eps = eps
        self.time_pooled = time_pooled

    def forward(self, x: Tensor, q: Tensor, rate: int = 1, cache: CausalCache | None = None) -> Tensor:
        std, mean = _latent_stats(q, self.eps, self.time_pooled)
        scale = rearrange(self.gamma(std), "b n c -> b c n")
        shift = rearrange(self.beta(mean), "b n c -> b c n")
        if not self.time_pooled:
            index = latent_frame_index(self, q.shape[2], x.shape[2], rate, cache, x.device)
            scale, shift = scale[:, :, index], shift[:, :, index]
        return self.gn(x) * scale[..., None, None] + shift[..., None, None]


def latent_frame_index(
    module: nn.Module,
    n_latent: int,
    n_frames: int,
    rate: int,
    cache: CausalCache | None,
    device: torch.device,
) -> Tensor:
    """Index of the latent frame each of ``n_frames`` frames at ``rate`` was decoded from: int64
    ``(n_frames,)``, ``[0, 1 x r, 2 x r, ...]`` for the chunk holding frame 0 (``module`` not yet seen
    by ``cache``), ``[0 x r, 1 x r, ...]`` for later chunks; marks ``module`` as seen."""
    first = cache is None or not cache.seen(module)
    index = torch.arange(n_latent, device=device).repeat_interleave(rate)
    index = index[rate - 1 :] if first else index
    if index.numel() != n_frames:
        raise ValueError(
            f"{type(module).__name__}: {n_latent} latent frames at rate {rate} give {index.numel()} "
            f"frames, got x with {n_frames} frames"
        )
    if cache is not None:
        cache.set(module, True)
    return index


class ChannelNorm(nn.Module):
    """Layer normalisation over channels at each position: ``(B, C, ...)`` -> same.

    Every statistic is local to one position (frame, row, column), so the result does not depend on
    the frame size or on where a crop or tile starts, and a flat frame keeps its colour (a GroupNorm
    subtracts the frame's mean and cannot tell flat grey from flat blue).
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True) -> None:
        super().__init__()
        self.num_channels, self.eps = num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        y = F.layer_norm(x.movedim(1, -1), (self.num_channels,), self.weight, self.bias, self.eps)
        return y.movedim(-1, 1)


class AdaptiveChannelNorm(nn.Module):
    """:class:`ChannelNorm` without affine parameters, then ``x * (1 + gamma(q)) + beta(q)`` where
    ``gamma`` and ``beta`` are linear maps of the quantized latent at each position (``q`` repeated
    over the ``H/h x W/w`` pixels it covers and over the frames decoded from its latent frame; frame
    ``t`` uses latent frame ``ceil(t / rate)`` as :class:`AdaptiveGroupNorm`). Spatial modulation: no
    statistic spans the frame.

    Shapes: ``x`` ``(B, C, T, H, W)``, ``q`` ``(B, Z, n, h, w)`` -> ``(B, C, T, H, W)``.
    """

    def __init__(self, z_channels: int, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = ChannelNorm(channels, eps=eps, affine=False)
        self.gamma = nn.Linear(z_channels, channels)
        self.beta = nn.Linear(z_channels, channels)

    def forward(self, x: Tensor, q: Tensor, rate: int = 1, cache: CausalCache | None = None) -> Tensor:
        index = latent_frame_index(self, q.shape[2], x.shape[2], rate, cache, x.device)
        fh, fw = x.shape[3] // q.shape[3], x.shape[4] // q.shape[4]
        q = rearrange(q[:, :, index], "b z t h w -> b t h w z")
        scale = rearrange(self.gamma(q), "b t h w c -> b c t h 1 w 1")
        shift = rearrange(self.beta(q), "b t h w c -> b c t h 1 w 1")
        y = rearrange(self.norm(x), "b c t (h fh) (w fw) -> b c t h fh w fw", fh=fh, fw=fw)
        return rearrange(y * (1 + scale) + shift, "b c t h fh w fw -> b c t (h fh) (w fw)")


def make_norm(kind: str, channels: int, num_groups: int, eps: float, time_pooled: bool = False) -> nn.Module:
    """The normalisation a config names: ``"group"`` (:class:`GroupNorm`) or ``"channel"``
    (:class:`ChannelNorm`). Shapes: ``(B, C, T, H, W)`` -> same."""
    if kind == "channel":
        return ChannelNorm(channels, eps=eps)
    return GroupNorm(num_groups, channels, eps=eps, time_pooled=time_pooled)


def make_adaptive_norm(
    kind: str, z_channels: int, channels: int, num_groups: int, eps: float, time_pooled: bool = False
) -> nn.Module:
    """The decoder's adaptive normalisation for ``kind`` (see :func:`make_norm`)."""
    if kind == "channel":
        return AdaptiveChannelNorm(z_channels, channels, eps=eps)
    return AdaptiveGroupNorm(z_channels, channels, num_groups, eps, time_pooled)
