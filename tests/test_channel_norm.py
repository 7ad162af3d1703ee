"""Channel normalisation: per-position statistics, so flat frames keep their colour and a crop is
treated like the same region of a whole frame."""

import pytest
import torch

from magvit2 import VideoTokenizer
from magvit2.models import TokenizerConfig
from magvit2.modules.norm import AdaptiveChannelNorm, ChannelNorm


def test_channel_norm_normalises_each_position_over_channels():
    torch.manual_seed(0)
    norm = ChannelNorm(6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2, 6))
        norm.bias.copy_(torch.linspace(-1, 1, 6))
    x = torch.randn(2, 6, 3, 4, 5) * 3 + 2
    mean = x.mean(1, keepdim=True)
    var = x.var(1, keepdim=True, unbiased=False)
    expected = (x - mean) / (var + 1e-6).sqrt() * norm.weight[:, None, None, None] + norm.bias[
        :, None, None, None
    ]
    assert torch.allclose(norm(x), expected, atol=1e-5)


def test_adaptive_channel_norm_modulates_each_position_by_its_latent():
    torch.manual_seed(0)
    m = AdaptiveChannelNorm(z_channels=2, channels=4)
    x = torch.randn(1, 4, 5, 8, 8)  # rate 4: latent frames 0, 1 -> frames 0 | 1..4
    q = torch.randn(1, 2, 2, 2, 2)
    out = m(x, q, rate=4)
    normed = ChannelNorm(4, affine=False)(x)
    # frame 3, pixel (5, 2): latent frame 1, latent cell (5 // 4, 2 // 4) = (1, 0)
    z = q[0, :, 1, 1, 0]
    expected = normed[0, :, 3, 5, 2] * (1 + m.gamma(z)) + m.beta(z)
    assert torch.allclose(out[0, :, 3, 5, 2], expected, atol=1e-5)
    z0 = q[0, :, 0, 0, 1]  # frame 0 uses latent frame 0
    assert torch.allclose(
        out[0, :, 0, 1, 6], normed[0, :, 0, 1, 6] * (1 + m.gamma(z0)) + m.beta(z0), atol=1e-5
    )


def _model() -> VideoTokenizer:
    torch.manual_seed(0)
    cfg = TokenizerConfig(quantizer={"kind": "lfq", "bits": 6}, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1,
                          temporal_downsample=(True, True), norm="channel")  # fmt: skip
    return VideoTokenizer(cfg).eval()


def test_crop_matches_whole_frame_away_from_the_border():
    """No statistic spans the frame: the interior of a crop's latent equals the whole frame's there
    (a GroupNorm model's differs everywhere, since its statistics change with the crop)."""
    model = _model()
    x = torch.rand(1, 3, 5, 128, 128) * 2 - 1
    whole = model.encode_latent(x)
    crop = model.encode_latent(x[..., 32:96, 32:96])  # latent cells 8..23 of 32
    # the encoder sees about 28 pixels (7 cells) around a cell: cells 7..9 of the crop are unaffected
    assert torch.allclose(crop[..., 7:10, 7:10], whole[..., 15:18, 15:18], atol=1e-5)
    torch.manual_seed(0)
    group = VideoTokenizer(
        TokenizerConfig(**{**_model().config.to_dict(), "norm": "group", "norm_groups": 4})
    ).eval()
    g_crop, g_whole = group.encode_latent(x[..., 32:96, 32:96]), group.encode_latent(x)
    assert not torch.allclose(g_crop[..., 7:10, 7:10], g_whole[..., 15:18, 15:18], atol=1e-3)


def test_flat_frames_of_different_colours_give_different_latents():
    """A GroupNorm removes each frame's mean, so flat colours all look alike inside it; per-position
    normalisation keeps them apart."""
    model = _model()
    flats = torch.stack([torch.full((3, 1, 32, 32), v) for v in (-0.5, 0.0, 0.5)])
    centre = model.encode_latent(flats)[:, :, 0, 4, 4]
    assert (centre[0] - centre[1]).abs().max() > 1e-2 and (centre[1] - centre[2]).abs().max() > 1e-2


def test_config_rejects_unknown_norm_and_time_pooling_with_channel_norm():
    with pytest.raises(ValueError, match="norm"):
        TokenizerConfig(norm="batch")
    with pytest.raises(ValueError, match="time_pooled_norm"):
        TokenizerConfig(norm="channel", time_pooled_norm=True)
