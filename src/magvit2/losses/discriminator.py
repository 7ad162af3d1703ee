"""MAGVIT's 3D StyleGAN-like discriminator with blur-pool downsampling.

Layout (MAGVIT-v2 appendix figure, MAGVIT-v1 code): conv3x3x3 ``in -> C`` + LeakyReLU(0.2); ResBlockDown
blocks ``C -> C*m_1 -> C*m_2 ...`` each halving T, H and W with a [1,3,3,1] binomial blur; conv3x3x3 +
LeakyReLU; Linear + LeakyReLU; Linear to one logit per clip.

Images are 1-frame videos: :class:`BlurPool3d` only downsamples an axis whose size is above 1, so a
1-frame input is blurred and halved in H and W only (the same holds for a clip whose time axis has
already been reduced to one frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

BINOMIAL_4 = (1.0, 3.0, 3.0, 1.0)


class BlurPool3d(nn.Module):
    """Anti-aliased 2x downsampling: separable [1,3,3,1]/8 filter, stride 2, reflect padding of 1.

    ``(B, C, T, H, W) -> (B, C, T // 2, H // 2, W // 2)``: every axis of size > 1 goes to ``size // 2``;
    axes of size 1 are left alone. Reflect padding keeps a constant
    input constant and maps the alternating pattern +1,-1,... to exactly 0.
    """

    def __init__(self, taps: tuple[float, ...] = BINOMIAL_4) -> None:
        super().__init__()
        k = torch.tensor(taps, dtype=torch.float32)
        self.register_buffer("kernel", k / k.sum(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Blur and halve each axis of size > 1 of a ``(B, C, T, H, W)`` tensor."""
        if x.ndim != 5:
            raise ValueError(f"BlurPool3d expects (B, C, T, H, W), got shape {tuple(x.shape)}")
        c = x.shape[1]
        taps = self.kernel.to(x.dtype)
        n = taps.numel()
        for axis in (2, 3, 4):
            if x.shape[axis] <= 1:
                continue
            pad = [0] * 6
            pad[2 * (4 - axis)] = pad[2 * (4 - axis) + 1] = 1  # F.pad lists the last axis first
            x = F.pad(x, pad, mode="reflect")
            shape = [1, 1, 1, 1, 1]
            shape[axis] = n
            stride = [1, 1, 1]
            stride[axis - 2] = 2
            x = F.conv3d(x, taps.view(shape).repeat(c, 1, 1, 1, 1), stride=stride, groups=c)
        return x


def _blurred_size(size: int) -> int:
    """Length of an axis after :class:`BlurPool3d`."""
    return size if size <= 1 else size // 2


class ResBlockDown(nn.Module):
    """StyleGAN residual block: conv3 + act, blur-pool, conv3 (-> out) + act; skip = 1x1x1(blur(x));
    output ``(main + skip) / sqrt(2)``. ``(B, in, T, H, W) -> (B, out, T', H/2, W/2)``."""

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, in_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv3d(in_channels, out_channels, 1, bias=False)
        self.blur = BlurPool3d()
        self.act = nn.LeakyReLU(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        """Residual downsampling step."""
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(self.blur(h)))
        return (h + self.skip(self.blur(x))) / math.sqrt(2.0)


@dataclass
class DiscriminatorConfig:
    """Sizes of :class:`Discriminator3D`.

    Attributes:
        in_channels: channels of the videos (3 for RGB).
        channels: width ``C`` of the first convolution.
        channel_multipliers: one ResBlockDown per entry; block ``i`` outputs ``C * m_i`` channels.
            The MAGVIT-v2 figure is ``C=128, (2, 4, 4, 4, 4)``: 128 -> 256 -> 512 -> 512 -> 512 -> 512.
        input_size: ``(T, H, W)`` of the clips; when given, the head flattens the final feature map
            into ``Linear`` (as MAGVIT does, fixed input size). ``None`` (default) averages over
            ``(T, H, W)`` before the ``Linear`` layers so any size works (images and clips alike).
        negative_slope: LeakyReLU slope.
    """

    in_channels: int = 3
    channels: int = 128
    channel_multipliers: tuple[int, ...] = (2, 4, 4, 4, 4)
    input_size: tuple[int, int, int] | None = None
    negative_slope: float = 0.2

    def __post_init__(self) -> None:
        self.channel_multipliers = tuple(int(m) for m in self.channel_multipliers)
        if self.channels < 1 or not self.channel_multipliers or min(self.channel_multipliers) < 1:
            raise ValueError(
                f"DiscriminatorConfig needs channels >= 1 and at least one multiplier >= 1, got "
                f"channels={self.channels}, channel_multipliers={self.channel_multipliers}"
            )
        if self.input_size is not None:
            self.input_size = tuple(int(s) for s in self.input_size)  # type: ignore[assignment]
            if len(self.input_size) != 3 or min(self.input_size) < 1:
                raise ValueError(f"input_size must be (T, H, W) of positive ints, got {self.input_size}")


class Discriminator3D(nn.Module):
    """Clip-level real/fake logit. ``(B, C, T, H, W)`` or images ``(B, C, H, W)`` -> ``(B,)`` logits."""

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DiscriminatorConfig()
        act = nn.LeakyReLU(cfg.negative_slope)
        self.conv_in = nn.Conv3d(cfg.in_channels, cfg.channels, 3, padding=1)
        widths = [cfg.channels] + [cfg.channels * m for m in cfg.channel_multipliers]
        self.blocks = nn.ModuleList(
            ResBlockDown(a, b, cfg.negative_slope) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        out = widths[-1]
        self.conv_out = nn.Conv3d(out, out, 3, padding=1)
        self.act = act
        flat = out
        if cfg.input_size is not None:
            t, h, w = cfg.input_size
            for _ in cfg.channel_multipliers:
                t, h, w = _blurred_size(t), _blurred_size(h), _blurred_size(w)
            flat = out * t * h * w
        self.fc = nn.Linear(flat, out)
        self.logit = nn.Linear(out, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Videos ``(B, C, T, H, W)`` (images ``(B, C, H, W)`` are 1-frame videos) -> logits ``(B,)``."""
        if x.ndim == 4:
            x = x.unsqueeze(2)
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(
                f"Discriminator3D expects (B, {cfg.in_channels}, T, H, W) or (B, {cfg.in_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        if cfg.input_size is not None and tuple(x.shape[2:]) != cfg.input_size:
            raise ValueError(
                f"Discriminator3D was built for input_size (T, H, W) = {cfg.input_size}, "
                f"got {tuple(x.shape[2:])}"
            )
        h = self.act(self.conv_in(x))
        for block in self.blocks:
            h = block(h)
        h = self.act(self.conv_out(h))
        h = h.flatten(1) if cfg.input_size is not None else h.mean(dim=(2, 3, 4))
        return self.logit(self.act(self.fc(h))).squeeze(1)
