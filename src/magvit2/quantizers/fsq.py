"""Finite scalar quantization (FSQ; Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Channel ``i`` of the latent is squashed by a shifted ``tanh`` so that rounding yields exactly
``levels[i]`` integer values, rounded with a straight-through gradient and divided by
``levels[i] // 2``. Codes therefore lie in ``[-1, 1]``: for an odd level ``L`` they are
``{-1, ..., 1}`` in steps of ``2 / (L - 1)``; for an even level the grid is ``{-1, ..., 1 - 2 / L}``
(``L // 2`` values below zero, ``L // 2 - 1`` above; the paper's asymmetric bound).

Token id: the mixed-radix number of the level indices ``d_i = code_i * (L_i // 2) + L_i // 2`` in
``[0, L_i)``, with channel 0 the least significant digit:
``id = d_0 + L_0 * (d_1 + L_1 * (d_2 + ...))``. This equals vector-quantize-pytorch's ``FSQ`` ids.

FSQ has no auxiliary loss: ``loss`` is a zero scalar; ``commitment`` reports, for information only,
the mean squared rounding error in code space (bounded latent vs. its grid value).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from magvit2.quantizers.base import Quantizer, QuantizerOutput


class FSQ(Quantizer):
    """Finite scalar quantizer; vocabulary ``prod(levels)``, latent channels ``len(levels)``.

    Args:
        levels: number of quantization levels of each channel (ints >= 2; the paper recommends
            e.g. ``[8, 8, 8, 5, 5, 5]`` for a 64k vocabulary). A level of 2 is accepted but barely
            trains: its bound is ``tanh(z + atanh(1 / (1 + eps))) - 0.5``, so almost every input rounds
            to the upper code and (for z ~ N(0, 1)) its gradient is about 1/70 of a 4-level channel's;
            use 3 or more.
        eps: the bound's margin: ``tanh`` is scaled by ``(L - 1)(1 + eps) / 2`` so that the
            extreme values are reached; ``0 <= eps < 1 / (max(levels) - 1)`` (larger values round
            off the grid), and ``eps > 0`` when a level is 2.

    Shapes: ``forward(z (B, len(levels), *spatial))`` -> codes like ``z``, ids ``(B, *spatial)``.
    """

    def __init__(self, levels: Sequence[int], *, eps: float = 1e-3) -> None:
        super().__init__()
        levels = list(levels)
        if not levels or any(not isinstance(v, int) or isinstance(v, bool) or v < 2 for v in levels):
            raise ValueError(f"FSQ: levels must be a non-empty list of ints >= 2, got {levels!r}")
        # The bound reaches (L - 1)(1 + eps) / 2: past eps = 1 / (L - 1) it rounds to a value off the
        # grid; at eps = 0 a level of 2 has no room left (atanh(1)).
        top = 1 / (max(levels) - 1)
        if not 0 <= eps < top or (eps == 0 and 2 in levels):
            raise ValueError(
                f"FSQ: eps must lie in [0, {top:.4g}) for levels {levels} (1 / (max level - 1); above "
                f"0 when a level is 2), got {eps!r}"
            )
        self.levels = levels
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.eps = float(eps)
        # Integer buffers: ``module.to(dtype)`` leaves them exact.
        basis = [math.prod(levels[:i]) for i in range(len(levels))]
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.long), persistent=False)
        self.register_buffer("_half_width", torch.tensor(levels, dtype=torch.long) // 2, persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), persistent=False)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, codebook_size={self.codebook_size}"

    def _per_channel(self, t: Tensor, ndim: int, dtype: torch.dtype) -> Tensor:
        """A ``(D,)`` buffer shaped ``(1, D, 1, ...)`` to broadcast against ``(B, D, *spatial)``."""
        return t.to(dtype).reshape(1, -1, *([1] * (ndim - 2)))

    def bound(self, z: Tensor) -> Tensor:
        """``z (B, D, ...)`` -> bounded values whose rounding gives ``L`` integers ``-(L // 2) ...``."""
        levels = self._per_channel(self._levels, z.ndim, z.dtype)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z (B, len(levels), *spatial)``; see :class:`QuantizerOutput`."""
        self.check_input(z)
        dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=z.device.type, enabled=False):
            bounded = self.bound(z.to(dtype))
            half_width = self._per_channel(self._half_width, z.ndim, dtype)
            rounded = bounded.round()
            # Straight-through rounding: value = round(b), gradient = d b / d z.
            codes = (bounded + (rounded - bounded).detach()) / half_width
            commitment = ((bounded - rounded) / half_width).pow(2).mean().detach()
            indices = self._digits_to_indices(rounded.detach() + half_width)
        used, ppl = self.usage(indices)
        loss = z.new_zeros((), dtype=torch.float32)
        return QuantizerOutput(codes.to(z.dtype), indices, loss, commitment.float(), used, ppl)

    def _digits_to_indices(self, digits: Tensor) -> Tensor:
        """Level indices ``(B, D, ...)`` (float holding ints) -> ids ``(B, ...)``."""
        basis = self._per_channel(self._basis, digits.ndim, torch.long)
        return (digits.round().long() * basis).sum(1)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codes ``(B, D, *spatial)`` in code space ``[-1, 1]`` -> ids; off-grid values snap to the
        nearest grid value (so ``codes_to_indices(forward(z).codes) == forward(z).indices``)."""
        self.check_input(codes)
        with torch.no_grad():
            x = codes.double()
            half_width = self._per_channel(self._half_width, x.ndim, x.dtype)
            top = self._per_channel(self._levels - 1, x.ndim, x.dtype)
            digits = torch.minimum((x * half_width + half_width).round().clamp_min(0), top)
            return self._digits_to_indices(digits)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Ids ``(B, *spatial)`` -> codes ``(B, D, *spatial)`` (float32, on the grid)."""
        self.check_indices(indices)
        idx = indices.long().unsqueeze(1)
        basis = self._per_channel(self._basis, idx.ndim, torch.long)
        levels = self._per_channel(self._levels, idx.ndim, torch.long)
        half_width = self._per_channel(self._half_width, idx.ndim, torch.float32)
        digits = (idx // basis) % levels
        return (digits.float() - half_width) / half_width

    def level_indices(self, indices: Tensor) -> Tensor:
        """Ids ``(B, *spatial)`` -> per-channel level indices ``(B, D, *spatial)`` in ``[0, L_i)``."""
        self.check_indices(indices)
        idx = indices.long().unsqueeze(1)
        basis = self._per_channel(self._basis, idx.ndim, torch.long)
        return (idx // basis) % self._per_channel(self._levels, idx.ndim, torch.long)
