"""Discriminator, blur pooling, GAN losses, LeCam, R1, adaptive weight and the entropy schedule."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from magvit2.losses import (
    BlurPool3d,
    Discriminator3D,
    DiscriminatorConfig,
    EntropyWeightSchedule,
    LeCam,
    adaptive_generator_weight,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
    r1_penalty,
)

REAL = [0.5, 2.0, -1.0]
FAKE = [-2.0, 0.3]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def tiny_disc(**kw) -> Discriminator3D:
    torch.manual_seed(0)
    return Discriminator3D(DiscriminatorConfig(channels=4, channel_multipliers=(1, 2), **kw))


# ---------------------------------------------------------------- GAN losses


def test_hinge_and_non_saturating_against_hand_formulas():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    hinge_d = sum(max(0.0, 1 - r) for r in REAL) / 3 + sum(max(0.0, 1 + f) for f in FAKE) / 2
    ns_d = sum(softplus(-r) for r in REAL) / 3 + sum(softplus(f) for f in FAKE) / 2
    assert hinge_d_loss(real, fake).item() == pytest.approx(hinge_d, rel=1e-6)  # 0.8333 + 0.65
    assert hinge_d == pytest.approx(2.5 / 3 + 0.65)
    assert non_saturating_d_loss(real, fake).item() == pytest.approx(ns_d, rel=1e-6)
    assert hinge_g_loss(fake).item() == pytest.approx(-(-2.0 + 0.3) / 2, rel=1e-6)
    assert non_saturating_g_loss(fake).item() == pytest.approx((softplus(2.0) + softplus(-0.3)) / 2, rel=1e-6)


# ---------------------------------------------------------------- LeCam


def test_lecam_matches_hand_computation_with_ema_updates():
    lecam = LeCam(decay=0.9)
    ema_r = ema_f = 0.0
    batches = [([0.5, 2.0, -1.0], [-2.0, 0.3, 0.1]), ([1.5, 0.2, 0.4], [0.9, -0.5, 2.5])]
    for real, fake in batches:
        ema_r = 0.9 * ema_r + 0.1 * sum(real) / 3
        ema_f = 0.9 * ema_f + 0.1 * sum(fake) / 3
        expected = (
            sum(max(0.0, r - ema_f) ** 2 for r in real) / 3 + sum(max(0.0, ema_r - f) ** 2 for f in fake) / 3
        )
        got = lecam(torch.tensor(real), torch.tensor(fake))
        assert got.item() == pytest.approx(expected, rel=1e-5)
        assert lecam.ema_real.item() == pytest.approx(ema_r, rel=1e-6)
        assert lecam.ema_fake.item() == pytest.approx(ema_f, rel=1e-6)
    # averages are checkpointed, and eval mode reads them without updating
    state = lecam.state_dict()
    assert set(state) == {"ema_real", "ema_fake"}
    restored = LeCam(0.9)
    restored.load_state_dict(state)
    restored.eval()
    got = restored(torch.tensor([9.0]), torch.tensor([-9.0]))
    assert restored.ema_real.item() == pytest.approx(ema_r, rel=1e-6)
    assert restored.ema_fake.item() == pytest.approx(ema_f, rel=1e-6)
    assert got.item() == pytest.approx(max(0.0, 9.0 - ema_f) ** 2 + max(0.0, ema_r + 9.0) ** 2, rel=1e-5)


def test_lecam_gradient_flows_to_logits_only():
    lecam = LeCam(0.5)
    real = torch.tensor([2.0, 0.0], requires_grad=True)
    fake = torch.tensor([-1.0, 0.5], requires_grad=True)
    lecam(real, fake).backward()
    # ema_real = 0.5, ema_fake = -0.125 after the update:
    # d/dreal_i mean(relu(real - ema_fake)^2) = 2 (real_i + 0.125) / 2
    torch.testing.assert_close(real.grad, torch.tensor([2.125, 0.125]))
    # d/dfake_i mean(relu(0.5 - fake)^2) = -2 relu(0.5 - fake_i) / 2
    torch.testing.assert_close(fake.grad, torch.tensor([-1.5, 0.0]))


# ---------------------------------------------------------------- R1


def test_r1_closed_form_on_quadratic_discriminator():
    torch.manual_seed(0)
    w = torch.randn(2, 3, requires_grad=True)
    x = torch.randn(4, 2, 3, requires_grad=True)
    logits = (w * x**2).sum(dim=(1, 2))  # D(x) = sum w x^2, so dD/dx = 2 w x
    r1 = r1_penalty(logits, x)
    expected = ((2 * w * x) ** 2).sum(dim=(1, 2)).mean()
    torch.testing.assert_close(r1, expected)
    # differentiable w.r.t. the discriminator: dR1/dw = mean_b 8 w x_b^2
    (gw,) = torch.autograd.grad(r1, w)
    torch.testing.assert_close(gw, (8 * w * x**2).mean(0).detach())


def test_r1_equals_per_sample_autograd_on_tiny_discriminator():
    disc = tiny_disc()
    torch.manual_seed(1)
    real = torch.randn(3, 3, 4, 8, 8)
    x = real.clone().requires_grad_(True)
    r1 = r1_penalty(disc(x), x)
    norms = []
    for b in range(3):
        xb = real[b : b + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(disc(xb).sum(), xb)
        norms.append(g.pow(2).sum())
    torch.testing.assert_close(r1, torch.stack(norms).mean(), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(disc(real), real)


# ---------------------------------------------------------------- adaptive weight


def test_adaptive_weight_is_gradient_norm_ratio():
    torch.manual_seed(0)
    layer = nn.Linear(3, 2, bias=False)
    x = torch.randn(3)
    a = torch.tensor([0.7, -1.3])
    y = layer(x)
    rec = (y**2).sum()
    g = (a * y).sum()
    w = adaptive_generator_weight(rec, g, layer.weight)
    # d rec / dW = 2 y x^T and d g / dW = a x^T, so the ratio is 2|y||x| / (|a||x| + 1e-4)
    expected = 2 * y.norm() * x.norm() / (a.norm() * x.norm() + 1e-4)
    torch.testing.assert_close(w, expected.detach())
    assert not w.requires_grad
    # graphs are kept so the caller can still backpropagate both losses
    (rec + w * g).backward()
    # a generator loss that does not depend on the layer: ratio hits the clamp
    y2 = layer(x)
    g0 = (y2 * 0).sum()
    assert adaptive_generator_weight((y2**2).sum(), g0, layer.weight, max_weight=50.0).item() == 50.0


# ---------------------------------------------------------------- blur pooling and discriminator


def test_blur_pool_constant_stays_constant():
    x = torch.full((2, 3, 4, 8, 6), 3.7)
    y = BlurPool3d()(x)
    assert y.shape == (2, 3, 2, 4, 3)
    torch.testing.assert_close(y, torch.full_like(y, 3.7))


def test_blur_pool_smooths_checkerboard_and_impulse():
    t, h, w = torch.meshgrid(torch.arange(4), torch.arange(8), torch.arange(8), indexing="ij")
    checker = ((-1.0) ** (t + h + w)).expand(1, 2, 4, 8, 8)
    y = BlurPool3d()(checker)
    assert y.shape == (1, 2, 2, 4, 4)
    torch.testing.assert_close(y, torch.zeros_like(y), atol=1e-6, rtol=0)  # +1,-1 -> (1-3+3-1)/8 = 0
    # an impulse along W (T = H = 1 are left alone): reflect pad [x1, x0..x7, x6], taps [1,3,3,1]/8
    imp = torch.zeros(1, 1, 1, 1, 8)
    imp[..., 3] = 8.0
    out = BlurPool3d()(imp)
    assert out.shape == (1, 1, 1, 1, 4)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 3.0, 1.0, 0.0]))
    # along T the same filter applies: a 2-frame clip [a, b] -> (a + 3a + 3b + b) / 8 at every pixel
    two = torch.stack([torch.full((1, 1, 2, 2), 1.0), torch.full((1, 1, 2, 2), 5.0)], dim=2)
    torch.testing.assert_close(BlurPool3d()(two), torch.full((1, 1, 1, 1, 1), 3.0))


def test_discriminator_shapes_images_and_flatten_head():
    disc = tiny_disc()
    torch.manual_seed(2)
    video = torch.randn(2, 3, 5, 16, 16)
    out = disc(video)
    assert out.shape == (2,) and torch.isfinite(out).all()
    # per-clip logits: each sample's logit depends only on that sample
    torch.testing.assert_close(disc(video[1:]), out[1:], rtol=1e-5, atol=1e-6)
    image = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(disc(image), disc(image.unsqueeze(2)))
    flat = tiny_disc(input_size=(4, 16, 16))
    assert flat.fc.in_features == 8 * 1 * 4 * 4  # T 4->2->1, H/W 16->8->4, width 4*2
    assert flat(torch.randn(2, 3, 4, 16, 16)).shape == (2,)
    with pytest.raises(ValueError, match=r"input_size.*\(4, 16, 16\)"):
        flat(torch.randn(2, 3, 5, 16, 16))
    with pytest.raises(ValueError, match="Discriminator3D expects"):
        disc(torch.randn(2, 1, 5, 16, 16))


def test_res_block_down_against_functional_recomputation():
    from magvit2.losses import ResBlockDown

    torch.manual_seed(4)
    block = ResBlockDown(3, 5)
    x = torch.randn(2, 3, 4, 6, 6)
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    k3 = taps.view(4, 1, 1) * taps.view(1, 4, 1) * taps.view(1, 1, 4)  # full (not separable) 3D kernel

    def blur(v):
        c = v.shape[1]
        v = F.pad(v, (1, 1, 1, 1, 1, 1), mode="reflect")
        return F.conv3d(v, k3.expand(c, 1, 4, 4, 4), stride=2, groups=c)

    def act(v):
        return F.leaky_relu(v, 0.2)

    h = act(F.conv3d(x, block.conv1.weight, block.conv1.bias, padding=1))
    h = act(F.conv3d(blur(h), block.conv2.weight, block.conv2.bias, padding=1))
    skip = F.conv3d(blur(x), block.skip.weight)
    expected = (h + skip) / math.sqrt(2)
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-6)
    assert expected.shape == (2, 5, 2, 3, 3)


def test_discriminator_default_widths_follow_magvit2_figure():
    cfg = DiscriminatorConfig()
    widths = [cfg.channels] + [cfg.channels * m for m in cfg.channel_multipliers]
    assert widths == [128, 256, 512, 512, 512, 512]


# ---------------------------------------------------------------- entropy weight schedule


def test_entropy_schedule_values():
    lin = EntropyWeightSchedule(1.0, 0.1, anneal_steps=100, delay_steps=10, kind="linear")
    assert [lin(s) for s in (0, 10)] == [1.0, 1.0]
    assert lin(60) == pytest.approx(0.55)
    assert lin(35) == pytest.approx(1.0 - 0.9 * 0.25)
    assert lin(110) == pytest.approx(0.1) and lin(10_000) == pytest.approx(0.1)
    cos = EntropyWeightSchedule(1.0, 0.1, anneal_steps=100, delay_steps=10, kind="cosine")
    assert cos(10) == pytest.approx(1.0)
    assert cos(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))  # 0.868
    assert cos(60) == pytest.approx(0.55)
    assert cos(110) == pytest.approx(0.1)
    assert EntropyWeightSchedule(0.1, 0.1)(12345) == pytest.approx(0.1)
    assert EntropyWeightSchedule(0.5, 0.2, anneal_steps=0, delay_steps=3)(4) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="kind"):
        EntropyWeightSchedule(kind="step")
