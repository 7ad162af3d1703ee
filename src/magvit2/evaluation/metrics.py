"""Full-reference quality metrics for images and videos: PSNR, SSIM and MS-SSIM in plain torch.

Inputs are images ``(B, C, H, W)`` or videos ``(B, C, T, H, W)`` (``C`` = 3 for RGB, or 1). The value
range is given explicitly by ``data_range``: a number ``L`` means values in [0, L] (1.0 for [0, 1], 255.0
for uint8 values); a pair ``(low, high)`` means values in [low, high], e.g. ``(-1.0, 1.0)``. Values are
shifted to start at 0 before computing (SSIM's luminance term depends on the absolute level, so SSIM of
[-1, 1] data equals SSIM of the same data mapped to [0, 1] only this way); a number ``L`` with negative
reference ``x`` is an error, because it almost always means [-1, 1] data passed as ``data_range=2``
(the reconstruction ``y`` may overshoot the range a little and is not checked).

Video conventions (the ones tokenizer papers report):

* every metric is computed per frame and averaged over the frames of a video; PSNR also offers the
  "global" variant (one MSE over the whole video);
* ``reduction="mean"`` averages the per-video values over the batch (a 0-d tensor), ``"none"`` returns
  one value per video/image ``(B,)``.

SSIM follows Wang et al. 2004 as implemented by scikit-image with ``gaussian_weights=True, sigma=1.5,
use_sample_covariance=False``: an 11-tap Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, the SSIM map
averaged over the "valid" region (where the window fits inside the frame), computed per channel and
averaged over channels (``color="rgb"``) or on BT.601 luma (``color="luma"``).

MS-SSIM follows Wang, Simoncelli & Bovik 2003 with the standard five scale weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling between scales, and negative contrast-
structure terms clamped to 0. Small frames use fewer scales: the number of scales is the largest
``M <= 5`` with ``min(H, W) // 2**(M-1) >= 11`` (the window must fit at the coarsest scale), and the first
``M`` weights are renormalised to sum to 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange

__all__ = ["psnr", "ssim", "ms_ssim", "MS_SSIM_WEIGHTS", "ms_ssim_num_scales"]

Reduction = Literal["mean", "none"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WIN_SIZE = 11
_SIGMA = 1.5
_K1 = 0.01
_K2 = 0.03
_LUMA = (0.299, 0.587, 0.114)


DataRange = float | tuple[float, float]


def _prepare(
    x: torch.Tensor, y: torch.Tensor, data_range: DataRange, name: str
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Validate a pair of images (4-d) or videos (5-d) of one shape.

    Returns frames (B*T, C, H, W) of both in float64 shifted to [0, L], T (1 for images) and L.
    """
    if x.shape != y.shape:
        raise ValueError(
            f"{name}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if x.ndim not in (4, 5):
        raise ValueError(
            f"{name}: expected images (B,C,H,W) or videos (B,C,T,H,W), got shape {tuple(x.shape)}"
        )
    if isinstance(data_range, tuple | list):
        low, high = (float(v) for v in data_range)
    else:
        low, high = 0.0, float(data_range)
        if float(x.min()) < 0:
            raise ValueError(
                f"{name}: data_range={data_range} means values in [0, {data_range}] but the reference x has "
                "negative values; for [-1, 1] data pass data_range=(-1.0, 1.0)"
            )
    if not high > low:
        raise ValueError(f"{name}: data_range must be L > 0 or (low, high) with high > low, got {data_range}")
    fx, fy = (z.to(torch.float64) - low for z in (x, y))
    t = 1
    if x.ndim == 5:
        t = x.shape[2]
        fx, fy = (rearrange(z, "b c t h w -> (b t) c h w") for z in (fx, fy))
    return fx, fy, t, high - low


def _reduce(per_frame: torch.Tensor, t: int, reduction: Reduction) -> torch.Tensor:
    """Per-frame values (B*T,) -> per-video means (B,) -> batch mean (0-d) unless reduction='none'."""
    per_video = rearrange(per_frame, "(b t) -> b t", t=t).mean(dim=1)
    if reduction == "none":
        return per_video
    if reduction == "mean":
        return per_video.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: DataRange,
    mode: Literal["frames", "global"] = "frames",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    x, y: (B,C,H,W) or (B,C,T,H,W). ``mode="frames"`` (default, the usual video PSNR): MSE per frame over
    (C,H,W), PSNR per frame, mean over frames. ``mode="global"``: one MSE over the whole video (C,T,H,W).
    Identical frames give +inf. Returns a 0-d tensor (``reduction="mean"``) or (B,) (``"none"``), float64.
    """
    fx, fy, t, width = _prepare(x, y, data_range, "psnr")
    if mode not in ("frames", "global"):
        raise ValueError(f"psnr: mode must be 'frames' or 'global', got {mode!r}")
    err = (fx - fy).pow(2).flatten(1).mean(dim=1)
    if mode == "global":
        err = rearrange(err, "(b t) -> b t", t=t).mean(dim=1)
        t = 1
    return _reduce(10.0 * torch.log10(width**2 / err), t, reduction)


def _gaussian_kernel() -> list[float]:
    """Normalised 1-D Gaussian window (11 taps, sigma 1.5)."""
    g = [math.exp(-((i - (_WIN_SIZE - 1) / 2) ** 2) / (2 * _SIGMA**2)) for i in range(_WIN_SIZE)]
    return [v / sum(g) for v in g]


def _filter(x: torch.Tensor, kernel: list[float]) -> torch.Tensor:
    """Separable 'valid' Gaussian filtering of every channel: (N,C,H,W) -> (N,C,H-10,W-10).

    Shift-and-add over views (no unfolded copies): much faster than a grouped float64 convolution on CPU.
    """
    w = x.shape[-1] - _WIN_SIZE + 1
    rows = x[..., 0:w] * kernel[0]
    for i in range(1, _WIN_SIZE):
        rows.add_(x[..., i : i + w], alpha=kernel[i])
    h = x.shape[-2] - _WIN_SIZE + 1
    out = rows[..., 0:h, :] * kernel[0]
    for i in range(1, _WIN_SIZE):
        out.add_(rows[..., i : i + h, :], alpha=kernel[i])
    return out


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, data_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term per frame and channel: (N,C,H,W) -> two (N,C)."""
    if min(x.shape[-2:]) < _WIN_SIZE:
        raise ValueError(f"ssim: frames must be at least {_WIN_SIZE}x{_WIN_SIZE}, got {tuple(x.shape[-2:])}")
    k = _gaussian_kernel()
    c1 = (_K1 * data_range) ** 2
    c2 = (_K2 * data_range) ** 2
    mu_x, mu_y = _filter(x, k), _filter(y, k)
    var_x = _filter(x * x, k) - mu_x**2
    var_y = _filter(y * y, k) - mu_y**2
    cov = _filter(x * y, k) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    lum_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum_map * cs_map).mean(dim=(-2, -1)), cs_map.mean(dim=(-2, -1))


def _color(x: torch.Tensor, color: Literal["rgb", "luma"]) -> torch.Tensor:
    """Frames (N,C,H,W) -> themselves ('rgb': every channel) or BT.601 luma (N,1,H,W)."""
    if color == "rgb":
        return x
    if color != "luma":
        raise ValueError(f"color must be 'rgb' or 'luma', got {color!r}")
    if x.shape[1] != 3:
        raise ValueError(f"color='luma' needs 3 channels, got {x.shape[1]}")
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: DataRange,
    color: Literal["rgb", "luma"] = "rgb",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Structural similarity (Gaussian window 11, sigma 1.5, K1 .01, K2 .03), per frame, mean over frames.

    x, y: (B,C,H,W) or (B,C,T,H,W) with H, W >= 11. ``color="rgb"``: SSIM per channel, averaged over
    channels (scikit-image's ``channel_axis`` convention); ``"luma"``: SSIM of the BT.601 luma.
    Returns a 0-d tensor or (B,), float64.
    """
    fx, fy, t, width = _prepare(x, y, data_range, "ssim")
    s, _ = _ssim_terms(_color(fx, color), _color(fy, color), width)
    return _reduce(s.mean(dim=1), t, reduction)


def ms_ssim_num_scales(height: int, width: int, max_scales: int = len(MS_SSIM_WEIGHTS)) -> int:
    """Number of MS-SSIM scales for a frame: the largest M <= max_scales with min(H,W)//2**(M-1) >= 11."""
    side = min(height, width)
    if side < _WIN_SIZE:
        raise ValueError(f"ms_ssim: frames must be at least {_WIN_SIZE}x{_WIN_SIZE}, got {height}x{width}")
    scales = 1
    while scales < max_scales and side // 2**scales >= _WIN_SIZE:
        scales += 1
    return scales


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: DataRange,
    color: Literal["rgb", "luma"] = "rgb",
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003), per frame and channel, mean over channels and frames.

    ``prod_{j<M} relu(cs_j)^w_j * relu(ssim_M)^w_M`` with 2x2 average pooling between scales; the number
    of scales M comes from :func:`ms_ssim_num_scales` and the weights are the first M standard weights
    renormalised to sum to 1. x, y: (B,C,H,W) or (B,C,T,H,W). Returns a 0-d tensor or (B,), float64.
    """
    fx, fy, t, width = _prepare(x, y, data_range, "ms_ssim")
    fx, fy = _color(fx, color), _color(fy, color)
    m = ms_ssim_num_scales(*fx.shape[-2:])
    w = torch.tensor(MS_SSIM_WEIGHTS[:m], dtype=torch.float64, device=fx.device)
    w = w / w.sum()
    result = torch.ones(fx.shape[:2], dtype=torch.float64, device=fx.device)
    for j in range(m):
        s, cs = _ssim_terms(fx, fy, width)
        term = s if j == m - 1 else cs
        result = result * term.clamp(min=0).pow(w[j])
        if j < m - 1:
            fx, fy = F.avg_pool2d(fx, 2), F.avg_pool2d(fy, 2)
    return _reduce(result.mean(dim=1), t, reduction)
