"""Codebook usage, perplexity and bits per pixel against hand-computed values and brute force."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from magvit2.evaluation.codebook import (
    DENSE_VOCAB_LIMIT,
    CodebookStats,
    bits_per_pixel,
    codebook_usage,
    compressed_bits_per_pixel,
    perplexity,
    token_bits_per_pixel,
)


def test_hand_computed_usage_and_perplexity():
    ids = torch.tensor([[0, 0], [1, 2]])
    # p = (1/2, 1/4, 1/4): H = 1.5 bits, perplexity = 2 ** 1.5
    assert codebook_usage(ids, 8) == pytest.approx(3 / 8)
    assert perplexity(ids, 8) == pytest.approx(2**1.5, rel=1e-12)
    stats = CodebookStats(8)
    stats.update(ids)
    assert stats.entropy(base=2) == pytest.approx(1.5, rel=1e-12)
    assert stats.num_tokens == 4


def test_extremes_one_id_and_uniform():
    assert perplexity(torch.full((5, 7), 3), 16) == pytest.approx(1.0)
    assert codebook_usage(torch.full((5, 7), 3), 16) == pytest.approx(1 / 16)
    uniform = torch.arange(64).repeat(3)
    assert perplexity(uniform, 64) == pytest.approx(64.0, rel=1e-12)
    assert codebook_usage(uniform, 64) == 1.0


def _brute_force(ids: list[int], vocab: int) -> tuple[float, float]:
    counts = Counter(ids)
    n = len(ids)
    entropy = -sum(c / n * math.log(c / n) for c in counts.values())
    return len(counts) / vocab, math.exp(entropy)


@pytest.mark.parametrize("vocab", [2**10, DENSE_VOCAB_LIMIT, 2**20])
def test_streaming_matches_brute_force_dense_and_sparse(vocab):
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, min(vocab, 5000), (n,), generator=gen) for n in (100, 1, 2500, 37)]
    batches[1] = torch.tensor([vocab - 1])  # the largest id
    stats = CodebookStats(vocab)
    for b in batches:
        stats.update(b.view(-1, 1) if b.numel() % 2 else b)
    usage, ppl = _brute_force([int(v) for b in batches for v in b], vocab)
    assert stats.dense == (vocab <= DENSE_VOCAB_LIMIT)
    assert stats.usage() == pytest.approx(usage, rel=1e-12)
    assert stats.perplexity() == pytest.approx(ppl, rel=1e-9)
    assert stats.num_tokens == sum(b.numel() for b in batches)


def test_bits_per_pixel_hand_values():
    # 17 frames of 128x128 -> 5x16x16 tokens of an 18-bit (2^18) vocabulary
    expected = 5 * 16 * 16 * 18 / (17 * 128 * 128)
    assert bits_per_pixel(5 * 16 * 16, 2**18, 17, 128, 128) == pytest.approx(expected, rel=1e-12)
    assert token_bits_per_pixel((5, 16, 16), 2**18, (17, 128, 128)) == pytest.approx(expected, rel=1e-12)
    assert token_bits_per_pixel((16, 16), 2**18, (128, 128)) == pytest.approx(256 * 18 / 128**2)
    assert bits_per_pixel(10, 1000, 1, 10, 10) == pytest.approx(10 * math.log2(1000) / 100)
    assert compressed_bits_per_pixel(1000, 9, 144, 176) == pytest.approx(8000 / (9 * 144 * 176))


def test_errors():
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        CodebookStats(8).update(torch.tensor([0, 8]))
    with pytest.raises(ValueError, match="integer"):
        CodebookStats(8).update(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="no tokens"):
        CodebookStats(8).perplexity()
    with pytest.raises(ValueError, match="video_shape"):
        token_bits_per_pixel((4,), 16, (1, 2, 3, 4))
