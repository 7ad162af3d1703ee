"""magvit2.losses: the tokenizer's training objectives, kept apart from the model.

* :mod:`~magvit2.losses.perceptual`: LPIPS on VGG16 features from a local weight file.
* :mod:`~magvit2.losses.discriminator`: MAGVIT's 3D StyleGAN-like discriminator with blur pooling.
* :mod:`~magvit2.losses.adversarial`: hinge / non-saturating losses, LeCam, R1, adaptive weight.
* :mod:`~magvit2.losses.schedule`: the annealed entropy-weight schedule.
* :mod:`~magvit2.losses.tokenizer_loss`: :class:`LossConfig` and the composite :class:`TokenizerLoss`.
"""

from magvit2.losses.adversarial import (
    LeCam,
    adaptive_generator_weight,
    hinge_d_loss,
    hinge_g_loss,
    non_saturating_d_loss,
    non_saturating_g_loss,
    r1_penalty,
)
from magvit2.losses.discriminator import BlurPool3d, Discriminator3D, DiscriminatorConfig, ResBlockDown
from magvit2.losses.perceptual import LPIPS, PerceptualLoss, VGG16Features
from magvit2.losses.schedule import EntropyWeightSchedule
from magvit2.losses.tokenizer_loss import LossConfig, TokenizerLoss

__all__ = [
    "BlurPool3d",
    "Discriminator3D",
    "DiscriminatorConfig",
    "EntropyWeightSchedule",
    "LPIPS",
    "LeCam",
    "LossConfig",
    "PerceptualLoss",
    "ResBlockDown",
    "TokenizerLoss",
    "VGG16Features",
    "adaptive_generator_weight",
    "hinge_d_loss",
    "hinge_g_loss",
    "non_saturating_d_loss",
    "non_saturating_g_loss",
    "r1_penalty",
]
