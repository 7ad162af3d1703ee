"""Colour augmentation of training clips: one random brightness/contrast/saturation/hue change per clip.

The same change is applied to every frame of a clip (a colour change that flickered from frame to frame
would be motion the model has to encode). The four strengths mean what they mean in
``torchvision.transforms.ColorJitter``: brightness ``b`` scales by a factor in [1-b, 1+b], contrast
``c`` blends with the clip's mean grey by a factor in [1-c, 1+c], saturation ``s`` blends with each
pixel's grey by a factor in [1-s, 1+s], hue ``h`` in [0, 0.5] rotates the colours by up to ``h`` of a
full turn. The hue rotation is a rotation of RGB space about the grey axis, so a third of a turn is
exactly the channel permutation R->G->B->R and grey stays grey.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class ColorChange:
    """The factors of one clip's colour change (1, 1, 1, 0 is no change); hue in turns."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0


def check_strengths(strengths: Sequence[float], where: str = "color_jitter") -> None:
    """Raise ValueError unless ``strengths`` is (brightness, contrast, saturation, hue) with each >= 0
    and hue <= 0.5."""
    if len(strengths) != 4:
        raise ValueError(f"{where} must be [brightness, contrast, saturation, hue], got {list(strengths)}")
    if min(strengths) < 0 or strengths[3] > 0.5:
        raise ValueError(f"{where} strengths must be >= 0 and hue <= 0.5, got {list(strengths)}")


def sample_color_change(rng: np.random.Generator, strengths: Sequence[float]) -> ColorChange:
    """Draw one clip's :class:`ColorChange` for strengths (brightness, contrast, saturation, hue)."""
    b, c, s, h = (float(v) for v in strengths)
    u = rng.random(4)
    return ColorChange(
        brightness=max(0.0, 1 - b + 2 * b * u[0]),
        contrast=max(0.0, 1 - c + 2 * c * u[1]),
        saturation=max(0.0, 1 - s + 2 * s * u[2]),
        hue=-h + 2 * h * u[3],
    )


def hue_rotation(turns: float) -> torch.Tensor:
    """3x3 matrix rotating RGB vectors by ``turns`` of a full turn about the grey axis (1, 1, 1)."""
    theta = 2 * math.pi * turns
    k = torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64)
    cross = torch.tensor([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]], dtype=torch.float64)
    rot = math.cos(theta) * torch.eye(3, dtype=torch.float64) + math.sin(theta) * cross
    return (rot + (1 - math.cos(theta)) * torch.outer(k, k)).float()


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma of (3, ...) RGB as (1, ...)."""
    w = torch.tensor(LUMA, dtype=x.dtype).view(3, *([1] * (x.dim() - 1)))
    return (x * w).sum(0, keepdim=True)


def apply_color_change(clip: torch.Tensor, change: ColorChange) -> torch.Tensor:
    """Apply ``change`` to a clip (3, T, H, W) with values in [-1, 1]; returns the same shape, clamped
    to [-1, 1]. Brightness, contrast, saturation, then hue, each as in torchvision's ColorJitter."""
    x = (clip + 1) * 0.5 * change.brightness
    mean_grey = _grey(x).mean()
    x = (x - mean_grey) * change.contrast + mean_grey
    grey = _grey(x)
    x = grey + (x - grey) * change.saturation
    if change.hue:
        x = torch.einsum("ij,j...->i...", hue_rotation(change.hue), x)
    return (x.clamp(0, 1) * 2 - 1).contiguous()
