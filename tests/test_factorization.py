"""Token factorization: split/join round trips and values against explicit bit arithmetic."""

from __future__ import annotations

import pytest
import torch

from magvit2.quantizers import LFQ
from magvit2.quantizers.factorization import join_tokens, split_tokens


@pytest.mark.parametrize("widths", [[9, 9], [6, 12], [1], [3, 5, 7], [31, 31], [1] * 18])
def test_round_trip(widths: list[int]) -> None:
    torch.manual_seed(0)
    total = sum(widths)
    ids = torch.randint(0, 1 << total, (3, 5, 7), dtype=torch.int64)
    ids[0, 0, 0], ids[0, 0, 1] = 0, (1 << total) - 1
    parts = split_tokens(ids, widths)
    assert len(parts) == len(widths)
    for p, w in zip(parts, widths, strict=True):
        assert p.shape == ids.shape and p.dtype == torch.int64
        assert int(p.min()) >= 0 and int(p.max()) < 1 << w
    assert torch.equal(join_tokens(parts, widths), ids)
    # parts -> ids -> parts
    again = split_tokens(join_tokens(parts, widths), widths)
    assert all(torch.equal(a, b) for a, b in zip(again, parts, strict=True))


def test_values_against_python_bit_arithmetic() -> None:
    torch.manual_seed(1)
    widths = [6, 12]
    ids = torch.randint(0, 1 << 18, (50,))
    pre, post = split_tokens(ids, widths)
    for i, pr, po in zip(ids.tolist(), pre.tolist(), post.tolist(), strict=True):
        assert pr == i % 64 and po == i // 64  # Open-MAGVIT2: id = pre + 64 * post
        bits = [(i >> k) & 1 for k in range(18)]  # bits[k] = bit of value 2^k
        assert pr == sum(b << k for k, b in enumerate(bits[:6]))
        assert po == sum(b << k for k, b in enumerate(bits[6:]))
    assert torch.equal(join_tokens([pre, post], widths), pre + 64 * post)


def test_lsb_lfq_parts_hold_first_channels() -> None:
    """With LFQ(bit_order='lsb'), part 0 of [6, 12] is the id of channels 0..5 alone."""
    torch.manual_seed(2)
    z = torch.randn(2, 18, 3, 3)
    ids = LFQ(18, bit_order="lsb").codes_to_indices(z)
    pre, post = split_tokens(ids, [6, 12])
    assert torch.equal(pre, LFQ(6, bit_order="lsb").codes_to_indices(z[:, :6]))
    assert torch.equal(post, LFQ(12, bit_order="lsb").codes_to_indices(z[:, 6:]))


def test_errors() -> None:
    with pytest.raises(ValueError, match="positive ints"):
        split_tokens(torch.zeros(3, dtype=torch.long), [6, 0])
    with pytest.raises(ValueError, match="<= 62"):
        split_tokens(torch.zeros(3, dtype=torch.long), [40, 40])
    with pytest.raises(ValueError, match="integer tensor"):
        split_tokens(torch.zeros(3), [6, 12])
    with pytest.raises(ValueError, match=r"\[0, 2\^18\)"):
        split_tokens(torch.tensor([1 << 18]), [6, 12])
    with pytest.raises(ValueError, match="2 parts for 3 widths"):
        join_tokens([torch.zeros(2, dtype=torch.long)] * 2, [1, 2, 3])
    with pytest.raises(ValueError, match=r"part 0 must lie in \[0, 2\^6\)"):
        join_tokens([torch.tensor([64]), torch.tensor([0])], [6, 12])
