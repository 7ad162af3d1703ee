"""Scoring a video LM: held-out bits per token and per pixel next to two baselines, and continuation
quality next to "repeat the last prompt frame".

Baselines, on the same windows as the LM (each window starts without context, as the LM's does):

* **unigram**: the frequency of each id among the training tokens, add-alpha smoothed over the whole
  vocabulary, alpha the best of a small grid on the held-out tokens (in the baseline's favour);
* **copy**: the co-located token of the previous latent frame, mixed with the unigram,
  ``q(x) = lam * [x == previous] + (1 - lam) * unigram(x)`` (the window's first latent frame: unigram
  alone), ``lam`` the best of a grid on the held-out tokens.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from magvit2.lm.transformer import VideoLM

LN2 = math.log(2.0)
ALPHAS = (1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0)
LAMBDAS = tuple(i / 20 for i in range(1, 20))


@torch.no_grad()
def lm_bits(model: VideoLM, windows: Tensor, classes: Tensor | None = None, batch: int = 8) -> Tensor:
    """Bits of every token: windows ``(N, T, h, w)`` -> ``(N, T, h, w)``."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, windows.shape[0], batch):
        c = classes[i : i + batch].to(device) if classes is not None else None
        out.append(-model.log_prob(windows[i : i + batch].to(device), c).float().cpu() / LN2)
    return torch.cat(out)


def unigram_log2(counts: Tensor, alpha: float) -> Tensor:
    """log2 probability of every id ``(V,)`` under add-``alpha`` smoothing of ``counts`` ``(V,)``."""
    counts = counts.double()
    return torch.log2((counts + alpha) / (counts.sum() + alpha * counts.numel()))


def unigram_bits(counts: Tensor, windows: Tensor) -> tuple[float, float]:
    """(bits per token of the windows' tokens, chosen alpha)."""
    best = min((float(-unigram_log2(counts, a)[windows].mean()), a) for a in ALPHAS)
    return best


def copy_bits(counts: Tensor, windows: Tensor, alpha: float) -> tuple[float, float]:
    """(bits per token of "copy the co-located token of the previous latent frame", chosen lam)."""
    uni = torch.exp2(unigram_log2(counts, alpha))[windows]  # (N, T, h, w) probabilities
    same = torch.zeros_like(uni)
    same[:, 1:] = (windows[:, 1:] == windows[:, :-1]).double()
    first = uni[:, :1]
    best = (math.inf, 0.0)
    for lam in LAMBDAS:
        later = lam * same[:, 1:] + (1 - lam) * uni[:, 1:]
        bits = float(-torch.cat([first, later], dim=1).log2().mean())
        best = min(best, (bits, lam))
    return best


def pixels_per_token(frames: int, height: int, width: int, temporal: int, spatial: int) -> float:
    """Video pixels one token stands for in a window of ``frames`` latent frames of ``h x w``:
    ``(1 + t*(T-1)) * h*s * w*s / (T*h*w)``."""
    return (1 + temporal * (frames - 1)) * spatial**2 / frames


def bits_report(
    model: VideoLM,
    windows: Tensor,
    counts: Tensor,
    temporal: int,
    spatial: int,
    classes: Tensor | None = None,
) -> dict[str, float]:
    """Held-out bits per token (LM, unigram, copy), per pixel, and the LM's bits per latent frame of
    the window (how much context helps)."""
    bits = lm_bits(model, windows, classes)
    uni, alpha = unigram_bits(counts, windows)
    copy, lam = copy_bits(counts, windows, alpha)
    per_pixel = pixels_per_token(windows.shape[1], windows.shape[2], windows.shape[3], temporal, spatial)
    return {
        "windows": windows.shape[0],
        "latent_frames": windows.shape[1],
        "tokens": windows.numel(),
        "lm_bits_per_token": float(bits.mean()),
        "unigram_bits_per_token": uni,
        "copy_bits_per_token": copy,
        "lm_bits_per_pixel": float(bits.mean()) / per_pixel,
        "unigram_alpha": alpha,
        "copy_lambda": lam,
        "lm_bits_per_token_by_frame": [round(float(b), 4) for b in bits.mean(dim=(0, 2, 3))],
    }
