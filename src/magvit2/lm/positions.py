"""Positions over the token grid (latent frame, row, column): 3D rotary or learned axial.

A sequence is ``[BOS, t_0, t_1, ...]`` with the tokens in raster order (frame, then row, then
column). :func:`sequence_positions` gives every slot its ``(frame, row, column)``; BOS sits at frame
-1, row 0, column 0, so relative offsets to it tell every token where it is. Shared by the
autoregressive model and the masked one that builds on it.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn


def grid_positions(frames: int, height: int, width: int, start_frame: int = 0) -> Tensor:
    """``(frames * height * width, 3)`` int64 ``(frame, row, column)`` in raster order."""
    t = torch.arange(start_frame, start_frame + frames)
    h, w = torch.arange(height), torch.arange(width)
    grid = torch.stack(torch.meshgrid(t, h, w, indexing="ij"), dim=-1)
    return rearrange(grid, "t h w c -> (t h w) c")


def sequence_positions(frames: int, height: int, width: int) -> Tensor:
    """``(1 + frames * height * width, 3)``: BOS at ``(-1, 0, 0)`` then :func:`grid_positions`."""
    bos = torch.tensor([[-1, 0, 0]])
    return torch.cat([bos, grid_positions(frames, height, width)])


class Rotary3D(nn.Module):
    """Rotary embedding split over three axes: of a head's ``head_dim / 2`` rotation pairs, a third
    turns with the frame index, a third with the row and a third with the column (pairs left over
    stay unrotated)."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        per_axis = head_dim // 2 // 3
        freqs = base ** (-torch.arange(per_axis, dtype=torch.float64) / max(per_axis, 1))
        self.head_dim, self.per_axis = head_dim, per_axis
        self.register_buffer("freqs", freqs.float(), persistent=False)

    def angles(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions ``(N, 3)`` -> (cos, sin), each ``(N, head_dim)``."""
        ang = positions.to(self.freqs)[:, :, None] * self.freqs  # (N, 3, per_axis)
        ang = rearrange(ang, "n c f -> n (c f)")
        pad = self.head_dim // 2 - ang.shape[1]
        ang = torch.cat([ang, ang.new_zeros(ang.shape[0], pad)], dim=1)
        ang = repeat(ang, "n f -> n (two f)", two=2)
        return ang.cos(), ang.sin()

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotate queries or keys ``(B, H, N, D)`` by the angles of :meth:`angles` (``(N, D)``)."""
        a, b = x.chunk(2, dim=-1)
        return x * cos.to(x.dtype) + torch.cat([-b, a], dim=-1) * sin.to(x.dtype)


class AxialPositions(nn.Module):
    """Learned position embeddings ``frame + row + column`` added to the input (BOS: frame -1 has
    its own row of the frame table); frames beyond ``max_frames`` are refused."""

    def __init__(self, dim: int, max_frames: int, height: int, width: int) -> None:
        super().__init__()
        self.max_frames = max_frames
        self.frame = nn.Embedding(max_frames + 1, dim)
        self.row = nn.Embedding(height, dim)
        self.col = nn.Embedding(width, dim)
        for table in (self.frame, self.row, self.col):
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, positions: Tensor) -> Tensor:
        """positions ``(N, 3)`` -> embeddings ``(N, dim)``."""
        frame = positions[:, 0] + 1
        if int(frame.max()) > self.max_frames:
            raise ValueError(
                f"learned axial positions cover {self.max_frames} latent frames, got frame "
                f"{int(frame.max()) - 1}; "
                "generate longer videos with a sliding window (--window)"
            )
        return self.frame(frame) + self.row(positions[:, 1]) + self.col(positions[:, 2])
