"""CVQ: dead-code revival on a toy mixture, the re-seeding step by hand, anchors, distributed consistency."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp

from magvit2.quantizers import QuantizerConfig, build_quantizer
from magvit2.quantizers.cvq import CVQ
from magvit2.quantizers.vq import VQ


def tokens(z: torch.Tensor) -> torch.Tensor:
    """(B, D, *spatial) -> (N, D) in id order."""
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def mixture(centers: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` samples of a Gaussian mixture around ``centers (C, D)`` as a latent ``(1, D, n)``."""
    k = torch.randint(len(centers), (n,), generator=g)
    x = centers[k] + 0.05 * torch.randn(n, centers.shape[1], generator=g)
    return x.t().reshape(1, centers.shape[1], n)


def train_toy(quantizer: VQ, steps: int = 300) -> dict[str, float]:
    """Fit ``quantizer``'s codebook to a 16-cluster mixture (identity encoder); held-out statistics."""
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(16, 4, generator=g) * 2
    with torch.no_grad():  # all 64 codes start at one point far from the data
        quantizer.codebook.copy_(6.0 + 0.01 * torch.randn(64, 4, generator=g))
    opt = torch.optim.Adam(quantizer.parameters(), lr=0.05)
    quantizer.train()
    for _ in range(steps):
        out = quantizer(mixture(centers, 256, g))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    quantizer.eval()
    z = mixture(centers, 2048, g)
    out = quantizer(z)
    clusters_hit = len({int(i) for i in torch.cdist(quantizer.codebook.detach(), centers).argmin(1)})
    return {
        "used_codes": out.used_codes.item(),
        "sq_error": (out.codes - z).pow(2).sum(1).mean().item(),
        "perplexity": out.perplexity.item(),
        "clusters_with_a_code": clusters_hit,
    }


def test_cvq_revives_codes_that_plain_vq_leaves_dead():
    torch.manual_seed(0)
    vq = train_toy(VQ(4, 64))
    torch.manual_seed(0)
    cvq = train_toy(CVQ(4, 64))
    print(f"\nplain VQ: {vq}\nCVQ:      {cvq}")
    # Plain VQ: one code wins every token and drags to the data mean; the other 63 never move.
    assert vq["used_codes"] <= 2 and vq["sq_error"] > 5.0
    # CVQ: codes re-seeded onto the data; every cluster gets codes, error is the within-cluster noise
    # (4 channels x 0.05^2 = 0.01).
    assert cvq["used_codes"] >= 32 and cvq["clusters_with_a_code"] == 16
    assert cvq["sq_error"] < 0.02 and cvq["perplexity"] > 16


def test_one_training_step_equals_hand_computation():
    torch.manual_seed(1)
    k, decay, rate = 5, 0.9, 0.5
    q = CVQ(3, k, decay=decay, anchor="closest", revive_rate=rate, commitment_weight=0.3)
    with torch.no_grad():
        q.usage_ema.copy_(torch.tensor([0.0, 0.05, 0.5, 0.01, 0.2]))
    old = q.codebook.detach().clone()
    usage0 = q.usage_ema.clone()
    z = torch.randn(2, 3, 4, 3, requires_grad=True)
    x = tokens(z.detach())
    d = ((x[:, None] - old[None]) ** 2).sum(-1)  # (N, K)
    ids = d.argmin(1)
    out = q.train()(z)
    assert torch.equal(out.indices.reshape(-1), ids)
    assert torch.equal(tokens(out.codes.detach()), old[ids])  # codes from the pre-update codebook
    share = torch.bincount(ids, minlength=k).float() / ids.numel()
    usage = decay * usage0 + (1 - decay) * share
    assert torch.allclose(q.usage_ema, usage, atol=1e-7)
    alpha = torch.exp(-usage * k * rate / (1 - decay) - 1e-3)
    anchors = x[d.argmin(0)]  # closest token to each code
    alpha = alpha[:, None]
    assert torch.allclose(q.codebook.detach(), (1 - alpha) * old + alpha * anchors, atol=1e-6)
    # the loss still back-propagates after the in-place re-seeding; gradients use the old codes
    out.loss.backward()
    numel = x.numel()
    expected = torch.zeros(k, 3).index_add_(0, ids, 2 * (old[ids] - x) / numel)
    assert torch.allclose(q.codebook.grad, expected, atol=1e-6)
    # eval mode changes nothing
    q.eval()
    frozen, usage_frozen = q.codebook.detach().clone(), q.usage_ema.clone()
    q(z.detach())
    assert torch.equal(q.codebook.detach(), frozen) and torch.equal(q.usage_ema, usage_frozen)


def test_first_step_seeds_only_the_codes_the_batch_left_unused():
    """Usage starts at zero but is updated before alpha: the first batch's own codes stay put."""
    g = torch.Generator().manual_seed(0)
    q = CVQ(2, 8, anchor="random")
    with torch.no_grad():
        q.codebook.copy_(torch.cat([torch.eye(2), -torch.eye(2), torch.full((4, 2), 50.0)]))
    old = q.codebook.detach().clone()
    x = torch.cat([torch.eye(2), -torch.eye(2)]).repeat(8, 1) + 0.01 * torch.randn(32, 2, generator=g)
    out = q.train()(x.t().reshape(1, 2, 32))
    assert set(out.indices.unique().tolist()) == {0, 1, 2, 3}
    assert torch.allclose(q.codebook[:4].detach(), old[:4], atol=1e-6)  # used: alpha = exp(-20)
    moved = q.codebook[4:].detach()  # unused: alpha = exp(-1e-3), now (nearly) batch tokens
    assert (torch.cdist(moved, x).min(1).values < 0.1).all()


def test_cosine_cvq_trains_and_round_trips():
    torch.manual_seed(2)
    q = CVQ(4, 16, l2_normalize=True, anchor="probrandom")
    z = torch.randn(2, 4, 3, 3, 2, requires_grad=True)
    out = q.train()(z)
    out.loss.backward()  # l2-normalised lookup must survive the in-place codebook update
    assert z.grad is not None and q.codebook.grad is not None
    q.eval()
    out = q(z.detach())
    assert torch.allclose(tokens(out.codes).norm(dim=1), torch.ones(36), atol=1e-6)
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    assert torch.equal(q.codes_to_indices(out.codes), out.indices)


def test_closest_and_probrandom_anchors():
    torch.manual_seed(3)
    q = CVQ(2, 3, anchor="closest", chunk_elements=4)  # chunks of 1 token: exercises the running max
    x = torch.randn(10, 2)
    cb = torch.randn(3, 2)
    expected = x[torch.cdist(x, cb).argmin(0)]
    assert torch.equal(q.anchors(x, cb), expected)
    # probrandom draws token n for code k with probability softmax_n(-||x_n - e_k||^2)
    q = CVQ(1, 20000, anchor="probrandom", chunk_elements=2**16)
    x = torch.tensor([[0.0], [1.0], [2.0]])
    cb = torch.zeros(20000, 1)  # 20000 independent draws for the same code position
    drawn = q.anchors(x, cb)[:, 0]
    freq = torch.stack([(drawn == v).float().mean() for v in (0.0, 1.0, 2.0)])
    expected = torch.softmax(-torch.tensor([0.0, 1.0, 4.0]), 0)
    assert torch.allclose(freq, expected, atol=0.015)
    q = CVQ(2, 500, anchor="random")
    drawn = q.anchors(x.repeat(1, 2), torch.zeros(500, 2))
    assert set(drawn[:, 0].tolist()) == {0.0, 1.0, 2.0}


def test_revive_alpha_threshold():
    q = CVQ(2, 100, decay=0.99, revive_rate=10.0)
    with torch.no_grad():
        q.usage_ema.copy_(torch.tensor([0.0, 1e-3 / 100, 1 / 100] + [0.0] * 97))
    alpha = q.revive_alpha()
    assert alpha[0].item() == pytest.approx(math.exp(-1e-3))
    assert alpha[1].item() == pytest.approx(math.exp(-1 - 1e-3))
    assert alpha[2].item() < 1e-300


def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One rank: identical init, rank-specific data, one training step; saves its state."""
    url = f"file://{init_file}"
    torch.distributed.init_process_group("gloo", init_method=url, rank=rank, world_size=world)
    torch.manual_seed(0)
    q = CVQ(3, 8, anchor="closest", decay=0.9).train()
    z = torch.randn(1, 3, 20, generator=torch.Generator().manual_seed(100 + rank)) * (1 + rank)
    q(z)
    torch.save({"codebook": q.codebook.detach(), "usage": q.usage_ema}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_distributed_usage_all_reduced_and_codebook_from_rank0(tmp_path):
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(r0["codebook"], r1["codebook"]) and torch.equal(r0["usage"], r1["usage"])
    torch.manual_seed(0)
    q = CVQ(3, 8, anchor="closest", decay=0.9)
    old = q.codebook.detach().clone()
    xs = [
        tokens(torch.randn(1, 3, 20, generator=torch.Generator().manual_seed(100 + r)) * (1 + r))
        for r in range(2)
    ]
    ids = torch.cat([torch.cdist(x, old).argmin(1) for x in xs])
    usage = 0.1 * torch.bincount(ids, minlength=8).float() / 40  # share over both ranks' tokens
    assert torch.allclose(r0["usage"], usage, atol=1e-7)
    alpha = torch.exp(-usage * 8 * 10 / 0.1 - 1e-3)[:, None]
    anchors = xs[0][torch.cdist(xs[0], old).argmin(0)]  # anchors of rank 0
    assert torch.allclose(r0["codebook"], (1 - alpha) * old + alpha * anchors, atol=1e-6)


def test_bad_options_and_inputs():
    with pytest.raises(ValueError, match="anchor"):
        CVQ(4, 8, anchor="nearest")
    with pytest.raises(ValueError, match="revive_rate"):
        CVQ(4, 8, revive_rate=0)
    with pytest.raises(ValueError, match=r"\(B, 4, \*spatial\)"):
        CVQ(4, 8)(torch.randn(2, 5, 3))


def test_factory_builds_cvq_with_options():
    q = build_quantizer(
        QuantizerConfig.from_dict(dict(kind="cvq", dim=4, codebook_size=16, options={"anchor": "closest"}))
    )
    assert isinstance(q, CVQ) and q.anchor == "closest" and q.usage_ema.shape == (16,)
