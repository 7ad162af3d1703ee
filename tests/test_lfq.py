"""LFQ: entropies against a brute-force float64 computation over all codes, gradients, ids, DDP, errors."""

from __future__ import annotations

import importlib.util
import itertools
import math
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from magvit2.quantizers import LFQ, QuantizerConfig, build_quantizer

# ----------------------------------------------------------------------------------------------------
# brute force: every code, float64, nothing factorised


def all_codes(bits: int) -> torch.Tensor:
    """``(2^bits, bits)`` float64 codes in msb id order (row j = code of id j)."""
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=bits)), dtype=torch.float64)


def brute_entropies(z: torch.Tensor, temperature: float, clamp: float | None = None):
    """(per-token, codebook) entropy; ``clamp`` mimics vector-quantize-pytorch's ``log(max(p, clamp))``."""
    bits = z.shape[1]
    x = z.movedim(1, -1).reshape(-1, bits).double()
    logits = -((x[:, None, :] - all_codes(bits)[None]) ** 2).sum(-1) / temperature
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    if clamp is not None:
        logp = p.clamp_min(clamp).log()
    per_token = -(p * logp).sum(-1).mean()
    mean = p.mean(0)
    log_mean = mean.clamp_min(clamp).log() if clamp is not None else mean.log()
    codebook = -torch.where(mean > 0, mean * log_mean, torch.zeros_like(mean)).sum()
    return per_token, codebook


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs() / b.abs().clamp_min(1e-300))


# ----------------------------------------------------------------------------------------------------
# entropies


@pytest.mark.parametrize("bits", range(1, 13))
def test_entropies_equal_brute_force(bits: int) -> None:
    torch.manual_seed(bits)
    spatial_shapes = [(5,), (2, 3), (2, 2, 3)]  # 1-D, 2-D, 3-D
    for temperature in (0.01, 0.1, 1.0):
        for scale in (temperature, 0.5):  # soft and confident tokens
            shape = spatial_shapes[(bits + int(1 / temperature)) % 3]
            z = torch.randn(2, bits, *shape, dtype=torch.float64) * scale
            out = LFQ(bits, temperature=temperature)(z)
            per_token, codebook = brute_entropies(z, temperature)
            assert rel(out.per_token_entropy, per_token) < 1e-6, (bits, temperature, scale)
            assert rel(out.codebook_entropy, codebook) < 1e-6, (bits, temperature, scale)


def test_float32_close_to_brute_force() -> None:
    torch.manual_seed(0)
    z = torch.randn(3, 10, 4, 4) * 0.02
    out = LFQ(10)(z)
    per_token, codebook = brute_entropies(z.double(), 0.01)
    assert out.codebook_entropy.dtype == torch.float32
    assert rel(out.per_token_entropy, per_token) < 1e-5
    assert rel(out.codebook_entropy, codebook) < 1e-5


def test_token_chunking_matches_unchunked() -> None:
    torch.manual_seed(0)
    z = (torch.randn(2, 7, 4, 5, dtype=torch.float64) * 0.02).requires_grad_()
    grads, values = [], []
    for chunk in (8192, 7):  # 40 tokens: one chunk vs six checkpointed chunks
        out = LFQ(7, token_chunk=chunk)(z)
        values.append(torch.stack([out.per_token_entropy, out.codebook_entropy]).detach())
        grads.append(torch.autograd.grad(out.loss, z)[0])
    torch.testing.assert_close(values[1], values[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-14)


def test_loss_is_the_weighted_combination_and_weight_can_be_annealed() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 6, 3, 3, dtype=torch.float64) * 0.05
    lfq = LFQ(6, entropy_weight=0.3, codebook_entropy_weight=0.7, commitment_weight=0.11)
    out = lfq(z)
    q = torch.where(z > 0, 1.0, -1.0).double()
    commitment = ((z - q) ** 2).mean()
    per_token, codebook = brute_entropies(z, 0.01)
    assert rel(out.commitment, commitment) < 1e-12
    expected = 0.3 * (per_token - 0.7 * codebook) + 0.11 * commitment
    assert rel(out.loss, expected) < 1e-6
    exact_combo = 0.3 * (out.per_token_entropy - 0.7 * out.codebook_entropy) + 0.11 * out.commitment
    assert float(out.loss) == float(exact_combo)
    # annealing: attribute and per-call override
    lfq.entropy_weight = 0.05
    annealed = 0.05 * (out.per_token_entropy - 0.7 * out.codebook_entropy) + 0.11 * out.commitment
    assert rel(lfq(z).loss, annealed) < 1e-12
    override = 2.0 * (out.per_token_entropy - 0.7 * out.codebook_entropy) + 0.11 * out.commitment
    assert rel(lfq(z, entropy_weight=2.0).loss, override) < 1e-12


def test_usage_statistics() -> None:
    torch.manual_seed(0)
    z = torch.randn(4, 3, 5, 5)
    out = LFQ(3)(z)
    ids = out.indices.reshape(-1).tolist()
    counts = [ids.count(i) for i in set(ids)]
    assert int(out.used_codes) == len(counts)
    h = -sum(c / len(ids) * math.log(c / len(ids)) for c in counts)
    assert abs(float(out.perplexity) - math.exp(h)) < 1e-4


# ----------------------------------------------------------------------------------------------------
# gradients


def test_straight_through_gradient_is_identity() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 5, 3, 4, requires_grad=True)
    out = LFQ(5, entropy_weight=0.0, commitment_weight=0.0)(z)
    assert torch.equal(out.codes.detach(), torch.where(z > 0, 1.0, -1.0))
    upstream = torch.randn_like(z)
    ((out.codes * upstream).sum() + out.loss).backward()
    assert torch.equal(z.grad, upstream)


@pytest.mark.parametrize("bits", [1, 3, 6])
def test_entropy_gradients_match_brute_force(bits: int) -> None:
    torch.manual_seed(bits)
    for temperature in (0.01, 1.0):
        z = (torch.randn(2, bits, 3, 2, dtype=torch.float64) * temperature * 2).requires_grad_()
        out = LFQ(bits, temperature=temperature)(z)
        per_token, codebook = brute_entropies(z, temperature)
        for ours, ref in ((out.codebook_entropy, codebook), (out.per_token_entropy, per_token)):
            g_ours = torch.autograd.grad(ours, z, retain_graph=True)[0]
            g_ref = torch.autograd.grad(ref, z, retain_graph=True)[0]
            torch.testing.assert_close(g_ours, g_ref, rtol=1e-6, atol=1e-9 * g_ref.abs().max())


def test_confident_tokens_give_finite_gradients() -> None:
    """Codes of probability 0 (underflow at T=0.01, |z| ~ 3) must not produce NaN gradients."""
    z = (torch.randn(2, 12, 4, 4) * 3).requires_grad_()
    out = LFQ(12)(z)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()


# ----------------------------------------------------------------------------------------------------
# ids


@pytest.mark.parametrize("bits", [1, 18, 40, 62])
def test_index_round_trips(bits: int) -> None:
    torch.manual_seed(bits)
    lfq = LFQ(bits, codebook_entropy="grouped") if bits > 30 else LFQ(bits)
    ids = torch.randint(0, 2**bits, (2, 3, 4), dtype=torch.int64)
    ids[0, 0, 0], ids[0, 0, 1] = 0, 2**bits - 1
    codes = lfq.indices_to_codes(ids)
    assert codes.shape == (2, bits, 3, 4)
    assert torch.equal(lfq.codes_to_indices(codes), ids)
    # explicit bit arithmetic: channel k carries the bit of value 2^(bits-1-k)
    for i, code in zip(
        ids.reshape(-1).tolist(), codes.movedim(1, -1).reshape(-1, bits).tolist(), strict=True
    ):
        assert code == [1.0 if (i >> (bits - 1 - k)) & 1 else -1.0 for k in range(bits)]
    z = torch.randn(2, bits, 3, 4)
    assert torch.equal(lfq.indices_to_codes(lfq.codes_to_indices(z)), torch.where(z > 0, 1.0, -1.0))


def test_msb_and_lsb_orders() -> None:
    torch.manual_seed(0)
    z = torch.randn(3, 9, 4, 4)
    msb, lsb = LFQ(9), LFQ(9, bit_order="lsb")
    ids_lsb = lsb(z).indices
    expected = sum((z[:, k] > 0).long() * 2**k for k in range(9))
    assert torch.equal(ids_lsb, expected)
    assert torch.equal(ids_lsb, msb(z.flip(1)).indices)
    assert torch.equal(lsb.indices_to_codes(ids_lsb), msb.indices_to_codes(ids_lsb).flip(1))
    assert torch.equal(lsb.codes_to_indices(lsb.indices_to_codes(ids_lsb)), ids_lsb)


def test_bf16_autocast_gives_fp32_results() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 10, 6, 6) * 0.02
    lfq = LFQ(10)
    ref = lfq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lfq(z)
        bf = lfq(z.bfloat16())
    assert torch.equal(out.indices, ref.indices)
    assert out.codebook_entropy.dtype == torch.float32
    torch.testing.assert_close(out.codebook_entropy, ref.codebook_entropy, rtol=1e-6, atol=0)
    torch.testing.assert_close(out.per_token_entropy, ref.per_token_entropy, rtol=1e-6, atol=0)
    assert bf.codes.dtype == torch.bfloat16
    assert torch.equal(bf.indices, lfq(z.bfloat16().float()).indices)


# ----------------------------------------------------------------------------------------------------
# grouped codebook entropy


def test_grouped_with_one_group_equals_exact() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 8, 3, 3, dtype=torch.float64) * 0.02
    exact = LFQ(8)(z)
    grouped = LFQ(8, codebook_entropy="grouped", num_groups=1)(z)
    assert float(grouped.codebook_entropy) == pytest.approx(float(exact.codebook_entropy), rel=1e-12)
    assert float(grouped.loss) == pytest.approx(float(exact.loss), rel=1e-12)


def test_grouped_is_sum_of_group_entropies() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 10, 3, 3, dtype=torch.float64) * 0.02
    for kwargs, sizes in (({"group_bits": 4}, [4, 4, 2]), ({"num_groups": 3}, [4, 3, 3])):
        lfq = LFQ(10, codebook_entropy="grouped", **kwargs)
        assert lfq.groups == sizes
        out = lfq(z)
        starts = [0, *itertools.accumulate(sizes)]
        expected = sum(brute_entropies(z[:, a:b], 0.01)[1] for a, b in itertools.pairwise(starts))
        assert rel(out.codebook_entropy, expected) < 1e-6
        assert float(out.codebook_entropy) >= float(LFQ(10)(z).codebook_entropy)  # subadditivity
        assert rel(out.per_token_entropy, brute_entropies(z, 0.01)[0]) < 1e-6


def test_grouped_large_vocabulary_runs() -> None:
    torch.manual_seed(0)
    z = torch.randn(1, 48, 2, 2, requires_grad=True)
    out = LFQ(48, codebook_entropy="grouped", group_bits=16)(z)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()
    assert int(out.indices.max()) < 2**48
    # entropy of a mixture of 4 tokens <= their mean entropy + ln 4, per group
    assert out.codebook_entropy.item() <= out.per_token_entropy.item() + 3 * math.log(4) + 1e-4


# ----------------------------------------------------------------------------------------------------
# errors


def test_errors() -> None:
    lfq = LFQ(4)
    with pytest.raises(ValueError, match=r"\(B, 4, \*spatial\)"):
        lfq(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="floating-point"):
        lfq(torch.ones(2, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        lfq(torch.full((2, 4, 3), float("nan")))
    with pytest.raises(ValueError, match="grouped"):
        LFQ(31)
    with pytest.raises(ValueError, match=r"\[1, 62\]"):
        LFQ(63, codebook_entropy="grouped")
    with pytest.raises(ValueError, match="temperature"):
        LFQ(4, temperature=0.0)
    with pytest.raises(ValueError, match="bit_order"):
        LFQ(4, bit_order="big")
    with pytest.raises(ValueError, match="not both"):
        LFQ(8, codebook_entropy="grouped", num_groups=2, group_bits=4)
    with pytest.raises(ValueError, match="num_groups >= 2"):
        LFQ(40, codebook_entropy="grouped", num_groups=1)
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        lfq.indices_to_codes(torch.tensor([16]))
    with pytest.raises(ValueError, match="distributed=True"):
        LFQ(4, distributed=True)(torch.randn(1, 4, 2))


def test_factory_builds_lfq() -> None:
    lfq = build_quantizer(
        QuantizerConfig.from_dict(dict(kind="lfq", bits=6, options={"temperature": 0.1, "bit_order": "lsb"}))
    )
    assert isinstance(lfq, LFQ) and lfq.temperature == 0.1 and lfq.bit_order == "lsb"


# ----------------------------------------------------------------------------------------------------
# against vector-quantize-pytorch


@pytest.mark.skipif(importlib.util.find_spec("vector_quantize_pytorch") is None, reason="needs vq-pytorch")
@pytest.mark.parametrize("bits,temperature,scale", [(4, 0.01, 0.01), (10, 0.1, 0.1), (12, 0.01, 0.02)])
def test_matches_vector_quantize_pytorch(bits: int, temperature: float, scale: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vector_quantize_pytorch import LFQ as PeerLFQ

    torch.manual_seed(bits)
    z = torch.randn(2, bits, 4, 4) * scale
    peer = PeerLFQ(dim=bits, codebook_size=2**bits, entropy_loss_weight=0.1, commitment_loss_weight=0.25,
                   diversity_gamma=1.0, channel_first=True)  # fmt: skip
    (codes, ids, loss), (per_token, codebook, commitment) = peer(
        z, inv_temperature=1 / temperature, return_loss_breakdown=True
    )
    out = LFQ(bits, temperature=temperature)(z)
    assert torch.equal(ids.long(), out.indices)
    assert torch.equal(codes, out.codes)
    assert rel(commitment, out.commitment) < 1e-6
    # the peer clamps p at 1e-5 inside its log: close to ours, exactly equal to a clamped brute force
    assert rel(per_token, out.per_token_entropy) < 1e-2
    assert rel(codebook, out.codebook_entropy) < 1e-2
    assert rel(loss, out.loss) < 1e-2
    clamped = brute_entropies(z.double(), temperature, clamp=1e-5)
    assert rel(per_token, clamped[0]) < 1e-5 and rel(codebook, clamped[1]) < 1e-5


# ----------------------------------------------------------------------------------------------------
# DDP: two gloo processes on CPU


def _ddp_worker(rank: int, world: int, init_file: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        weight = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)  # a shared "encoder"
        x = torch.randn(4, 3, 2, 3, dtype=torch.float64)
        z = torch.einsum("kc,bchw->bkhw", weight, x[2 * rank : 2 * rank + 2]) * 0.02
        out = LFQ(5)(z)
        out.codebook_entropy.backward()
        grad = weight.grad.clone()
        dist.all_reduce(grad)  # what DDP does: average the gradients
        torch.save({"codebook": out.codebook_entropy.detach(), "grad": grad / world}, f"{results}{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_codebook_entropy_uses_all_ranks(tmp_path) -> None:
    results = str(tmp_path / "rank")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), results), nprocs=2, join=True)
    torch.manual_seed(0)
    weight = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(4, 3, 2, 3, dtype=torch.float64)
    z = torch.einsum("kc,bchw->bkhw", weight, x) * 0.02
    single = LFQ(5)(z).codebook_entropy
    single.backward()
    assert rel(single, brute_entropies(z.detach(), 0.01)[1]) < 1e-6
    for rank in range(2):
        got = torch.load(f"{results}{rank}.pt")
        assert rel(got["codebook"], single) < 1e-12
        torch.testing.assert_close(got["grad"], weight.grad, rtol=1e-9, atol=1e-12)
