"""Block-mean code: colour transform, quantization error bounds, grouping, rendering, and a tokenizer
that spends part of its bits on it (flat colours exact, chunks and tiles equal to one pass)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from magvit2.models import TokenizerConfig, VideoTokenizer
from magvit2.models.presets import get_preset
from magvit2.modules.block_mean import (
    SLOPE_STEPS,
    BlockMeanCode,
    fit_detail,
    group_means,
    luma_patches,
    quantize_level,
    render_blocks,
    rgb_to_ycocg,
    upsample_blocks,
    ycocg_to_rgb,
)
from magvit2.modules.patterns import deblock

GREYS = [[v, v, v] for v in (-1.0, -0.5, 0.0, 0.5, 1.0)]
CORNERS = [[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1], [1, 1, 1], [-1, -1, -1]]


pytestmark = pytest.mark.usefixtures("one_thread")


def flat(colours: list[list[float]], frames: int, size: int) -> torch.Tensor:
    """Flat clips ``(N, 3, frames, size, size)`` of the given RGB colours."""
    c = torch.tensor(colours, dtype=torch.float32)
    return c[:, :, None, None, None].expand(-1, 3, frames, size, size).contiguous()


def test_ycocg_round_trip_and_ranges():
    x = torch.rand(500, 3) * 2 - 1
    y = rgb_to_ycocg(x)
    assert torch.allclose(ycocg_to_rgb(y), x, atol=1e-6)
    assert y.abs().max() <= 1 + 1e-6
    corners = rgb_to_ycocg(torch.tensor(CORNERS, dtype=torch.float32))
    assert corners.abs().max() == pytest.approx(1.0)  # the cube's corners reach the ends of the range


@pytest.mark.parametrize("bits", [(6, 5, 5), (5, 4, 4), (8, 8, 8)])
def test_quantization_error_within_half_a_step(bits):
    code = BlockMeanCode(bits, 4, 8)
    ycocg = rgb_to_ycocg(torch.rand(4000, 3) * 2 - 1)
    back = code.dequantize(code.quantize(ycocg))
    for i, b in enumerate(bits):
        half = 1 / (2**b - 2)  # half a step of 2 / (2^b - 2)
        if i == 0:
            err = (back[:, 0] - ycocg[:, 0]).abs()
        else:  # chroma: half a step in the square-root domain
            u = lambda c: c.sign() * c.abs().sqrt()
            err = (u(back[:, i]) - u(ycocg[:, i])).abs()
        assert err.max() <= half + 1e-6


def test_black_grey_white_exact_and_corners_close():
    code = BlockMeanCode((6, 5, 5), 4, 8)
    video = flat([[-1, -1, -1], [0, 0, 0], [1, 1, 1]] + CORNERS, 1, 8)
    means = code.decode(code.encode(video))[:, :, 0, 0, 0]
    assert torch.allclose(means[:3], video[:3, :, 0, 0, 0], atol=1e-6)
    assert (means - video[:, :, 0, 0, 0]).abs().max() < 0.06  # within 8/255 (chroma 0.5 is near a level)


def test_codes_are_signs_and_decode_reads_levels():
    code = BlockMeanCode((6, 5, 5), 4, 8)
    video = torch.rand(2, 3, 9, 16, 24) * 2 - 1
    codes = code.encode(video)
    assert codes.shape == (2, 16, 3, 2, 3)
    assert set(codes.unique().tolist()) <= {-1.0, 1.0}
    # the same levels from the bits as from quantizing the means directly
    levels = code.quantize(rgb_to_ycocg(group_means(video, 4, 8, first=True)))
    direct = ycocg_to_rgb(code.dequantize(levels))
    assert torch.allclose(code.decode(codes), direct, atol=1e-6)
    # Y past its top level (an LM may sample one) reads as the top level; chroma level 15 is 0
    mid = [1.0, 1, 1, 1, -1]
    white = torch.tensor([1.0] * 6 + mid + mid).view(1, 16, 1, 1, 1)
    assert torch.allclose(code.decode(white), torch.ones(1, 3, 1, 1, 1), atol=1e-6)


def test_group_means_first_and_later_chunks():
    video = torch.rand(1, 3, 9, 16, 16)
    first = group_means(video, 4, 8, first=True)
    assert first.shape == (1, 3, 3, 2, 2)
    assert torch.allclose(first[:, :, 0, 0, 0], video[:, :, 0, :8, :8].mean((-1, -2)))
    assert torch.allclose(first[:, :, 1, 1, 0], video[:, :, 1:5, 8:, :8].mean((-1, -2, -3)))
    later = group_means(video[:, :, 1:], 4, 8, first=False)  # a later chunk: two groups of four
    assert torch.allclose(later, first[:, :, 1:])
    short = group_means(video[:, :, :7], 4, 8, first=True)  # frames {0}, {1-4}, {5, 6}
    assert torch.allclose(short[:, :, 2, 0, 1], video[:, :, 5:7, :8, 8:].mean((-1, -2, -3)))


def test_render_frame_counts_constants_and_ramps():
    code = BlockMeanCode((6, 5, 5), 4, 8)
    means = torch.full((1, 3, 3, 4, 5), 0.25)
    assert code.render(means, first=True).shape == (1, 3, 9, 32, 40)
    assert code.render(means, first=False).shape == (1, 3, 12, 32, 40)
    assert torch.allclose(code.render(means, first=True), torch.tensor(0.25))
    # block means of a horizontal linear ramp come back as the ramp (to bicubic's ripple, under
    # 2.5/255) away from the frame's edges, and at 40 dB over the whole frame; showing each mean on its
    # whole block would be 14/255 off
    x = torch.linspace(-1, 1, 64).expand(1, 3, 1, 64, 64).contiguous()
    rendered = code.render(group_means(x, 4, 8, first=True), first=True)
    assert (rendered - x)[..., 12:-12].abs().max() < 0.02
    assert 10 * torch.log10(4 / (rendered - x).pow(2).mean()) > 40


def test_render_blocks_keeps_the_block_means():
    """Back-projection takes the picture's block means to the given ones (bicubic alone blurs them),
    on random means and, closer still, on smooth ones; a constant stays exact."""
    torch.manual_seed(0)
    noise = torch.rand(2, 3, 6, 7) * 2 - 1
    smooth = torch.linspace(-0.8, 0.8, 7).expand(2, 3, 6, 7) * torch.linspace(0.2, 1, 6)[:, None]
    for means, gain in ((noise, 4), (smooth, 20)):
        plain = (F.avg_pool2d(upsample_blocks(means, 8), 8) - means).abs().mean()
        kept = (F.avg_pool2d(render_blocks(means, 8), 8) - means).abs().mean()
        assert kept * gain < plain, (kept, plain)
    assert torch.equal(render_blocks(torch.full((1, 3, 2, 2), 0.5), 8), torch.full((1, 3, 16, 16), 0.5))


def test_render_slope_follows_a_linear_fade_and_keeps_group_means():
    """With slope 1 a flat clip brightening at a constant rate comes back exactly, frame by frame
    (nearest in time: up to 1.5 frames' change off); each group keeps its mean at any slope."""
    frames = 17
    level = torch.linspace(-0.8, 0.4, frames)  # 0.075 per frame
    video = level.view(1, 1, frames, 1, 1).expand(1, 3, frames, 16, 16).contiguous()
    means = group_means(video, 4, 8, first=True)
    line = BlockMeanCode((6, 5, 5), 4, 8, slope=1.0).render(means, first=True)
    steps = BlockMeanCode((6, 5, 5), 4, 8).render(means, first=True)
    assert torch.allclose(line, video, atol=1e-5)
    assert (steps - video).abs().max() == pytest.approx(1.5 * 0.075, abs=1e-5)
    torch.manual_seed(0)
    means = torch.rand(2, 3, 4, 3, 3) * 1.6 - 0.8
    rendered = BlockMeanCode((6, 5, 5), 4, 8, slope=0.75).render(means, first=True)
    groups = group_means(rendered, 4, 1, first=True)  # per-pixel group means
    assert torch.allclose(
        groups, BlockMeanCode((6, 5, 5), 4, 8).render(means, first=True)[:, :, ::4], atol=1e-5
    )


def test_render_slope_stays_in_range_and_keeps_black_black():
    """A block that turns black stays exactly black (its line would leave [-1, 1]); a cut to white
    never overshoots it."""
    means = torch.tensor([0.5, 0.0, -1.0, -1.0, 1.0, 1.0]).view(1, 1, 6, 1, 1).expand(1, 3, 6, 2, 2)
    rendered = BlockMeanCode((6, 5, 5), 4, 8, slope=1.0).render(means.contiguous(), first=True)
    assert torch.equal(rendered[:, :, 5:13], torch.full_like(rendered[:, :, 5:13], -1.0))  # frames 5-12
    assert rendered.abs().max() <= 1 + 1e-6
    assert rendered[0, 0, 1, 0, 0] > 0.25 and rendered[0, 0, 4, 0, 0] < -0.25  # frames 1-4 do fade


def test_render_slope_chunks_equal_one_pass():
    """A later chunk given the previous chunk's last means renders the frames one pass does, also
    when the previous chunk was frame 0 alone."""
    torch.manual_seed(0)
    code = BlockMeanCode((6, 5, 5), 4, 8, slope=0.75)
    means = torch.rand(1, 3, 5, 2, 3) * 1.6 - 0.8
    whole = code.render(means, first=True)
    for cut in (1, 2, 3):
        head = code.render(means[:, :, :cut], first=True)
        tail = code.render(
            means[:, :, cut:], first=False, previous=means[:, :, cut - 1 : cut], previous_is_frame0=cut == 1
        )
        assert torch.allclose(torch.cat([head, tail], dim=2), whole, atol=1e-5), cut


def test_slope_bits_pick_the_best_step_per_block_and_group():
    """With slope_bits each block and group gets the step of SLOPE_STEPS whose line is closest to its
    frames: no constant step gives any block's frame means a smaller error; a linear fade is exact."""
    torch.manual_seed(0)
    code = BlockMeanCode((6, 5, 5), 4, 8, slope_bits=2)
    video = F.interpolate(torch.rand(2, 3, 5, 3, 3) * 2 - 1, size=(17, 24, 24), mode="trilinear")
    codes = code.encode(video)
    assert codes.shape == (2, 18, 5, 3, 3) and set(codes.unique().tolist()) == {-1.0, 1.0}
    means, steps = code.decode(codes), code.decode_steps(codes)
    assert set(steps.unique().tolist()) <= set(SLOPE_STEPS) and len(steps.unique()) > 2
    frame_means = group_means(video, 1, 8, first=True)

    def errors(step):  # squared error of each block's line against its frame means, per group
        slopes = code.group_slopes(means, True, None, False, step)[:, :, 1:]
        offsets = torch.arange(4.0) - 1.5
        lines = means[:, :, 1:, None] + slopes[:, :, :, None] * offsets.view(1, 1, 1, 4, 1, 1)
        frames = frame_means[:, :, 1:].unflatten(2, (4, 4))
        return (lines - frames).square().sum((1, 3))

    chosen = errors(steps)
    for step in SLOPE_STEPS:
        assert (chosen <= errors(step) + 1e-6).all(), step
    assert chosen.sum() < 0.8 * errors(0.0).sum()
    level = torch.linspace(-0.8, 0.4, 17).view(1, 1, 17, 1, 1).expand(1, 3, 17, 16, 16).contiguous()
    fade = code.encode(level)
    line = code.render(code.decode(fade), first=True, steps=code.decode_steps(fade))
    assert (line - level).abs().max() < 0.025  # the 6-bit luma levels' error (steps: 0.11 off)


def test_slope_bits_come_first_so_ids_keep_the_means_in_their_low_bits():
    code = BlockMeanCode((6, 5, 5), 4, 8, slope_bits=2)
    plain = BlockMeanCode((6, 5, 5), 4, 8)
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    assert torch.equal(code.encode(video)[:, 2:], plain.encode(video))
    assert torch.equal(code.decode(code.encode(video)), plain.decode(plain.encode(video)))


def mean_config(**kw) -> TokenizerConfig:
    args = dict(
        quantizer={"kind": "lfq", "bits": 18},
        ch=8,
        ch_mult=(1, 2, 2, 2),
        num_res_blocks=1,
        temporal_downsample=(False, True, True),
        norm="channel",
        padding="replicate",
        mean_bits=(6, 5, 5),
    )
    args.update(kw)
    return TokenizerConfig(**args)


def test_config_checks_mean_bits():
    assert mean_config().learned_channels == 2
    assert TokenizerConfig.from_dict(mean_config().to_dict()).mean_bits == (6, 5, 5)
    assert mean_config(mean_bits=(6, 6, 6)).learned_channels == 0  # every bit fixed: allowed
    with pytest.raises(ValueError, match="take 20 bits, more than the 18 latent channels"):
        mean_config(mean_bits=(6, 6, 6), mean_slope_bits=2)
    with pytest.raises(ValueError, match="3 bit counts"):
        mean_config(mean_bits=(6, 5))
    with pytest.raises(ValueError, match="3 bit counts"):
        mean_config(mean_bits=(9, 4, 4))
    with pytest.raises(ValueError, match="expected quantizer kind 'lfq'"):
        mean_config(quantizer={"kind": "fsq", "levels": [8, 8, 8, 5, 5, 5]})
    assert TokenizerConfig.from_dict(mean_config(mean_slope=0.5).to_dict()).mean_slope == 0.5
    with pytest.raises(ValueError, match="mean_slope: expected a value in"):
        mean_config(mean_slope=1.5)
    assert mean_config(mean_slope_bits=2).learned_channels == 0
    for bad in (dict(mean_slope_bits=1), dict(mean_slope_bits=2, mean_slope=0.5)):
        with pytest.raises(ValueError, match="mean_slope_bits: expected 0, or 2"):
            mean_config(**bad)
    with pytest.raises(ValueError, match="needs a temporal factor above 1"):
        mean_config(mean_slope_bits=2, temporal_downsample=(False, False, False))


def test_tokenizer_flat_colours_exact_at_zero_correction():
    torch.manual_seed(0)
    model = VideoTokenizer(mean_config()).eval()
    torch.nn.init.zeros_(model.decoder.conv_out.conv_1.weight)
    torch.nn.init.zeros_(model.decoder.conv_out.conv_1.bias)
    video = flat(GREYS + CORNERS[:6], 9, 16)
    ids = model.encode(video)
    assert ids.max() < 2**18
    rec = model.decode(ids)
    grey = [0, 2, 4]  # black, mid grey, white: levels of the 6-bit luma
    assert torch.allclose(rec[grey], video[grey], atol=1e-5)
    assert (rec - video).abs().max() < 0.06  # every other flat within its quantization step
    out = model(video)
    assert torch.allclose(out.reconstruction, rec, atol=1e-5)


def test_tokenizer_chunks_and_tiles_equal_one_pass(tmp_path):
    torch.manual_seed(0)
    model = VideoTokenizer(mean_config(mean_slope=0.75)).eval()
    video = torch.rand(1, 3, 13, 48, 48) * 2 - 1
    ids = model.encode(video)
    assert torch.equal(model.encode(video, max_chunk_frames=5), ids)
    whole = model.decode(ids)
    for chunk in (1, 5, 9):  # the means' line carries over chunk borders
        assert torch.allclose(model.decode(ids, max_chunk_frames=chunk), whole, atol=1e-5), chunk
    # tiles: the block-mean bits (the low 16 of each id, LFQ's channel 0 being the top bit) are
    # exact per block, whatever the learned bits do at tile borders
    tiled = model.encode(video, tile=32, overlap=16)
    assert torch.equal(tiled & 0xFFFF, ids & 0xFFFF)
    loaded = VideoTokenizer.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert (loaded.config.mean_bits, loaded.config.mean_slope) == ((6, 5, 5), 0.75)
    assert torch.equal(loaded.encode(video), ids)


def test_tokenizer_with_every_bit_fixed_has_no_encoder_network(tmp_path):
    """mean_slope_bits=2 with (6, 5, 5): 18 fixed bits, so the encoder has no weights; its ids carry
    the slope across chunk borders and match a whole pass, tiled or not, and after a save and load."""
    torch.manual_seed(0)
    model = VideoTokenizer(mean_config(mean_slope_bits=2)).eval()
    assert not any(k.startswith("encoder.") for k in model.state_dict())
    video = F.interpolate(torch.rand(1, 3, 7, 6, 6) * 2 - 1, size=(25, 48, 48), mode="trilinear")
    ids = model.encode(video)
    assert len((ids >> 16).unique()) > 1  # the slope bits vary
    for chunk in (1, 5, 9):
        assert torch.equal(model.encode(video, max_chunk_frames=chunk), ids), chunk
    assert torch.equal(model.encode(video, tile=32, overlap=16), ids)
    whole = model.decode(ids)
    for chunk in (1, 5, 9):
        assert torch.allclose(model.decode(ids, max_chunk_frames=chunk), whole, atol=1e-5), chunk
    loaded = VideoTokenizer.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert loaded.config.mean_slope_bits == 2 and torch.equal(loaded.encode(video), ids)


def test_init_from_a_plain_model_starts_near_the_rendered_means(train_default):
    script = train_default
    torch.manual_seed(0)
    plain = VideoTokenizer(mean_config(mean_bits=None)).eval()
    model = VideoTokenizer(mean_config()).eval()
    script.init_weights(model, plain)
    w = plain.state_dict()["encoder.conv_out.conv_1.weight"]
    assert torch.equal(model.state_dict()["encoder.conv_out.conv_1.weight"], w[:2])
    assert torch.equal(model.state_dict()["decoder.mid_block.0.conv1.conv_1.weight"],
                       plain.state_dict()["decoder.mid_block.0.conv1.conv_1.weight"])  # fmt: skip
    scale = script.MEAN_INIT_SCALE
    for key in ("decoder.conv_out.conv_1.weight", "decoder.conv_out.conv_1.bias"):
        assert torch.allclose(model.state_dict()[key], plain.state_dict()[key] * scale)
    # the decoder's output is the rendered block means plus the scaled network output
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    code = model.decoder.block_mean
    codes = model.encode_codes(video)
    rendered = code.render(code.decode(codes[:, 2:]), first=True)
    with torch.no_grad():
        model.decoder.block_mean = None
        network = model.decoder(codes)
        model.decoder.block_mean = code
    assert torch.allclose(model.decode_codes(codes), rendered + network, atol=1e-5)
    with pytest.raises(ValueError, match="more than mean_bits, mean_slope, mean_slope_bits"):
        script.init_weights(VideoTokenizer(mean_config(ch=16)), plain)


def test_token_refinement_never_worse_with_block_mean_bits():
    from magvit2.inference.refine import encode_refined

    torch.manual_seed(0)
    model = VideoTokenizer(mean_config()).eval()
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    mse = lambda ids: float((model.decode(ids) - video).pow(2).mean())
    plain, refined = model.encode(video), encode_refined(model, video, steps=4)
    assert refined.shape == plain.shape and mse(refined) <= mse(plain)


def test_a_run_from_a_block_mean_model_keeps_its_code(train_default, tmp_path):
    """train_default.py --init MODEL without --mean-bits or --mean-slope continues MODEL as it is: the
    same block-mean code, render and weights; --mean-slope changes only the render."""
    torch.manual_seed(0)
    source = VideoTokenizer(replace(get_preset("tiny"), mean_bits=(6, 5, 5), mean_slope=0.5))
    folder = source.save_pretrained(tmp_path / "m")
    base = ["--data", "d", "--out", "o", "--preset", "tiny", "--init", str(folder)]
    model = train_default.build_model(train_default.parse_args(base))
    assert (model.config.mean_bits, model.config.mean_slope) == ((6, 5, 5), 0.5)
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    model = train_default.build_model(train_default.parse_args([*base, "--mean-slope", "0.25"]))
    assert model.decoder.block_mean.slope == 0.25
    # every bit fixed: the encoder's weights are dropped, the decoder's kept
    model = train_default.build_model(
        train_default.parse_args([*base, "--mean-slope", "0", "--mean-slope-bits", "2"])
    )
    assert not any(k.startswith("encoder.") for k in model.state_dict())
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def detail_code() -> BlockMeanCode:
    """The built-in model's layout: Y 6 + chroma piece 3 + detail 9 = 18 bits, a fixed slope."""
    return BlockMeanCode((6, 6, 6), 4, 8, slope=0.75, chroma_share=2, detail_bits=9)


def smooth_video(frames: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    coarse = torch.rand(1, 3, 5, h // 12, w // 12) * 1.8 - 0.9
    return F.interpolate(coarse, size=(frames, h, w), mode="trilinear")


def test_shared_chroma_pieces_reassemble_and_edge_tokens_keep_their_own():
    """chroma_share=2 on a 5x7 token grid: each complete 2x2 gets back the quantized mean chroma of its
    pixels (the four pieces reassembled), the odd last row and column their own chroma; luma is per
    token either way."""
    code = detail_code()
    assert (code.channels, code.chroma_bits, code.own_bits) == (18, 3, 6)
    video = smooth_video(9, 40, 56)
    codes = code.encode(video)
    assert codes.shape == (1, 18, 3, 5, 7)
    _, luma, rest = code.unpack(codes)
    chroma = rgb_to_ycocg(group_means(video, 4, 8, True))[:, 1:]  # (1, 2, 3, 5, 7)
    shared = F.avg_pool3d(chroma[..., :4, :6], (1, 2, 2))
    pieces = rearrange_pieces(rest & 7)
    value = sum(pieces[..., i] << (3 * i) for i in range(4))
    assert torch.equal(value & 63, quantize_level(shared[:, 0], 6, companded=True))
    assert torch.equal(value >> 6, quantize_level(shared[:, 1], 6, companded=True))
    edge = code.edge_tokens(5, 7, codes.device)
    assert edge.sum() == 5 + 7 - 1 and edge[4].all() and edge[:, 6].all()
    decoded = code.decode_chroma(rest)
    assert (decoded[:, :, :, edge] - chroma[:, :, :, edge]).abs().max() < 0.02  # own 6-bit levels
    # inside, the interpolated chroma keeps each 2x2's mean (back-projection) and follows the pixels
    assert (F.avg_pool3d(decoded[..., :4, :6], (1, 2, 2)) - shared).abs().max() < 0.03
    repeated = shared.repeat_interleave(2, -2).repeat_interleave(2, -1)
    error = (decoded[..., :4, :6] - chroma[..., :4, :6]).abs().mean()
    assert error < 0.75 * (repeated - chroma[..., :4, :6]).abs().mean(), error
    assert torch.equal(luma, quantize_level(rgb_to_ycocg(group_means(video, 4, 8, True))[:, 0], 6, False))


def rearrange_pieces(field: torch.Tensor) -> torch.Tensor:
    """Token fields ``(B, n, h, w)`` -> ``(B, n, h//2, w//2, 4)``: the pieces of each complete 2x2."""
    h, w = field.shape[-2] // 2 * 2, field.shape[-1] // 2 * 2
    f = field[..., :h, :w]
    return torch.stack([f[..., 0::2, 0::2], f[..., 0::2, 1::2], f[..., 1::2, 0::2], f[..., 1::2, 1::2]], -1)


def textured(batch: int, frames: int, size: int, seed: int) -> torch.Tensor:
    """Clips with detail inside every 8x8 block: two gratings of random direction and period (6 to 14
    pixels) drifting a pixel a frame, over a smooth colour."""
    gen = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.arange(size * 1.0), torch.arange(size * 1.0), indexing="ij")
    clips = []
    for _ in range(batch):
        luma = torch.zeros(frames, size, size)
        for _ in range(2):
            angle, period = torch.rand(2, generator=gen) * torch.tensor([3.1416, 8.0]) + torch.tensor(
                [0, 6.0]
            )
            along = x * angle.cos() + y * angle.sin()
            luma += 0.2 * torch.sin(2 * 3.1416 * (along[None] - torch.arange(frames)[:, None, None]) / period)
        clips.append(luma.unsqueeze(0) + smooth_video(frames, size, size, seed)[0])
    return torch.stack(clips).clamp(-1, 1)


def test_fit_detail_lowers_the_error_and_pattern_zero_keeps_flats_exact():
    code = detail_code()
    fitted = fit_detail(code, [textured(4, 9, 48, seed=1)], iters=10)
    assert fitted["mse_after"] < 0.8 * fitted["mse_before"], fitted
    assert code.detail.shape == (512, 5, 64)  # per pattern: frame 0 alone, then a group's 4 frames
    assert torch.equal(code.detail[0], torch.zeros(5, 64)) and code.detail[1:].abs().amax((1, 2)).min() > 0
    unseen = textured(2, 9, 48, seed=2)
    codes = code.encode(unseen)
    with_detail = code.reconstruct(codes, first=True)
    assert len((code.unpack(codes)[2] >> 3).unique()) > 16  # many patterns in use
    plain = code.render(code.decode(codes), True, steps=code.decode_steps(codes))
    assert (with_detail - unseen).square().mean() < 0.9 * (plain - unseen).square().mean()
    flats = flat(GREYS + CORNERS[:6], 5, 32)
    flat_codes = code.encode(flats)
    assert (code.unpack(flat_codes)[2] >> 3).eq(0).all()  # pattern 0 everywhere
    rec = code.reconstruct(flat_codes, first=True)
    assert torch.allclose(rec[[0, 2, 4]], flats[[0, 2, 4]], atol=1e-5)  # black, mid grey, white
    assert (rec - flats).abs().max() < 0.03


def test_detail_index_is_the_nearest_pattern_to_what_the_means_miss():
    """Frame 0 takes the nearest frame-0 pattern, each later group the nearest pattern over its 4
    frames; adding them is what reconstruct does."""
    code = detail_code()
    fit_detail(code, [textured(2, 9, 32, seed=3)], iters=5)
    video = textured(1, 9, 32, seed=4)
    codes = code.encode(video)
    index = code.unpack(codes)[2] >> 3
    shown = code.render(code.decode(codes), True, steps=code.decode_steps(codes))
    head, groups = luma_patches(video - shown, 4, 8, first=True)  # (1, 1, 4, 4, 64), (1, 2, 4, 4, 256)
    assert torch.equal(index[:, :1], (head.unsqueeze(-2) - code.detail[:, 0]).square().sum(-1).argmin(-1))
    table = code.detail[:, 1:].flatten(1)
    assert torch.equal(index[:, 1:], (groups.unsqueeze(-2) - table).square().sum(-1).argmin(-1))
    pattern = code.detail[index[0, 2, 1, 3], 3].view(8, 8)  # group 2's third frame (frame 7), token (1, 3)
    added = code.reconstruct(codes, first=True) - shown
    inside = pattern[1:7, 1:7].expand(3, 6, 6)  # the block borders are softened (deblock)
    assert torch.allclose(added[0, :, 7, 9:15, 25:31], inside, atol=1e-6)


def test_deblock_softens_block_borders_only():
    """Two flat patterns meeting at a block border: the pixels either side become [1, 2, 1] / 4
    means, the inside of each block and the frame's edge stay."""
    layer = torch.zeros(1, 1, 1, 16, 24)
    layer[..., 8:] = 1.0  # a step between the first and the second column of blocks
    out = deblock(layer, 8)
    assert torch.equal(out[..., :, :7], layer[..., :, :7]) and torch.equal(out[..., :, 9:], layer[..., :, 9:])
    assert torch.allclose(out[0, 0, 0, :, 7], torch.full((16,), 0.25))
    assert torch.allclose(out[0, 0, 0, :, 8], torch.full((16,), 0.75))
    ramp = torch.linspace(-1, 1, 24).expand(1, 1, 2, 16, 24)
    assert torch.allclose(deblock(ramp, 8), ramp, atol=1e-6)  # linear across a border: unchanged


def fixed_model() -> VideoTokenizer:
    """A tokenizer with every bit fixed and no decoder network: the built-in model's layout."""
    cfg = mean_config(mean_bits=(6, 6, 6), mean_slope_bits=2, mean_chroma_share=2, mean_detail_bits=7)
    model = VideoTokenizer(replace(cfg, decoder_network=False)).eval()
    fit_detail(model.encoder.block_mean, [textured(2, 9, 48, seed=5)], iters=5)
    model.decoder.block_mean.detail.copy_(model.encoder.block_mean.detail)
    return model


def test_a_model_with_no_network_codes_in_chunks_ignores_tiles_and_saves_its_table(tmp_path):
    model = fixed_model()
    assert not list(model.parameters()) and model.config.learned_channels == 0
    video = textured(1, 25, 56, seed=6)[..., :40, :]  # a 5x7 token grid: odd, so edge tokens too
    ids = model.encode(video)
    assert ids.shape == (1, 7, 5, 7) and ids.max() < 2**18
    for chunk in (1, 5, 9):
        assert torch.equal(model.encode(video, max_chunk_frames=chunk), ids), chunk
    assert torch.equal(model.encode(video, tile=32, overlap=16), ids)
    whole = model.decode(ids)
    code = model.decoder.block_mean
    assert torch.allclose(whole, code.reconstruct(model.quantizer.indices_to_codes(ids), True), atol=1e-6)
    for chunk in (1, 5, 9):
        assert torch.allclose(model.decode(ids, max_chunk_frames=chunk), whole, atol=1e-5), chunk
    assert torch.equal(model.decode(ids, tile=32, overlap=16), whole)
    loaded = VideoTokenizer.from_pretrained(model.save_pretrained(tmp_path / "m", dtype=torch.float16))
    assert not loaded.config.decoder_network and loaded.config.mean_detail_bits == 7
    assert torch.equal(loaded.decoder.block_mean.detail, code.detail.half().float())
    assert torch.equal(loaded.encode(video), model.encode(video))  # half-precision table: same choices here


def test_config_checks_shared_chroma_and_detail():
    with pytest.raises(ValueError, match="4 whole pieces"):
        mean_config(mean_bits=(6, 5, 5), mean_chroma_share=2, mean_detail_bits=6)
    with pytest.raises(ValueError, match="need mean_bits"):
        replace(mean_config(mean_bits=None), decoder_network=False)
    with pytest.raises(ValueError, match="take 20 bits"):
        mean_config(mean_bits=(6, 6, 6), mean_slope_bits=2, mean_chroma_share=2, mean_detail_bits=9)
    assert mean_config(mean_bits=(6, 6, 6), mean_chroma_share=2, mean_detail_bits=9).learned_channels == 0


def test_a_decoder_network_added_to_a_fixed_model_starts_near_its_reconstruction(train_default):
    """scripts/train_default.py --decoder-network yes from a model with none: the tables carry over,
    only the decoder has weights, it starts as exactly the fixed reconstruction, and a first loss
    gradient reaches its last convolution."""
    source = fixed_model()
    model = VideoTokenizer(replace(source.config, decoder_network=True)).eval()
    train_default.init_weights(model, source)
    assert torch.equal(model.decoder.block_mean.detail, source.decoder.block_mean.detail)
    assert all(k.startswith("decoder.") for k, _ in model.named_parameters())
    video = textured(1, 9, 32, seed=7)
    ids = model.encode(video)
    assert torch.equal(ids, source.encode(video))
    fixed = source.decode(ids)
    assert torch.equal(model.decode(ids), fixed)
    model.train()
    (model(video).reconstruction - video).square().mean().backward()
    assert model.decoder.conv_out.conv_1.weight.grad.abs().max() > 0
    back = VideoTokenizer(source.config)
    train_default.init_weights(back, model)  # and back: the network is dropped, the tables kept
    assert torch.equal(back.decode(ids), fixed)
