"""Replicate padding (``TokenizerConfig.padding="replicate"``): each convolution sees copies of the
edge pixels beyond the frame, so a flat frame stays exactly flat through the whole network."""

import pytest
import torch
import torch.nn.functional as F

from magvit2.models import TokenizerConfig, VideoTokenizer
from magvit2.modules import CausalConv3d

CHANNEL = {"quantizer": {"kind": "lfq", "bits": 8}, "ch": 8, "ch_mult": [1, 2, 2], "num_res_blocks": 1,
           "temporal_downsample": [True, False], "norm": "channel"}  # fmt: skip


def _model(padding: str) -> VideoTokenizer:
    torch.manual_seed(0)
    return VideoTokenizer(TokenizerConfig.from_dict({**CHANNEL, "padding": padding})).eval()


@pytest.mark.parametrize("stride", [1, 2])
def test_replicate_conv_equals_edge_copies_and_causal_zero_frames(stride):
    torch.manual_seed(0)
    conv = CausalConv3d(3, 4, 3, stride=(1, stride, stride), padding="replicate")
    x = torch.randn(1, 3, 4, 7, 9)
    rows = torch.arange(-1, 8).clamp(0, 6)
    cols = torch.arange(-1, 10).clamp(0, 8)
    padded = x[:, :, :, rows][:, :, :, :, cols]  # edge pixels copied by hand
    padded = torch.cat([torch.zeros(1, 3, 2, 9, 11), padded], dim=2)  # two zero frames in front
    expected = F.conv3d(padded, conv.weight, conv.conv_1.bias, stride=(1, stride, stride))
    assert torch.allclose(conv(x), expected, atol=1e-5)
    assert torch.allclose(conv(x[:, :, :1]), expected[:, :, :1], atol=1e-5)  # the one-frame path


def test_flat_clip_gives_one_token_per_latent_frame_and_a_periodic_frame():
    """Random weights, a flat 9x64x96 clip: with replicate padding every position of a latent frame
    gets the same token, and away from the border each decoded frame repeats one 4x4 cell (what the
    upsamplers' depth-to-space makes of a flat input; training makes the cell flat); with zero padding
    the border changes the tokens (so the check has teeth)."""
    flat = torch.full((1, 3, 9, 64, 96), 0.3)
    model = _model("replicate")
    with torch.no_grad():
        out = model(flat)
    ids = out.quantizer.indices[0]  # (T', h, w)
    assert torch.equal(ids, ids[:, :1, :1].expand_as(ids))
    inner = out.reconstruction[..., 12:-12, 12:-12]
    assert torch.allclose(inner[..., 4:, :], inner[..., :-4, :], atol=1e-5)
    assert torch.allclose(inner[..., :, 4:], inner[..., :, :-4], atol=1e-5)
    with torch.no_grad():
        zeros_ids = _model("zeros")(flat).quantizer.indices[0]
    assert not torch.equal(zeros_ids, zeros_ids[:, :1, :1].expand_as(zeros_ids))


def test_replicate_model_chunks_and_tiles_like_a_whole_pass():
    """Time chunks and overlapping tiles (overlap past the receptive field) give the whole-pass tokens."""
    model = _model("replicate")
    torch.manual_seed(1)
    video = torch.rand(1, 3, 9, 96, 128) * 2 - 1
    whole = model.encode(video)
    assert torch.equal(model.encode(video, max_chunk_frames=5), whole)
    assert torch.equal(model.encode(video, tile=64, overlap=56), whole)
    assert not torch.equal(model.encode(video, tile=64, overlap=0), whole)


def test_padding_option_is_checked_and_kept(tmp_path):
    assert TokenizerConfig().padding == "zeros"
    with pytest.raises(ValueError, match=r"TokenizerConfig.padding: expected one of \('zeros', 'repl"):
        TokenizerConfig.from_dict({**CHANNEL, "padding": "reflect"})
    model = _model("replicate")
    model.save_pretrained(tmp_path / "m")
    loaded = VideoTokenizer.from_pretrained(tmp_path / "m")
    assert loaded.config.padding == "replicate"
    flat = torch.full((1, 3, 5, 32, 32), -0.5)
    assert torch.equal(loaded.encode(flat), model.encode(flat))
