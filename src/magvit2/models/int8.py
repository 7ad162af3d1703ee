"""8-bit storage of chosen weight tensors in a model file (half of float16's size, for those tensors).

A weight ``w`` of shape ``(out, ...)`` (a conv kernel or linear matrix) is stored as

    scale[o] = max |w[o]| / 127                     # one float32 per output channel
    q[o]     = round(w[o] / scale[o])  in [-127, 127]   (int8)

under its own name (``q``) and ``name + SCALE_SUFFIX`` (``scale``); loading multiplies them back.
Each stored value is within ``scale[o] / 2`` of the weight (0.4% of that channel's largest weight).
Biases, norm affines and buffers (1-D tensors) are left to the file's floating type: they are few
and small. The model still runs in floating point; only the file is smaller.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["SCALE_SUFFIX", "quantize_int8", "dequantize_int8"]

#: suffix of the per-output-channel scale stored beside an int8 weight
SCALE_SUFFIX = ".int8_scale"


def _selected(name: str, value: Tensor, prefixes: Sequence[str]) -> bool:
    """Whether ``name`` is a floating weight of at least 2 dims under one of ``prefixes``."""
    under = any(name.startswith(p.rstrip(".") + ".") for p in prefixes)
    return under and value.is_floating_point() and value.ndim >= 2


def quantize_int8(state: dict[str, Tensor], prefixes: Sequence[str]) -> dict[str, Tensor]:
    """``state`` with every weight (>= 2 dims) under ``prefixes`` (e.g. ``["more_feedback"]``)
    replaced by int8 values plus a float32 ``(out,)`` scale under ``name + SCALE_SUFFIX``.

    Raises:
        ValueError: if a prefix selects no weight (a typo would otherwise store nothing in 8 bits).
    """
    for prefix in prefixes:
        if not any(_selected(k, v, [prefix]) for k, v in state.items()):
            raise ValueError(f"int8: {prefix!r} selects no weight of 2 or more dimensions")
    out: dict[str, Tensor] = {}
    for name, value in state.items():
        if not _selected(name, value, prefixes):
            out[name] = value
            continue
        w = value.detach().float()
        scale = w.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny) / 127
        per_channel = scale.view(-1, *[1] * (w.ndim - 1))
        out[name] = torch.round(w / per_channel).clamp(-127, 127).to(torch.int8)
        out[name + SCALE_SUFFIX] = scale
    return out


def dequantize_int8(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Inverse of :func:`quantize_int8`: each int8 tensor with a scale becomes float32 ``q * scale``;
    a state without scales comes back as it is.

    Raises:
        ValueError: for a scale without its int8 tensor, or one of the wrong length.
    """
    out = {k: v for k, v in state.items() if not k.endswith(SCALE_SUFFIX)}
    for key, scale in state.items():
        if not key.endswith(SCALE_SUFFIX):
            continue
        name = key[: -len(SCALE_SUFFIX)]
        q = state.get(name)
        if q is None or q.dtype != torch.int8 or scale.ndim != 1 or scale.numel() != q.shape[0]:
            got = "missing" if q is None else f"{q.dtype} {tuple(q.shape)}"
            raise ValueError(
                f"int8: {key} ({tuple(scale.shape)}) expects an int8 tensor {name} with "
                f"{scale.numel()} output channels; got {got}"
            )
        out[name] = q.float() * scale.float().view(-1, *[1] * (q.ndim - 1))
    return out
