"""Streaming reconstruction metrics on uint8 frames, with the definitions of :mod:`magvit2.evaluation`.

PSNR is the mean over frames of each frame's PSNR (the usual video convention, as in
``benchmarks/codecs.py``) and SSIM the mean over frames of scikit-image's SSIM
(``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``), so memory stays constant however
long the clip.
"""

from __future__ import annotations

import numpy as np
import torch

from magvit2.evaluation import psnr, ssim


def _frames(a: np.ndarray) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` -> ``(T, 3, H, W)`` (one image per frame)."""
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)


def ssim_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM of each pair of uint8 frames ``(T, H, W, 3)`` -> ``(T,)`` float64."""
    if a.shape != b.shape:
        raise ValueError(f"ssim_frames: shapes differ, {a.shape} vs {b.shape}")
    return ssim(_frames(a), _frames(b), 255.0, reduction="none").numpy()


def psnr_frames(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PSNR (dB) of each pair of uint8 frames ``(T, H, W, 3)`` -> ``(T,)`` float64 (inf if equal)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr_frames: shapes differ, {a.shape} vs {b.shape}")
    return psnr(_frames(a), _frames(b), 255.0, reduction="none").numpy()


#: SSIM's Gaussian window is 11 pixels wide: smaller frames have no SSIM.
SSIM_MIN_SIZE = 11


class ReconstructionMetrics:
    """Accumulates per-frame PSNR and SSIM over chunks of uint8 frames; memory is constant. Frames
    smaller than SSIM's window (:data:`SSIM_MIN_SIZE`) count for PSNR only (SSIM is then NaN)."""

    def __init__(self) -> None:
        self.psnr_sum = 0.0
        self.ssim_sum = 0.0
        self.frames = 0
        self.ssim_count = 0

    def update(self, source: np.ndarray, recon: np.ndarray) -> None:
        """Add a chunk: source and reconstruction uint8 ``(T, H, W, 3)``."""
        self.psnr_sum += float(psnr_frames(source, recon).sum())
        if min(source.shape[1:3]) >= SSIM_MIN_SIZE:
            self.ssim_sum += float(ssim_frames(source, recon).sum())
            self.ssim_count += len(source)
        self.frames += len(source)

    @property
    def psnr(self) -> float:
        """Mean per-frame PSNR in dB (inf when every frame is identical)."""
        return self.psnr_sum / max(self.frames, 1)

    @property
    def ssim(self) -> float:
        """Mean per-frame SSIM (NaN when the frames are smaller than its window)."""
        return self.ssim_sum / self.ssim_count if self.ssim_count else float("nan")
