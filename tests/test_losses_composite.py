"""TokenizerLoss: the generator / discriminator objectives assembled from their parts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from magvit2.losses import LPIPS, LossConfig, PerceptualLoss, TokenizerLoss
from magvit2.quantizers.base import QuantizerOutput

TINY_D = {"disc_channels": 4, "disc_channel_multipliers": (1, 2)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fake_quantizer_output(z: torch.Tensor, commitment_weight: float = 0.25) -> QuantizerOutput:
    """Sign quantization with a straight-through gradient and a commitment loss (LFQ without entropy)."""
    q = torch.where(z > 0, 1.0, -1.0)
    commitment = (z - q).pow(2).mean()
    return QuantizerOutput(
        codes=z + (q - z).detach(),
        indices=torch.zeros(z.shape[0], *z.shape[2:], dtype=torch.long),
        loss=commitment_weight * commitment,
        commitment=commitment,
        used_codes=torch.tensor(1),
        perplexity=torch.tensor(1.0),
    )


def test_disc_start_switches_the_adversarial_game_on():
    torch.manual_seed(0)
    cfg = LossConfig(l1_weight=1.0, l2_weight=0.5, adversarial_weight=0.1, disc_start=5, lecam_weight=0.0,
                     r1_weight=0.0, **TINY_D)  # fmt: skip
    loss_fn = TokenizerLoss(cfg)
    x = torch.rand(2, 3, 16, 16) * 2 - 1  # images
    recon = (x + 0.2 * torch.randn_like(x)).requires_grad_(True)
    q = fake_quantizer_output(torch.randn(2, 4, 2, 2, requires_grad=True))
    base = (recon - x).abs().mean() + 0.5 * (recon - x).pow(2).mean() + q.loss

    total, logs = loss_fn(x, recon, q, step=4)
    torch.testing.assert_close(total, base)
    assert logs["adversarial_weight"].item() == 0.0 and "g_adversarial" not in logs
    total.backward()
    assert all(p.grad is None for p in loss_fn.discriminator.parameters())
    assert not loss_fn.disc_active(4) and loss_fn.disc_active(5)
    d_loss, d_logs = loss_fn.discriminator_loss(x, recon, step=4)
    assert d_loss.item() == 0.0 and not d_loss.requires_grad

    total, logs = loss_fn(x, recon, q, step=5)
    with torch.no_grad():
        g = F.softplus(-loss_fn.discriminator(recon)).mean()  # non-saturating generator loss
    torch.testing.assert_close(total, base + 0.1 * g)
    torch.testing.assert_close(logs["g_adversarial"], g)
    assert logs["adversarial_weight"].item() == pytest.approx(0.1)
    torch.testing.assert_close(logs["commitment"], q.commitment.detach())


def test_discriminator_loss_is_hinge_plus_lecam_plus_r1():
    torch.manual_seed(1)
    cfg = LossConfig(adversarial_loss="hinge", lecam_weight=0.5, lecam_decay=0.9, r1_weight=2.0, **TINY_D)
    loss_fn = TokenizerLoss(cfg)
    disc = loss_fn.discriminator
    x = torch.randn(3, 3, 4, 8, 8)
    recon = x + torch.randn_like(x)
    d_loss, logs = loss_fn.discriminator_loss(x, recon, step=0)

    with torch.no_grad():
        real, fake = disc(x), disc(recon)
    hinge = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    ema_r, ema_f = 0.1 * real.mean(), 0.1 * fake.mean()
    lecam = F.relu(real - ema_f).pow(2).mean() + F.relu(ema_r - fake).pow(2).mean()
    grads = []
    for b in range(3):
        xb = x[b : b + 1].clone().requires_grad_(True)
        grads.append(torch.autograd.grad(disc(xb).sum(), xb)[0].pow(2).sum())
    r1 = torch.stack(grads).mean()
    torch.testing.assert_close(logs["d_adversarial"], hinge, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["lecam"], lecam, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["r1"], r1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(d_loss, hinge + 0.5 * lecam + 2.0 * r1, rtol=1e-5, atol=1e-6)
    d_loss.backward()
    assert all(p.grad is not None for p in disc.parameters())
    state = loss_fn.state_dict()
    torch.testing.assert_close(state["lecam.ema_real"], ema_r)

    # lazy R1: only on every second step, then scaled by 2
    lazy = TokenizerLoss(LossConfig(lecam_weight=0.0, r1_weight=2.0, r1_every=2, **TINY_D))
    lazy.discriminator.load_state_dict(disc.state_dict())
    _, logs3 = lazy.discriminator_loss(x, recon, step=3)
    assert "r1" not in logs3
    d4, logs4 = lazy.discriminator_loss(x, recon, step=4)
    torch.testing.assert_close(d4, logs4["d_adversarial"] + 2.0 * 2 * r1, rtol=1e-5, atol=1e-6)


def test_adaptive_weight_wiring():
    torch.manual_seed(2)
    cfg = LossConfig(adaptive_weight=True, adversarial_weight=0.1, **TINY_D)
    loss_fn = TokenizerLoss(cfg)
    decoder = nn.Conv3d(4, 3, 3, padding=1)
    latent = torch.randn(2, 4, 2, 8, 8)
    x = torch.randn(2, 3, 2, 8, 8)
    recon = decoder(latent)
    total, logs = loss_fn(x, recon, None, step=0, last_layer=decoder.weight)
    rec = (recon - x).abs().mean()
    g = F.softplus(-loss_fn.discriminator(recon)).mean()
    (gr,) = torch.autograd.grad(rec, decoder.weight, retain_graph=True)
    (gg,) = torch.autograd.grad(g, decoder.weight, retain_graph=True)
    expected = 0.1 * gr.norm() / (gg.norm() + 1e-4)
    torch.testing.assert_close(logs["adversarial_weight"], expected)
    torch.testing.assert_close(total, rec + expected * g)
    with pytest.raises(ValueError, match="last_layer"):
        loss_fn(x, decoder(latent), None, step=0)
    # without gradients (validation) the base weight is used
    with torch.no_grad():
        _, logs = loss_fn(x, decoder(latent), None, step=0)
    assert logs["adversarial_weight"].item() == pytest.approx(0.1)


def test_config_validation_and_checkpoint_contents(tmp_path):
    with pytest.raises(ValueError, match="adversarial_loss"):
        LossConfig(adversarial_loss="wasserstein")
    with pytest.raises(ValueError, match="l1_weight"):
        LossConfig(l1_weight=-1.0)
    assert TokenizerLoss(LossConfig(adversarial_weight=0.0)).discriminator is None
    torch.save(LPIPS().state_dict(), tmp_path / "lpips.pth")
    loss_fn = TokenizerLoss(LossConfig(perceptual_path=str(tmp_path / "lpips.pth"), **TINY_D))
    keys = set(loss_fn.state_dict())
    assert {"lecam.ema_real", "lecam.ema_fake"} <= keys
    assert any(k.startswith("discriminator.") for k in keys)
    assert not any(k.startswith("perceptual") for k in keys)
    TokenizerLoss(LossConfig(perceptual_path=str(tmp_path / "lpips.pth"), **TINY_D)).load_state_dict(
        loss_fn.state_dict(), strict=True
    )
    sched = LossConfig(entropy_weight_start=0.3, entropy_weight_end=0.1, entropy_anneal_steps=10,
                       entropy_anneal_kind="linear").entropy_schedule()  # fmt: skip
    assert sched(5) == pytest.approx(0.2)


def test_one_step_of_a_toy_generator_reduces_the_total_loss(tmp_path):
    torch.manual_seed(3)
    lpips = LPIPS()
    for head in lpips.heads():
        nn.init.uniform_(head.model[1].weight, 0.0, 1.0)
    torch.save(lpips.state_dict(), tmp_path / "lpips.pth")
    cfg = LossConfig(
        l1_weight=1.0,
        l2_weight=1.0,
        perceptual_weight=0.1,
        perceptual_path=str(tmp_path / "lpips.pth"),
        adversarial_weight=0.1,
        lecam_weight=0.01,
        r1_weight=10.0,
        **TINY_D,
    )
    loss_fn = TokenizerLoss(cfg)
    encoder = nn.Conv3d(3, 4, 1)
    decoder = nn.Conv3d(4, 3, 3, padding=1)
    params = [*encoder.parameters(), *decoder.parameters()]
    opt = torch.optim.SGD(params, lr=1e-2)
    x = torch.rand(2, 3, 2, 16, 16) * 2 - 1

    def total_loss() -> tuple[torch.Tensor, dict]:
        q = fake_quantizer_output(encoder(x))
        return loss_fn(x, decoder(q.codes), q, step=0, last_layer=decoder.weight)

    before, logs = total_loss()
    assert {"l1", "l2", "perceptual", "g_adversarial", "commitment", "total"} <= set(logs)
    assert logs["perceptual"] > 0
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after, _ = total_loss()
    assert after.item() < before.item(), (before.item(), after.item())
    # the discriminator step runs too, and its gradients reach only the discriminator
    q = fake_quantizer_output(encoder(x))
    d_loss, d_logs = loss_fn.discriminator_loss(x, decoder(q.codes), step=0)
    for p in params:
        p.grad = None
    d_loss.backward()
    assert all(p.grad is None for p in params)
    assert {"d_adversarial", "lecam", "r1"} <= set(d_logs)


def test_total_is_the_weighted_sum_including_perceptual(tmp_path):
    """Without GAN and quantizer: total = l1_w * L1 + l2_w * L2 + perceptual_w * LPIPS, each computed
    on its own (LPIPS by a separate PerceptualLoss on the same weights)."""
    torch.manual_seed(3)
    lpips = LPIPS()
    for head in lpips.heads():
        nn.init.uniform_(head.model[1].weight, 0.0, 1.0)
    torch.save(lpips.state_dict(), tmp_path / "lpips.pth")
    cfg = LossConfig(
        l1_weight=1.0, l2_weight=0.5, perceptual_weight=0.3, perceptual_path=str(tmp_path / "lpips.pth"),
        adversarial_weight=0.0,
    )  # fmt: skip
    x = torch.rand(2, 3, 2, 16, 16) * 2 - 1
    recon = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    with torch.no_grad():
        total, _ = TokenizerLoss(cfg)(x, recon, None, step=0)
        perceptual = PerceptualLoss(tmp_path / "lpips.pth")(x, recon)
    assert float(perceptual) > 0.01
    expected = (recon - x).abs().mean() + 0.5 * (recon - x).pow(2).mean() + 0.3 * perceptual
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-6)
