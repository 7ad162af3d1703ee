"""FSQ: grid membership, mixed-radix ids, bijectivity, vector-quantize-pytorch agreement, gradients."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from magvit2.quantizers import QuantizerConfig, build_quantizer
from magvit2.quantizers.fsq import FSQ

LEVEL_SETS = [[8, 5, 5, 5], [7, 6, 3], [4, 4], [3], [2, 5]]


def grid(level: int) -> torch.Tensor:
    """The normalised values one channel with ``level`` levels can take (paper's definition)."""
    half = level // 2
    return torch.arange(-half, level - half, dtype=torch.float64) / half


@pytest.mark.parametrize("levels", LEVEL_SETS)
@pytest.mark.parametrize("spatial", [(9,), (3, 4), (2, 3, 2)])
def test_codes_on_grid_and_ids_are_mixed_radix(levels, spatial):
    torch.manual_seed(0)
    q = FSQ(levels)
    z = torch.randn(3, len(levels), *spatial) * 3
    out = q(z)
    assert out.codes.shape == z.shape and out.indices.shape == (3, *spatial)
    codes = out.codes.detach().double()
    expected_ids = torch.zeros(out.indices.shape, dtype=torch.long)
    radix = 1
    for c, level in enumerate(levels):
        values = grid(level)
        dist = (codes[:, c, ..., None] - values).abs()
        assert dist.min(-1).values.max() < 1e-6, f"channel {c} off the grid"
        digit = dist.argmin(-1)
        # the code is the grid value nearest to the bounded latent (rounding in code space)
        half_l = (level - 1) * (1 + 1e-3) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        bounded = torch.tanh(z[:, c].double() + math.atanh(offset / half_l)) * half_l - offset
        assert torch.equal(digit, (bounded.round() + level // 2).long())
        expected_ids += digit * radix  # channel 0 = least significant digit
        radix *= level
    assert torch.equal(out.indices, expected_ids)
    assert q.codebook_size == math.prod(levels) and q.bits_per_token == pytest.approx(math.log2(radix))
    assert out.loss.item() == 0.0


@pytest.mark.parametrize("levels", LEVEL_SETS)
def test_every_id_round_trips(levels):
    q = FSQ(levels)
    ids = torch.arange(q.codebook_size).reshape(1, -1)
    codes = q.indices_to_codes(ids)
    # all codes distinct and each is a product-grid point
    points = set(map(tuple, codes[0].t().tolist()))
    assert len(points) == q.codebook_size
    assert points == {tuple(p) for p in itertools.product(*[grid(v).float().tolist() for v in levels])}
    assert torch.equal(q.codes_to_indices(codes), ids)
    half = torch.tensor([v // 2 for v in levels]).reshape(1, -1, 1)
    assert torch.equal(q.level_indices(ids), (codes * half + half).round().long())


def test_forward_codes_to_indices_consistent_and_snaps_off_grid():
    torch.manual_seed(1)
    q = FSQ([8, 5, 3])
    z = torch.randn(2, 3, 5, 5) * 2
    out = q(z)
    assert torch.equal(q.codes_to_indices(out.codes), out.indices)
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    nudged = out.codes + 0.2 / torch.tensor([4.0, 2.0, 1.0]).reshape(1, 3, 1, 1) * (torch.rand_like(z) - 0.5)
    assert torch.equal(q.codes_to_indices(nudged), out.indices)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 6, 3], [4, 4, 3]])
def test_matches_vector_quantize_pytorch(levels):
    vqp = pytest.importorskip("vector_quantize_pytorch")
    torch.manual_seed(2)
    ours = FSQ(levels)
    ref = vqp.FSQ(levels, channel_first=True)
    z = torch.randn(4, len(levels), 6, 5) * 2
    out = ours(z)
    ref_codes, ref_ids = ref(z)
    assert torch.equal(out.indices, ref_ids.long())
    assert torch.equal(out.codes, ref_codes)
    ids = torch.arange(ours.codebook_size).reshape(1, -1)
    assert torch.equal(ours.indices_to_codes(ids), ref.indices_to_codes(ids))


@pytest.mark.parametrize("levels", [[8, 5], [7, 4]])
def test_straight_through_gradient_is_bound_derivative(levels):
    torch.manual_seed(3)
    q = FSQ(levels)
    z = torch.randn(2, 2, 7, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(z)
    (q(z).codes * g).sum().backward()
    expected = torch.empty_like(z)
    for c, level in enumerate(levels):
        half_l = (level - 1) * (1 + 1e-3) / 2
        offset = 0.5 if level % 2 == 0 else 0.0
        t = torch.tanh(z[:, c].detach() + math.atanh(offset / half_l))
        expected[:, c] = g[:, c] * (1 - t**2) * half_l / (level // 2)
    assert torch.allclose(z.grad, expected, atol=1e-12)


def test_bf16_autocast_and_bf16_input():
    torch.manual_seed(4)
    q = FSQ([8, 6, 5])
    z = torch.randn(2, 3, 4, 4)
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = q(z)
    assert torch.equal(auto.indices, ref.indices) and auto.codes.dtype == torch.float32
    low = q(z.bfloat16())
    assert low.codes.dtype == torch.bfloat16
    assert torch.equal(low.indices, q(z.bfloat16().float()).indices)
    assert torch.equal(q.codes_to_indices(low.codes), low.indices)


def test_bad_inputs_and_levels():
    q = FSQ([5, 5])
    with pytest.raises(ValueError, match=r"\(B, 2, \*spatial\)"):
        q(torch.randn(1, 3, 4))
    with pytest.raises(ValueError, match="floating-point"):
        q(torch.zeros(1, 2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="NaN or Inf"):
        q(torch.tensor([[[float("inf")], [0.0]]]))
    with pytest.raises(ValueError, match=r"\[0, 25\)"):
        q.indices_to_codes(torch.tensor([[-1]]))
    for bad in ([], [1, 4], [4.0, 4], "88"):
        with pytest.raises(ValueError, match="levels"):
            FSQ(bad)


def test_eps_keeps_extreme_inputs_on_the_grid():
    """Every eps FSQ accepts rounds even saturated inputs to one of the L levels; past 1 / (L - 1) the
    bound would round to a code off the grid (ids outside the vocabulary), so such eps are refused."""
    z = torch.tensor([[[-50.0, -3.0, 0.0, 3.0, 50.0]]])  # (B=1, D=1, 5)
    for levels, eps in (([5], 0.249), ([4], 0.33), ([2], 1e-3), ([8, 3], 0.14)):
        q = FSQ(levels, eps=eps)
        out = q(z.expand(1, len(levels), 5).contiguous())
        assert 0 <= out.indices.min() and out.indices.max() < q.codebook_size
        assert torch.equal(q.indices_to_codes(out.indices), out.codes)
        top = [(L // 2 - (1 - L % 2)) / (L // 2) for L in levels]  # the grid's ends: -1 and 1 (odd L)
        assert out.codes[0, :, 0].tolist() == [-1.0] * len(levels)  # or 1 - 2 / L (even L)
        assert out.codes[0, :, -1].tolist() == top
    for levels, eps in (([5], 0.25), ([5], 0.3), ([8, 3], 1 / 7), ([2], 0.0), ([5], -0.1)):
        with pytest.raises(ValueError, match="eps must lie in"):
            FSQ(levels, eps=eps)


def test_factory_builds_fsq():
    q = build_quantizer(QuantizerConfig.from_dict(dict(kind="fsq", levels=[8, 8, 8, 5, 5, 5])))
    assert isinstance(q, FSQ) and q.codebook_size == 64000 and q.dim == 6
