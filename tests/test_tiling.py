"""Spatial tiling: the tile plan covers the grid once, channel-norm models tile exactly, decoded tiles
blend along linear ramps, and model, chunking and runner agree."""

import numpy as np
import pytest
import torch

from magvit2.inference.streaming import InferenceOptions, TokenizerRunner
from magvit2.models import TokenizerConfig, VideoTokenizer
from magvit2.models.tiling import Tiling, crop_padding, pad_to_multiple, plan_tiles

#: 2x spatial, 2x temporal, channel norm: a receptive field of a few latent positions, fast on a CPU.
CHANNEL = {"quantizer": {"kind": "lfq", "bits": 6}, "ch": 8, "ch_mult": [1, 2], "num_res_blocks": 1,
           "temporal_downsample": [True], "norm": "channel"}  # fmt: skip


@pytest.fixture(scope="module")
def model() -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(TokenizerConfig.from_dict(CHANNEL)).eval()


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 3, 5, 64, 80) * 2 - 1


def test_pad_crop_round_trip():
    x = torch.randn(2, 3, 5, 30, 41)
    p, pb, pr = pad_to_multiple(x, 8)
    assert p.shape[-2:] == (32, 48) and (pb, pr) == (2, 7)
    assert torch.equal(crop_padding(p, pb, pr), x)
    assert torch.equal(p[..., 30:, :41], x[..., 29:30, :].expand(-1, -1, -1, 2, -1))  # edge replicated


def test_tiles_cover_grid_once():
    for h, w, tile, ov in [(10, 13, 4, 1), (16, 16, 8, 2), (5, 3, 8, 2), (31, 7, 6, 3)]:
        owned = torch.zeros(h, w, dtype=torch.int64)
        for t in plan_tiles(h, w, tile, ov):
            (r0, r1), (c0, c1) = t.own_rows, t.own_cols
            assert t.top <= r0 and r1 <= t.top + t.size_h and t.left <= c0 and c1 <= t.left + t.size_w
            owned[r0:r1, c0:c1] += 1
        assert torch.equal(owned, torch.ones_like(owned))


def test_channel_norm_tiles_give_the_whole_frame_tokens(model, video):
    """Overlapping tiles whose half overlap covers the receptive field give exactly the whole-frame
    tokens, whole or in time chunks; without overlap the tokens near the inner borders differ (so the
    check has teeth)."""
    whole = model.encode(video)
    tiled = model.encode(video, tile=48, overlap=24)  # 2 x 3 tiles of 24 x 24 latent positions
    assert len(Tiling(48, 24).plan(32, 40, 2).tiles) == 6
    assert torch.equal(tiled, whole)
    assert torch.equal(model.encode(video, max_chunk_frames=3, tile=48, overlap=24), whole)
    assert not torch.equal(model.encode(video, tile=48, overlap=0), whole)
    model.enable_tiling(tile=48, overlap=24)
    try:
        assert torch.equal(model.encode(video), whole)
        assert torch.equal(model.encode(video[:, :, 0]), whole[:, :1])  # an image
    finally:
        model.disable_tiling()


def test_tiled_decode_blends_close_to_whole_and_chunks_agree(model, video):
    ids = model.encode(video)
    whole = model.decode(ids)
    tiled = model.decode(ids, tile=48, overlap=24)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().mean() < 0.02 * whole.abs().mean()
    torch.testing.assert_close(model.decode(ids, max_chunk_frames=3, tile=48, overlap=24), tiled)
    codes = model.quantizer.indices_to_codes(ids)
    torch.testing.assert_close(model.decode_codes(codes, tile=48, overlap=24), tiled)


def test_blend_ramps_linearly_between_disagreeing_tiles():
    """Tiles that output their own index: the blend ramps from one to the next across each overlap,
    leaving out the quarter of the overlap next to each tile's inner border."""
    plan = Tiling(12, 4).plan(1, 20, 1)
    row = plan.decode(torch.zeros(1, 1, 1, 20), lambda crop, i: torch.full_like(crop, float(i)))[0, 0, 0]
    expected = torch.cat([torch.zeros(8), torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]), torch.ones(8)])
    torch.testing.assert_close(row, expected)


def test_runner_tiles_as_the_model_does(model, video):
    """The streaming runner (CLI ``--tile``) tiles with the same plan: same tokens as the model."""
    frames = ((video[0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    opts = InferenceOptions(tile=48, overlap=24, max_chunk_frames=3, batch_size=3)
    clip = TokenizerRunner(model, opts).encode_frames(iter(frames))
    from magvit2.data.video_io import to_tensor

    expected = model.encode(to_tensor(np.asarray(frames))[None])[0]
    assert torch.equal(clip.ids, expected)
