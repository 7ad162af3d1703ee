"""GAN objectives and regularisers: hinge / non-saturating losses, LeCam, R1, the adaptive weight.

All logits are tensors of any shape (one per clip for :class:`~magvit2.losses.Discriminator3D`); losses
are means over their elements.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ADVERSARIAL_LOSSES = ("hinge", "non_saturating")


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator hinge loss ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))`` (no 1/2 factor)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def non_saturating_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator logistic loss ``mean(softplus(-D(x))) + mean(softplus(D(G(z))))``
    (binary cross-entropy with real = 1, fake = 0)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator hinge loss ``-mean(D(G(z)))``."""
    return -fake_logits.mean()


def non_saturating_g_loss(fake_logits: Tensor) -> Tensor:
    """Generator non-saturating loss ``mean(softplus(-D(G(z))))`` = BCE of fakes against label 1."""
    return F.softplus(-fake_logits).mean()


def d_loss_fn(kind: str, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss of ``kind`` (``"hinge"`` or ``"non_saturating"``)."""
    if kind == "hinge":
        return hinge_d_loss(real_logits, fake_logits)
    if kind == "non_saturating":
        return non_saturating_d_loss(real_logits, fake_logits)
    raise ValueError(f"adversarial loss must be one of {ADVERSARIAL_LOSSES}, got {kind!r}")


def g_loss_fn(kind: str, fake_logits: Tensor) -> Tensor:
    """Generator loss of ``kind`` (``"hinge"`` or ``"non_saturating"``)."""
    if kind == "hinge":
        return hinge_g_loss(fake_logits)
    if kind == "non_saturating":
        return non_saturating_g_loss(fake_logits)
    raise ValueError(f"generator adversarial loss must be one of {ADVERSARIAL_LOSSES}, got {kind!r}")


class LeCam(nn.Module):
    """LeCam regulariser (Tseng et al., CVPR 2021) with exponential moving averages of the logits.

    ``forward(real, fake)`` first updates (in training mode) ``ema_real <- d * ema_real + (1-d) * mean(real)``
    and the same for ``ema_fake`` (both start at 0, as in Open-MAGVIT2), then returns
    ``mean(relu(real - ema_fake)**2) + mean(relu(ema_real - fake)**2)``. The averages are buffers, so a
    checkpoint of the owning module keeps them.
    """

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    @torch.no_grad()
    def update(self, real_logits: Tensor, fake_logits: Tensor) -> None:
        """Move the averages towards this batch's mean logits."""
        d = self.decay
        self.ema_real.mul_(d).add_((1.0 - d) * real_logits.detach().float().mean())
        self.ema_fake.mul_(d).add_((1.0 - d) * fake_logits.detach().float().mean())

    def forward(self, real_logits: Tensor, fake_logits: Tensor) -> Tensor:
        """Regulariser value (scalar); updates the averages first when ``self.training``."""
        if self.training:
            self.update(real_logits, fake_logits)
        ema_real = self.ema_real.to(real_logits.dtype)
        ema_fake = self.ema_fake.to(real_logits.dtype)
        return F.relu(real_logits - ema_fake).pow(2).mean() + F.relu(ema_real - fake_logits).pow(2).mean()


def r1_penalty(real_logits: Tensor, real_inputs: Tensor) -> Tensor:
    """R1 gradient penalty ``mean_b ||d sum D(x) / d x_b||^2`` (Mescheder et al. 2018), unweighted.

    ``real_inputs`` must have ``requires_grad=True`` and ``real_logits`` must be computed from it; the
    result is differentiable w.r.t. the discriminator (``create_graph=True``). Multiply by the weight
    (MAGVIT-v1 used 10; this is the full squared norm, without StyleGAN's 1/2).
    """
    if not real_inputs.requires_grad:
        raise ValueError("r1_penalty needs real_inputs with requires_grad=True (set it before calling D)")
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.pow(2).flatten(1).sum(dim=1).mean()


def adaptive_generator_weight(
    rec_loss: Tensor,
    g_loss: Tensor,
    last_layer: Tensor,
    max_weight: float = 1e4,
    eps: float = 1e-4,
) -> Tensor:
    """VQGAN's adaptive weight ``||dL_rec/dW|| / (||dL_G/dW|| + eps)``, clamped to ``[0, max_weight]``,
    detached; ``W`` is the decoder's last layer weight. Both losses keep their graphs."""
    (rec_grad,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_grad,) = torch.autograd.grad(g_loss, last_layer, retain_graph=True)
    weight = rec_grad.norm() / (g_grad.norm() + eps)
    return weight.clamp(0.0, max_weight).detach()
