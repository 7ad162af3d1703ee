"""Causal 3D convolution and the state it carries from one time chunk to the next.

Every layer of the tokenizer is causal in time: output frame ``t`` depends on input frames ``<= t`` only.
A long video can therefore be processed in time chunks: each causal convolution keeps the input frames
that its next output window still needs (at most ``kernel_t - 1``, the zero padding in front of the first
chunk), and modules that treat a video's first frame specially (the temporal depth-to-space) remember
that they have seen it. That state lives in a :class:`CausalCache` passed explicitly through ``forward``;
without a cache every call is a whole video that starts at frame 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalCache:
    """Per-module state carried between consecutive time chunks of one batch of videos.

    Create one per video (batch) and pass it to every chunk, in order. A module with no entry has not
    seen any frame yet, i.e. the current chunk starts at the video's first frame.
    """

    def __init__(self) -> None:
        self._state: dict[int, object] = {}
        self._owners: dict[int, nn.Module] = {}  # keeps ids valid while the cache lives

    def get(self, module: nn.Module) -> object | None:
        """The state ``module`` stored after the previous chunk, or ``None`` before the first chunk."""
        return self._state.get(id(module))

    def set(self, module: nn.Module, value: object) -> None:
        """Store ``module``'s state for the next chunk."""
        self._owners[id(module)] = module
        self._state[id(module)] = value

    def seen(self, module: nn.Module) -> bool:
        """Whether ``module`` has already processed an earlier chunk of this video."""
        return id(module) in self._state

    def copy(self) -> CausalCache:
        """A copy that a trial pass can advance without touching this cache (modules replace their
        entries, never modify them in place, so a shallow copy suffices)."""
        new = CausalCache()
        new._state, new._owners = dict(self._state), dict(self._owners)
        return new


def conv3d(conv: nn.Conv3d, x: Tensor) -> Tensor:
    """``conv(x)`` for ``x`` ``(B, C, T, H, W)``; float32 CPU inputs always go through oneDNN.

    PyTorch's CPU convolution picks oneDNN only when ``B * C * T * H > 20480``, a size rule written for
    2D inputs (``N * C * H * W``) that for 3D ones leaves out the width; below it (a single clip of
    streamed chunks, the first layers of any clip) it takes an im2col path up to 9x slower (the
    built-in model's first convolution on 19 frames of 176x144: 158 ms against 17 ms, 2 threads).
    The results agree to float32 rounding, and gradients are the same (``benchmarks/conv3d.py``).
    """
    if not _onednn_applies(conv, x):
        return conv(x)
    return torch.ops.aten.mkldnn_convolution(
        x.contiguous(), conv.weight, conv.bias, conv.padding, conv.stride, conv.dilation, conv.groups
    )


def _onednn_applies(conv: nn.Conv3d, x: Tensor) -> bool:
    """Whether :func:`conv3d` may call oneDNN directly: float32 on the CPU, oneDNN built and enabled,
    explicit zero padding, no CPU autocast (autocast casts ``nn.Conv3d``'s op to bf16, not this one),
    and neither ``torch.compile`` (its tracer has no fake-tensor rule for the oneDNN op, and picks its
    own) nor ``torch.jit.trace`` running."""
    return (
        not torch.compiler.is_compiling()  # first: the tracer must not reach the checks below
        and not torch.jit.is_tracing()  # a traced graph keeps the portable op
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)  # "same" / "valid": left to nn.Conv3d
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not torch.is_autocast_enabled("cpu")
    )


class CausalConv3d(nn.Module):
    """3D convolution that pads only the past in time (``kernel_t - 1`` zero frames in front).

    Spatial padding is ``kernel // 2`` pixels on both sides: zeros (``padding="zeros"``, as Open-MAGVIT2's
    ``ConvBlock3D``) or copies of the edge pixels (``padding="replicate"``).
    With temporal stride ``s``, ``1 + s*k`` frames give ``1 + k`` outputs for kernel 3, stride 2
    (output ``i`` sees input frames ``s*i - 2 .. s*i``).

    The parameters live in ``self.conv_1`` (an ``nn.Conv3d``), so key names equal Open-MAGVIT2's
    (``...conv_1.weight``).

    Shapes: ``(B, C_in, T, H, W)`` -> ``(B, C_out, T_out, H_out, W_out)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
        bias: bool = True,
        padding: str = "zeros",
    ) -> None:
        super().__init__()
        kt, kh, kw = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        st, sh, sw = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        if padding not in ("zeros", "replicate"):
            raise ValueError(f"CausalConv3d: padding must be 'zeros' or 'replicate', got {padding!r}")
        self.kernel_t, self.stride_t = kt, st
        #: replicate padding done here, before the convolution (which then pads nothing)
        self.replicate = (
            (kw // 2, kw // 2, kh // 2, kh // 2) if padding == "replicate" and kh * kw > 1 else None
        )
        self.conv_1 = nn.Conv3d(
            in_channels,
            out_channels,
            kernel_size=(kt, kh, kw),
            stride=(st, sh, sw),
            padding=(0, 0, 0) if self.replicate else (0, kh // 2, kw // 2),
            bias=bias,
        )

    @property
    def weight(self) -> Tensor:
        return self.conv_1.weight

    def _first_frame(self, x: Tensor) -> Tensor:
        """Output for a one-frame input behind zero padding: ``(B, C, 1, H, W)`` -> ``(B, O, 1, H', W')``."""
        conv = self.conv_1
        out = F.conv2d(
            self._pad(x[:, :, 0]), conv.weight[:, :, -1], conv.bias, stride=conv.stride[1:],
            padding=conv.padding[1:],
        )  # fmt: skip
        return out.unsqueeze(2)

    def _pad(self, x: Tensor) -> Tensor:
        """``x`` ``(..., H, W)`` with its edge pixels repeated around it when padding is 'replicate'."""
        if self.replicate is None:
            return x
        if x.ndim == 5:  # replicate padding of a 5D tensor pads the last three dims
            return F.pad(x, (*self.replicate, 0, 0), mode="replicate")
        return F.pad(x, self.replicate, mode="replicate")

    def forward(self, x: Tensor, cache: CausalCache | None = None) -> Tensor:
        """Convolve ``x`` (one chunk, or the whole video when ``cache`` is None)."""
        kt, st = self.kernel_t, self.stride_t
        past = cache.get(self) if cache is not None else None
        if cache is None and kt > 1 and x.shape[2] == 1:
            # an image (a lone first frame, no later chunks): behind zero padding only the last
            # temporal tap sees data, so a 2D convolution gives the same output at 1/kt the cost
            return self._first_frame(x)
        if past is None and kt > 1:
            b, c, _, h, w = x.shape
            past = x.new_zeros(b, c, kt - 1, h, w)
        buf = x if past is None or past.shape[2] == 0 else torch.cat([past, x], dim=2)
        length = buf.shape[2]
        n_out = (length - kt) // st + 1 if length >= kt else 0
        if cache is not None:
            # the frames the next output window starts with; cloned so the chunk can be freed
            cache.set(self, buf[:, :, n_out * st :].clone())
        if n_out == 0:
            out_hw = self.conv_1(self._pad(buf.new_zeros(*buf.shape[:2], kt, *buf.shape[3:]))).shape[3:]
            return buf.new_zeros(buf.shape[0], self.conv_1.out_channels, 0, *out_hw)
        return conv3d(self.conv_1, self._pad(buf))


def swish(x: Tensor) -> Tensor:
    """``x * sigmoid(x)`` (SiLU)."""
    return F.silu(x)
