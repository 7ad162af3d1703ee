"""Building blocks: causal conv (vs explicit padding, causality, chunk cache), norms, depth-to-space."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from magvit2.modules import (
    AdaptiveGroupNorm,
    CausalCache,
    CausalConv3d,
    GroupNorm,
    ResBlock,
    Upsampler,
    depth_to_space_3d,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to OpenMP contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _run_chunks(module, x, sizes, **kw):
    """Feed ``x`` to ``module`` in time chunks of the given sizes with one cache; concatenate."""
    cache, parts, start = CausalCache(), [], 0
    for n in sizes:
        parts.append(module(x[:, :, start : start + n], cache=cache, **kw))
        start += n
    assert start == x.shape[2]
    return torch.cat(parts, dim=2)


@pytest.mark.parametrize("stride", [(1, 1, 1), (2, 2, 2), (1, 2, 2)])
def test_causal_conv_equals_front_padded_conv(stride):
    torch.manual_seed(0)
    conv = CausalConv3d(3, 5, 3, stride=stride)
    x = torch.randn(2, 3, 9, 8, 8)
    # independent computation: zero-pad 2 frames in front and 1 pixel around, plain conv3d
    padded = F.pad(x, (1, 1, 1, 1, 2, 0))
    ref = F.conv3d(padded, conv.conv_1.weight, conv.conv_1.bias, stride=stride)
    out = conv(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-6)
    if stride[0] == 2:
        assert out.shape[2] == 5  # 1 + 2k frames -> 1 + k


def test_causal_conv_is_causal():
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, 3)
    x = torch.randn(1, 2, 7, 4, 4)
    y = x.clone()
    y[:, :, 4:] += 1.0
    a, b = conv(x), conv(y)
    assert torch.equal(a[:, :, :4], b[:, :, :4])
    assert not torch.allclose(a[:, :, 4], b[:, :, 4])


@pytest.mark.parametrize("stride_t", [1, 2])
@pytest.mark.parametrize("sizes", [[1] * 9, [3, 6], [1, 4, 4], [2, 2, 5], [5, 1, 1, 1, 1]])
def test_causal_conv_chunks_equal_whole(stride_t, sizes):
    torch.manual_seed(0)
    conv = CausalConv3d(2, 3, 3, stride=(stride_t, 1, 1))
    x = torch.randn(1, 2, 9, 4, 4)
    whole = conv(x)
    chunked = _run_chunks(conv, x, sizes)
    assert chunked.shape == whole.shape
    assert torch.allclose(chunked, whole, atol=1e-6)


def test_cache_holds_at_most_kernel_minus_one_frames():
    conv = CausalConv3d(1, 1, 3)
    cache = CausalCache()
    for _ in range(5):
        conv(torch.randn(1, 1, 4, 2, 2), cache)
        assert cache.get(conv).shape[2] == 2


def test_group_norm_per_frame_and_pooled():
    torch.manual_seed(0)
    norm = GroupNorm(2, 4, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 4, 3, 5, 5) * 3 + 1
    ref = torch.stack([F.group_norm(x[:, :, t], 2, norm.weight, norm.bias, 1e-6) for t in range(3)], dim=2)
    assert torch.allclose(norm(x), ref, atol=1e-5)
    # one frame's statistics never see another frame
    y = x.clone()
    y[:, :, 2] *= 10
    assert torch.equal(norm(x)[:, :, :2], norm(y)[:, :, :2])
    norm.time_pooled = True
    assert torch.allclose(norm(x), F.group_norm(x, 2, norm.weight, norm.bias, 1e-6), atol=1e-5)


def test_adaptive_group_norm_maps_latent_frames_causally():
    torch.manual_seed(0)
    ada = AdaptiveGroupNorm(z_channels=3, channels=4, num_groups=2)
    q = torch.randn(1, 3, 3, 2, 2)  # 3 latent frames
    x = torch.randn(1, 4, 5, 4, 4)  # rate 2: 1 + 2*2 frames
    out = ada(x, q, rate=2)
    normed = torch.stack([F.group_norm(x[:, :, t], 2, eps=1e-6) for t in range(5)], dim=2)
    for t in range(5):
        j = math.ceil(t / 2)
        flat = q[:, :, j].flatten(2)
        std = (flat.var(dim=-1) + 1e-6).sqrt()  # unbiased variance, as Open-MAGVIT2
        scale, shift = ada.gamma(std), ada.beta(flat.mean(dim=-1))
        ref = normed[:, :, t] * scale[..., None, None] + shift[..., None, None]
        assert torch.allclose(out[:, :, t], ref, atol=1e-5), t
    # chunked: latent frames [0, 1] then [2] give frames [0..2] then [3, 4]
    cache = CausalCache()
    a = ada(x[:, :, :3], q[:, :, :2], rate=2, cache=cache)
    b = ada(x[:, :, 3:], q[:, :, 2:], rate=2, cache=cache)
    assert torch.allclose(torch.cat([a, b], dim=2), out, atol=1e-6)
    with pytest.raises(ValueError, match="latent frames"):
        ada(x[:, :, :4], q, rate=2)


def test_depth_to_space_channel_order():
    c, bt, bh, bw = 2, 2, 2, 3
    x = torch.randn(1, c * bt * bh * bw, 2, 3, 4)
    out = depth_to_space_3d(x, (bt, bh, bw))
    assert out.shape == (1, c, 4, 6, 12)
    for it in range(bt):
        for ih in range(bh):
            for iw in range(bw):
                for ci in range(c):
                    channel = ((it * bh + ih) * bw + iw) * c + ci
                    assert torch.equal(out[0, ci, it::bt, ih::bh, iw::bw], x[0, channel])


def test_upsampler_first_frame_and_chunks():
    torch.manual_seed(0)
    up = Upsampler(4, (2, 2, 2))
    x = torch.randn(1, 4, 4, 3, 3)
    full = depth_to_space_3d(up.conv1(x), (2, 2, 2))
    out = up(x)
    assert out.shape == (1, 4, 7, 6, 6)  # 1 + k -> 1 + 2k
    assert torch.equal(out[:, :, :1], full[:, :, :1])
    assert torch.equal(out[:, :, 1:], full[:, :, 2:])  # frame index 1 dropped
    assert up(x[:, :, :1]).shape[2] == 1  # an image stays one frame
    assert torch.allclose(_run_chunks(up, x, [1, 2, 1]), out, atol=1e-6)
    spatial = Upsampler(4, (1, 2, 2))
    assert spatial(x).shape == (1, 4, 4, 6, 6)


def test_resblock_shortcut_and_chunks():
    torch.manual_seed(0)
    block = ResBlock(4, 8, num_groups=2)
    x = torch.randn(1, 4, 6, 4, 4)
    h = block.conv1(F.silu(block.norm1(x)))
    ref = block.conv2(F.silu(block.norm2(h))) + block.nin_shortcut(x)
    assert torch.allclose(block(x), ref, atol=1e-6)
    assert torch.allclose(_run_chunks(block, x, [1, 3, 2]), block(x), atol=1e-5)
    same = ResBlock(4, 4, num_groups=2)
    assert same.nin_shortcut is None


def test_causal_conv_image_fast_path_equals_zero_padded_conv():
    """A one-frame input takes a 2D shortcut; it must equal the zero-padded 3D convolution."""
    from magvit2.modules.causal import CausalCache, CausalConv3d

    torch.manual_seed(0)
    for stride in (1, (2, 2, 2), (1, 2, 2)):
        conv = CausalConv3d(3, 5, 3, stride=stride)
        x = torch.randn(2, 3, 1, 8, 8)
        fast = conv(x)
        padded = conv.conv_1(torch.cat([torch.zeros(2, 3, 2, 8, 8), x], dim=2))
        assert torch.allclose(fast, padded, atol=1e-6)
        assert torch.allclose(conv(x, CausalCache()), padded, atol=1e-6)  # chunked path, no shortcut


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch build")
def test_conv3d_always_takes_onednn_on_cpu_with_the_same_values_and_gradients():
    """A small clip, where PyTorch's own rule (B*C*T*H > 20480) picks its slow im2col path: our
    helper runs oneDNN instead and gives the same output (float32 rounding) and the same gradients."""
    from torch.profiler import profile

    from magvit2.modules.causal import conv3d

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 6, 3, stride=(1, 2, 2), padding=(0, 1, 1))
    x = torch.randn(1, 4, 5, 12, 10)

    def kernels(fn) -> set[str]:
        with profile() as prof:
            fn()
        return {event.key for event in prof.key_averages()}

    assert "aten::slow_conv3d_forward" in kernels(lambda: conv(x))  # PyTorch's choice here
    assert "aten::mkldnn_convolution" in kernels(lambda: conv3d(conv, x))
    results = []
    for fn in (conv, lambda t: conv3d(conv, t)):
        conv.zero_grad()
        xg = x.clone().requires_grad_(True)
        out = fn(xg)
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
        results.append((out.detach(), xg.grad, conv.weight.grad.clone(), conv.bias.grad.clone()))
    for ref, got in zip(*results, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # autocast still applies
        assert conv3d(conv, x).dtype == torch.bfloat16
    with torch.no_grad():  # torch.compile traces it (through nn.Conv3d)
        traced = torch.compile(lambda t: conv3d(conv, t), backend="eager", fullgraph=True)
        torch.testing.assert_close(traced(x), results[0][0], rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # padding given by name is left to nn.Conv3d
        same = torch.nn.Conv3d(4, 6, 3, padding="same")
        assert torch.equal(conv3d(same, x), same(x))
    with torch.no_grad():  # other dtypes keep PyTorch's choice
        assert torch.equal(conv3d(conv.double(), x.double()), conv(x.double()))
