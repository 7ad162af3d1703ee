"""The video LM's network and sampling (:mod:`magvit2.lm`): factorised sub-token distribution, KV
cache, overfitting and greedy reproduction, sampling filters and guidance, sliding windows."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from magvit2.lm import KVCache, LMConfig, SamplingOptions, VideoLM, sample, sample_long
from magvit2.lm.config import LMDataSection, default_split
from magvit2.lm.positions import sequence_positions
from magvit2.lm.sampling import draw, filter_logits
from magvit2.lm.trainer import frame_weights
from magvit2.lm.vocab import TokenHead

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> VideoLM:
    torch.manual_seed(0)
    args = dict(vocabulary=64, height=2, width=2, max_frames=3, split_tokens=[3, 3], dim=32, depth=2, heads=2)
    return VideoLM(LMConfig(**(args | kw))).eval()


# ---------------------------------------------------------------------------------------------- heads


def test_factorised_distribution_sums_to_one_and_scores_whole_ids():
    torch.manual_seed(0)
    head = TokenHead(16, 64, [2, 4])
    with torch.no_grad():  # move the conditioning tables off their small initial values
        for tables in head.cond:
            for t in tables:
                t.weight.normal_()
    h = torch.randn(5, 16)
    full = head.full_log_probs(h)
    torch.testing.assert_close(full.exp().sum(-1), torch.ones(5), atol=1e-5, rtol=0)
    ids = torch.randint(0, 64, (5,))
    torch.testing.assert_close(head.log_prob(h, ids), full.gather(1, ids[:, None])[:, 0])
    # the second sub-token's distribution depends on the first
    a, b = (
        head.part_logits(h, [torch.zeros(5, dtype=torch.long)], 1),
        head.part_logits(h, [torch.ones(5, dtype=torch.long)], 1),
    )
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("split", [None, [6]])
def test_one_part_head_is_the_full_softmax(split):
    torch.manual_seed(0)
    head = TokenHead(16, 64, split)
    h = torch.randn(4, 16)
    logits = head.part_logits(h, [], 0)
    assert logits.shape == (4, 64)
    torch.testing.assert_close(head.full_log_probs(h), torch.log_softmax(logits, -1))


def test_default_split_and_config_errors():
    assert default_split(2**18) == [9, 9] and default_split(2**16) is None and default_split(2**17) == [9, 8]
    with pytest.raises(ValueError, match="split_tokens"):
        LMConfig(vocabulary=2**18, height=1, width=1, max_frames=1, split_tokens=[6, 6]).complete()
    with pytest.raises(ValueError, match="positions"):
        LMConfig(positions="sinusoidal")


# ---------------------------------------------------------------------------------------------- cache


@pytest.mark.parametrize("positions", ["rope", "axial"])
def test_kv_cache_gives_the_logits_of_full_recomputation(positions):
    model = tiny(positions=positions, num_classes=3)
    ids = torch.randint(0, 64, (2, 3, 2, 2))
    classes = torch.tensor([0, 2])
    full = model.sequence_hidden(ids, classes)
    flat = rearrange(ids, "b t h w -> b (t h w)")
    pos = sequence_positions(3, 2, 2)
    cache = KVCache.empty(2, 12)
    x = torch.cat([model.start_slot(2, classes), model.embed(flat[:, :4])], dim=1)
    steps = [model.hidden(x, pos[:5], cache)]  # a prompt of one latent frame at once
    for k in range(4, 11):  # then one token at a time
        steps.append(model.hidden(model.embed(flat[:, k : k + 1]), pos[k + 1 : k + 2], cache))
    cached = torch.cat(steps, dim=1)
    assert cache.length == 12
    for i, prev_parts in ((0, []), (1, [model.head.split_ids(flat)[0]])):  # both sub-tokens' logits
        a = model.head.part_logits(full, prev_parts, i)
        b = model.head.part_logits(cached, prev_parts, i)
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)
    # and sampling with the cache draws what sampling without it draws
    opts = SamplingOptions(temperature=1.0, top_k=20)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    with_cache = sample(model, 3, ids[:, :1], classes, opts, g1)
    without = sample(model, 3, ids[:, :1], classes, opts, g2, use_cache=False)
    assert torch.equal(with_cache, without) and torch.equal(with_cache[:, :1], ids[:, :1])


# ---------------------------------------------------------------------------------------------- learning


def test_overfit_one_sequence_then_greedy_sampling_reproduces_it():
    model = tiny(dim=48).train()
    target = torch.randint(0, 64, (1, 3, 2, 2), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        opt.zero_grad()
        loss = -model.log_prob(target).mean()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.detach().item() < 0.05
    greedy = SamplingOptions(temperature=0.0)
    assert torch.equal(sample(model, 3, options=greedy), target)
    assert torch.equal(sample(model, 3, prompt=target[:, :1], options=greedy), target)
    # an untrained model does not reproduce it
    assert not torch.equal(sample(tiny(), 3, options=greedy), target)


# ---------------------------------------------------------------------------------------------- sampling


def test_top_k_and_top_p_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    kept = lambda out: torch.isfinite(out)[0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, top_p=0.6)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_p=0.95)) == [True, True, True, True]
    assert kept(filter_logits(logits[:, [3, 1, 0, 2]], top_p=0.6)) == [False, True, True, False]  # any order
    assert draw(torch.tensor([[0.1, 3.0, 0.2]]), SamplingOptions(temperature=0.0), None).tolist() == [1]
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([draw(logits, SamplingOptions(top_k=2), g) for _ in range(200)])
    assert set(draws.reshape(-1).tolist()) == {0, 1}


def test_same_seed_same_tokens_and_guidance_weights():
    model = tiny(num_classes=2)
    opts = SamplingOptions(temperature=1.0)
    run = lambda seed, **kw: sample(model, 2, generator=torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))
    c = torch.tensor([1])
    # cfg 0 samples from the "no class" logits alone; cfg 1 from the class's alone
    assert torch.equal(run(7, classes=c, options=SamplingOptions(cfg=0.0)), run(7, options=opts))
    assert torch.equal(run(7, classes=c, options=SamplingOptions(cfg=1.0)), run(7, classes=c, options=opts))
    with torch.no_grad():
        model.classes.weight[1].mul_(40)  # make the class matter
    assert not torch.equal(
        run(7, classes=c, options=SamplingOptions(cfg=3.0)), run(7, classes=c, options=opts)
    )


def test_sliding_window_continues_from_reencoded_pixels():
    """Past the window, the last ``context`` latent frames are decoded, re-encoded from those pixels and
    sampled on from; the video grows by t frames per new latent frame."""
    model, t = tiny(), 4
    seen = []

    def decode(ids):  # each latent frame becomes 1 (first) or t frames holding its ids as "pixels"
        frames = [ids[:, :1].float()] + [
            ids[:, k : k + 1].float().repeat(1, t, 1, 1) for k in range(1, ids.shape[1])
        ]
        return torch.cat(frames, dim=1)[:, None].repeat(1, 3, 1, 1, 1)

    def encode(video):
        seen.append(video.clone())
        return (video[:, 0, ::t].long() + 1) % 64  # "re-encoding" changes the ids

    video, ids = sample_long(model, 7, 4, 2, encode, decode, t, options=SamplingOptions(temperature=0.0),
                             generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert video.shape[2] == 1 + t * 6 and ids.shape == (1, 7, 2, 2)
    assert len(seen) == 2  # windows of 4 latent frames, 2 kept: 4 + 2 + 1 new frames
    first = decode(ids[:, :4])
    torch.testing.assert_close(video[:, :, : first.shape[2]], first)
    torch.testing.assert_close(seen[0], first[:, :, -(1 + t) :])  # the last 2 latent frames' pixels
    with pytest.raises(ValueError, match="context"):
        sample_long(model, 7, 4, 4, encode, decode, t)


def test_axial_positions_refuse_frames_beyond_the_trained_window():
    model = tiny(positions="axial", max_frames=2)
    with pytest.raises(ValueError, match="sliding window"):
        sample(model, 3)


# ---------------------------------------------------------------------------------------------- recipe


def test_progressive_stages_and_frame_weights():
    data = LMDataSection(
        stages=[
            {"start_step": 0, "frames": 2, "batch_size": 8},
            {"start_step": 5, "frames": 4, "batch_size": 4},
        ]
    )
    assert [(data.stage(s).frames, data.stage(s).batch_size) for s in (0, 4, 5, 99)] == [
        (2, 8),
        (2, 8),
        (4, 4),
        (4, 4),
    ]
    assert data.max_frames == 4
    assert frame_weights(3, 2, full=1, later=0.5).tolist() == [1, 1, 0.5, 0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="start at step 0"):
        LMDataSection(stages=[{"start_step": 3, "frames": 2, "batch_size": 8}])
