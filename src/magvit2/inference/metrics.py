"""Streaming reconstruction metrics on uint8 frames: PSNR over a whole clip and mean per-frame SSIM.

SSIM follows Wang et al. 2004 as scikit-image computes it with ``gaussian_weights=True``,
``sigma=1.5``, ``use_sample_covariance=False``, ``data_range=255``: an 11-tap Gaussian window, the
mean over valid window positions of each RGB channel, then over channels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _gaussian(radius: int, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair of uint8 frames ``(T, H, W, 3)`` -> ``(T,)`` float64 (the 11-px window
    shrinks for frames smaller than 11 px)."""
    if a.shape != b.shape:
        raise ValueError(f"ssim_frames: shapes differ, {a.shape} vs {b.shape}")
    t, h, w, c = a.shape
    # every channel of every frame as a one-channel image; float32 is exact enough for 8-bit values
    x = torch.from_numpy(np.ascontiguousarray(a)).float().permute(0, 3, 1, 2).reshape(t * c, 1, h, w)
    y = torch.from_numpy(np.ascontiguousarray(b)).float().permute(0, 3, 1, 2).reshape(t * c, 1, h, w)
    radius = max(0, min(5, (min(h, w) - 1) // 2))
    g = _gaussian(radius).float()
    kh, kw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(v, kh), kw)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(t, c, -1).double().mean(dim=(1, 2)).numpy()


class ReconstructionMetrics:
    """Accumulates squared error and SSIM over chunks of uint8 frames; memory is constant."""

    def __init__(self) -> None:
        self.sq_err = 0.0
        self.values = 0
        self.ssim_sum = 0.0
        self.frames = 0

    def update(self, source: np.ndarray, recon: np.ndarray) -> None:
        """Add a chunk: source and reconstruction uint8 ``(T, H, W, 3)``."""
        d = source.astype(np.float64) - recon.astype(np.float64)
        self.sq_err += float((d * d).sum())
        self.values += d.size
        self.ssim_sum += float(ssim_frames(source, recon).sum())
        self.frames += len(source)

    @property
    def psnr(self) -> float:
        """PSNR in dB over every pixel of the clip (inf when identical)."""
        mse = self.sq_err / max(self.values, 1)
        return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)

    @property
    def ssim(self) -> float:
        """Mean per-frame SSIM."""
        return self.ssim_sum / max(self.frames, 1)
