"""Token factorization: split large-vocabulary token ids into sub-tokens of fixed bit widths and back.

A language model over a ``2^18`` LFQ vocabulary often predicts each token as a few sub-tokens with
small vocabularies (Open-MAGVIT2's AR models use widths ``[6, 12]``: sub-vocabularies 64 and 4096).

Convention: the FIRST width takes the LOWEST bits. For widths ``w_0, w_1, ...`` with offsets
``o_i = w_0 + ... + w_(i-1)``::

    part_i = (id >> o_i) & (2^w_i - 1)          id = sum_i part_i << o_i   (= sum_i part_i * 2^o_i)

so for ``[6, 12]``: ``pre = id % 64``, ``post = id // 64`` and ``id = pre + 64 * post`` (Open-MAGVIT2).
Which latent channels a part holds depends on the quantizer's bit order: with ``LFQ(bit_order="lsb")``
part 0 holds channels ``0 .. w_0-1``; with the default ``"msb"`` it holds the LAST ``w_0`` channels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

MAX_TOTAL_BITS = 62


def _check_widths(widths: Sequence[int]) -> list[int]:
    """Validate bit widths: positive ints summing to at most 62 (ids are int64)."""
    widths = list(widths)
    if not widths or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"factorization widths must be a non-empty list of positive ints, got {widths!r}")
    if sum(widths) > MAX_TOTAL_BITS:
        raise ValueError(f"factorization widths must sum to <= {MAX_TOTAL_BITS} bits, got {sum(widths)}")
    return widths


def _check_ids(ids: Tensor, bits: int, what: str) -> None:
    """Raise a ValueError unless ``ids`` are integers in ``[0, 2^bits)``."""
    if not isinstance(ids, Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        got = ids.dtype if isinstance(ids, Tensor) else type(ids).__name__
        raise ValueError(f"factorization: {what} must be an integer tensor, got {got}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= 1 << bits):
        raise ValueError(
            f"factorization: {what} must lie in [0, 2^{bits}), got range [{int(ids.min())}, {int(ids.max())}]"
        )


def split_tokens(ids: Tensor, widths: Sequence[int]) -> list[Tensor]:
    """Split ids into sub-tokens, first width = lowest bits.

    Args:
        ids: integer ids of any shape, in ``[0, 2^sum(widths))``.
        widths: bits of each sub-token, e.g. ``[9, 9]`` or ``[6, 12]``.

    Returns:
        One int64 tensor per width, each of the shape of ``ids``, part ``i`` in ``[0, 2^widths[i])``.
    """
    widths = _check_widths(widths)
    _check_ids(ids, sum(widths), "ids")
    ids = ids.long()
    parts, offset = [], 0
    for w in widths:
        parts.append((ids >> offset) & ((1 << w) - 1))
        offset += w
    return parts


def join_tokens(parts: Sequence[Tensor], widths: Sequence[int]) -> Tensor:
    """Inverse of :func:`split_tokens`: ``id = sum_i parts[i] << (widths[0] + ... + widths[i-1])``.

    Args:
        parts: one integer tensor per width (same shapes), part ``i`` in ``[0, 2^widths[i])``.
        widths: bits of each sub-token.

    Returns:
        int64 ids of the parts' shape.
    """
    widths = _check_widths(widths)
    parts = list(parts)
    if len(parts) != len(widths):
        raise ValueError(f"join_tokens: got {len(parts)} parts for {len(widths)} widths {widths}")
    shapes = {tuple(p.shape) for p in parts if isinstance(p, Tensor)}
    if len(shapes) > 1:
        raise ValueError(f"join_tokens: all parts must have the same shape, got {sorted(shapes)}")
    ids, offset = None, 0
    for i, (part, w) in enumerate(zip(parts, widths, strict=True)):
        _check_ids(part, w, f"part {i}")
        term = part.long() << offset
        ids = term if ids is None else ids | term
        offset += w
    return ids
