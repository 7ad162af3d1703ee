"""Padding and spatial tiling: exact where the maths says so, seamless blending."""

import torch

from magvit2.inference.tiling import crop_padding, decode_tiled, encode_tiled, pad_to_multiple, plan_tiles


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


def test_pointwise_encoder_tiles_exactly():
    # an "encoder" that sees only its own 4x4 block: tiled ids must equal untiled ids exactly
    f = 4
    video = torch.randn(1, 3, 2, 40, 56)

    def enc(v, _i=0):
        return (v.unfold(-2, f, f).unfold(-2, f, f).mean((1, -1, -2)) > 0).long()

    assert torch.equal(encode_tiled(video, enc, f, tile=16, overlap=8), enc(video))


def test_decode_blending_is_seamless_for_consistent_tiles():
    # a decoder that is pointwise in the latent: every tile agrees on overlaps, so blending is exact
    f = 2
    ids = torch.randint(0, 5, (1, 3, 9, 11))

    def dec(t, _i=0):
        return t.float().repeat_interleave(f, -1).repeat_interleave(f, -2)[:, None].expand(-1, 3, -1, -1, -1)

    out = decode_tiled(ids, dec, f, tile=8, overlap=4)
    assert torch.allclose(out, dec(ids), atol=1e-6)


def test_blend_moves_smoothly_between_disagreeing_tiles():
    # tiles that disagree by a constant (tile i outputs i): the blend ramps linearly across each overlap
    def dec(t, i):
        return torch.full((1, 1, 1, 1, t.shape[-1]), float(i))

    ids = torch.zeros(1, 1, 1, 20)
    row = decode_tiled(ids, dec, 1, tile=12, overlap=4)[0, 0, 0, 0]
    expected = torch.cat([torch.zeros(8), torch.arange(1, 5) / 5, torch.ones(8)])
    assert torch.allclose(row, expected)
    row = decode_tiled(ids, dec, 1, tile=12, overlap=8)[0, 0, 0, 0]  # three tiles, overlaps overlap
    steps = row[1:] - row[:-1]
    assert row[0] == 0 and row[-1] == 2 and steps.min() >= 0 and steps.max() < 0.34


def test_decode_margin_drops_inner_border_pixels():
    """Two tiles that disagree (0 and 1) over a 4-pixel overlap: with margin 1 the blend ramp skips the
    outermost overlap pixel of each tile, so the row reads 0 (tile 0 only), 0, 1/3, 2/3, 1, then 1."""

    def dec(t, i):
        return torch.full((1, 1, 1, 1, t.shape[-1]), float(i))

    row = decode_tiled(torch.zeros(1, 1, 1, 20), dec, 1, tile=12, overlap=4, margin=1)[0, 0, 0, 0]
    expected = torch.cat([torch.zeros(8), torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]), torch.ones(8)])
    torch.testing.assert_close(row, expected)
