"""VQ: nearest-code search, codes, losses, gradients, EMA update and round trips against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from magvit2.quantizers import QuantizerConfig, build_quantizer
from magvit2.quantizers.vq import VQ


def tokens(z: torch.Tensor) -> torch.Tensor:
    """(B, D, *spatial) -> (N, D) in the same order as the quantizer's ids.reshape(-1)."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def brute_force_ids(z: torch.Tensor, codebook: torch.Tensor, cosine: bool = False) -> torch.Tensor:
    """Independent float64 argmin over the whole codebook."""
    x, e = tokens(z).double(), codebook.double()
    if cosine:
        return (F.normalize(x, dim=1) @ F.normalize(e, dim=1).t()).argmax(1)
    return ((x[:, None, :] - e[None, :, :]) ** 2).sum(-1).argmin(1)


@pytest.mark.parametrize("spatial", [(7,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("cosine", [False, True])
def test_indices_are_brute_force_argmin_and_codes_are_codebook_rows(spatial, cosine):
    torch.manual_seed(0)
    q = VQ(6, 37, l2_normalize=cosine)
    z = torch.randn(2, 6, *spatial, dtype=torch.float64)
    out = q(z)
    assert out.indices.shape == (2, *spatial) and out.indices.dtype == torch.int64
    expected = brute_force_ids(z, q.codebook.detach(), cosine)
    assert torch.equal(out.indices.reshape(-1), expected)
    cb = q.codebook.detach().double()
    if cosine:
        cb = F.normalize(cb, dim=1)
    assert torch.equal(tokens(out.codes.detach()), cb[expected])
    # usage statistics from the id histogram
    counts = torch.bincount(expected, minlength=37).double()
    p = counts[counts > 0] / counts.sum()
    assert out.used_codes.item() == (counts > 0).sum().item()
    assert out.perplexity.item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-5)
    assert out.per_token_entropy is None and out.codebook_entropy is None


def test_float32_search_agrees_with_float64_brute_force():
    torch.manual_seed(1)
    q = VQ(8, 128)
    z = torch.randn(4, 8, 6, 6)
    out = q(z)
    assert torch.equal(out.indices.reshape(-1), brute_force_ids(z, q.codebook.detach()))


def test_chunked_search_equals_unchunked():
    torch.manual_seed(2)
    big = VQ(4, 50)
    small = VQ(4, 50, chunk_elements=7)  # 1 token per block
    small.load_state_dict(big.state_dict())
    z = torch.randn(3, 4, 5, 7)
    assert torch.equal(big(z).indices, small(z).indices)
    assert torch.equal(big.codes_to_indices(z), small.codes_to_indices(z))


def test_loss_value_and_gradients_match_formula():
    torch.manual_seed(3)
    cw, kw = 0.3, 0.7
    q = VQ(5, 11, commitment_weight=cw, codebook_weight=kw)
    z = torch.randn(2, 5, 4, 3, dtype=torch.float64, requires_grad=True)
    out = q(z)
    x = tokens(z.detach())
    ids = brute_force_ids(z.detach(), q.codebook.detach())
    e = q.codebook.detach().double()[ids]
    mse = ((x - e) ** 2).mean()
    assert out.commitment.item() == pytest.approx(mse.item(), rel=1e-12)
    assert out.loss.item() == pytest.approx((cw + kw) * mse.item(), rel=1e-12)

    out.loss.backward()
    numel = x.numel()
    # commitment term only reaches z: d/dz cw * mean((z - sg q)^2)
    assert torch.allclose(tokens(z.grad), cw * 2 * (x - e) / numel, atol=1e-12)
    # codebook term only reaches the codebook: d/de_k kw * mean((sg z - e_k)^2) summed over members
    expected = torch.zeros(11, 5, dtype=torch.float64).index_add_(0, ids, kw * 2 * (e - x) / numel)
    assert torch.allclose(q.codebook.grad.double(), expected, atol=1e-7)


def test_straight_through_gradient_to_z():
    torch.manual_seed(4)
    q = VQ(3, 9)
    z = torch.randn(2, 3, 4, requires_grad=True)
    out = q(z)
    g = torch.randn_like(z)
    (out.codes * g).sum().backward()
    assert torch.equal(z.grad, g)
    assert q.codebook.grad is None  # codes carry no gradient to the codebook


def test_ema_one_step_equals_hand_computation():
    torch.manual_seed(5)
    k, d, decay, eps, cw = 6, 3, 0.9, 1e-3, 0.4
    q = VQ(d, k, ema=True, decay=decay, eps=eps, commitment_weight=cw)
    assert "codebook" not in dict(q.named_parameters())
    old = q.codebook.clone()
    z = torch.randn(2, d, 10)
    x = tokens(z)
    ids = brute_force_ids(z, old)
    out = q.train()(z)
    assert torch.equal(out.indices.reshape(-1), ids)
    # codes come from the codebook before the update; loss is commitment only
    assert torch.equal(tokens(out.codes), old[ids])
    assert out.loss.item() == pytest.approx(cw * ((x - old[ids]) ** 2).mean().item(), rel=1e-6)
    size = torch.ones(k) * decay
    total = old.clone() * decay
    for n in range(x.shape[0]):
        size[ids[n]] += 1 - decay
        total[ids[n]] += (1 - decay) * x[n]
    smoothed = (size + eps) / (size.sum() + k * eps) * size.sum()
    assert torch.allclose(q.ema_cluster_size, size, atol=1e-6)
    assert torch.allclose(q.ema_embed_sum, total, atol=1e-6)
    assert torch.allclose(q.codebook, total / smoothed[:, None], atol=1e-6)
    # eval mode leaves the codebook alone
    frozen = q.codebook.clone()
    q.eval()(z)
    assert torch.equal(q.codebook, frozen)


def test_ema_moves_codes_to_cluster_means():
    torch.manual_seed(6)
    q = VQ(2, 2, ema=True, decay=0.5).train()
    with torch.no_grad():
        q.codebook.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        q.ema_embed_sum.copy_(q.codebook)
    left = torch.tensor([-3.0, 1.0]) + 0.1 * torch.randn(50, 2)
    right = torch.tensor([2.0, -1.0]) + 0.1 * torch.randn(50, 2)
    z = torch.cat([left, right]).t().reshape(1, 2, 100)
    for _ in range(40):
        q(z)
    assert torch.allclose(q.codebook[0], left.mean(0), atol=1e-3)
    assert torch.allclose(q.codebook[1], right.mean(0), atol=1e-3)


@pytest.mark.parametrize("cosine", [False, True])
def test_round_trips(cosine):
    torch.manual_seed(7)
    q = VQ(4, 20, l2_normalize=cosine).eval()
    z = torch.randn(2, 4, 3, 2)
    out = q(z)
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    assert torch.equal(q.codes_to_indices(out.codes), out.indices)
    assert torch.equal(q.codes_to_indices(z), out.indices)
    every = torch.arange(20).reshape(1, 20)
    assert torch.equal(q.codes_to_indices(q.indices_to_codes(every)), every)
    assert q.bits_per_token == pytest.approx(math.log2(20))


def test_bf16_autocast_and_bf16_input_search_in_float32():
    torch.manual_seed(8)
    q = VQ(8, 64)
    with torch.no_grad():  # far from the origin: a bf16 distance expansion would misorder the codes
        q.codebook.add_(10.0)
    z = torch.randn(2, 8, 8, 8) + 10.0
    ref = q(z)
    assert torch.equal(ref.indices.reshape(-1), brute_force_ids(z, q.codebook.detach()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = q(z)
    assert torch.equal(auto.indices, ref.indices)
    assert auto.codes.dtype == torch.float32 and auto.loss.dtype == torch.float32
    zb = z.bfloat16()
    low = q(zb)
    assert low.codes.dtype == torch.bfloat16
    assert torch.equal(low.indices.reshape(-1), brute_force_ids(zb.float(), q.codebook.detach()))
    assert torch.equal(low.codes, q.indices_to_codes(low.indices).bfloat16())


def test_bad_inputs_raise_value_error():
    q = VQ(4, 8)
    with pytest.raises(ValueError, match=r"\(B, 4, \*spatial\)"):
        q(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="floating-point"):
        q(torch.ones(2, 4, 5, dtype=torch.long))
    bad = torch.randn(2, 4, 5)
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        q(bad)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        q.indices_to_codes(torch.tensor([[8]]))
    with pytest.raises(ValueError, match="codebook_size"):
        VQ(4, 1)
    with pytest.raises(ValueError, match="decay"):
        VQ(4, 8, ema=True, decay=1.0)


def test_factory_builds_vq_with_options():
    q = build_quantizer(
        QuantizerConfig.from_dict(dict(kind="vq", dim=6, codebook_size=32, options={"ema": True}))
    )
    assert isinstance(q, VQ) and q.ema and q.codebook.shape == (32, 6) and q.dim == 6
