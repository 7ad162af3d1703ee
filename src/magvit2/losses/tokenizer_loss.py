"""The tokenizer's training objective: reconstruction + perceptual + adversarial + quantizer losses.

Use (one training step)::

    loss_fn = TokenizerLoss(LossConfig(...))
    schedule = loss_fn.config.entropy_schedule()       # the trainer sets the quantizer's entropy weight
    out = model(x)                                      # TokenizerOutput
    g_loss, logs = loss_fn(x, out.reconstruction, out.quantizer, step, last_layer=model.last_layer_weight())
    g_loss.backward(); opt_g.step()                     # opt_g holds only the tokenizer's parameters
    if loss_fn.disc_active(step):
        d_loss, d_logs = loss_fn.discriminator_loss(x, out.reconstruction.detach(), step)
        opt_d.zero_grad(); d_loss.backward(); opt_d.step()

The generator pass runs the discriminator on the reconstruction, so discriminator parameters receive
gradients from ``g_loss``: zero them (``opt_d.zero_grad()``) before the discriminator's backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit2.losses.adversarial import (
    ADVERSARIAL_LOSSES,
    LeCam,
    adaptive_generator_weight,
    d_loss_fn,
    g_loss_fn,
    r1_penalty,
)
from magvit2.losses.discriminator import Discriminator3D, DiscriminatorConfig
from magvit2.losses.perceptual import PerceptualLoss
from magvit2.losses.schedule import EntropyWeightSchedule

if TYPE_CHECKING:
    from magvit2.quantizers.base import QuantizerOutput


@dataclass
class LossConfig:
    """Weights and options of :class:`TokenizerLoss` (flat, so it maps onto a YAML section).

    Defaults follow MAGVIT-v1/v2 (Yu et al. 2023, 2024) unless noted:

    Attributes:
        l1_weight: weight of ``mean|x - x_hat|`` (1.0; Open-MAGVIT2 trains with L1).
        l2_weight: weight of ``mean (x - x_hat)^2`` (0.0).
        perceptual_weight: weight of LPIPS (0.1, MAGVIT-v1; Open-MAGVIT2 uses 1.0). Only active when
            ``perceptual_path`` is given.
        perceptual_path: local VGG16/LPIPS weight file (see :mod:`magvit2.losses.perceptual`); ``None``
            turns the perceptual loss off.
        perceptual_lin_path: optional separate file of LPIPS linear heads (richzhang's ``vgg.pth``).
        perceptual_frames: evaluate LPIPS on this many random frames per clip (``None``: all frames).
        adversarial_weight: generator adversarial weight (0.1, MAGVIT-v1 and Open-MAGVIT2). 0 builds
            no discriminator at all.
        adversarial_loss: discriminator loss, ``"hinge"`` (Open-MAGVIT2) or ``"non_saturating"``.
        generator_loss: generator adversarial loss, ``"non_saturating"`` (Open-MAGVIT2) or ``"hinge"``.
        adaptive_weight: multiply ``adversarial_weight`` by VQGAN's gradient-norm ratio at the decoder's
            last layer (off: both MAGVIT-v1 and Open-MAGVIT2 use a fixed weight).
        adaptive_weight_max: clamp of that ratio (1e4, as in taming-transformers).
        disc_start: first step at which the discriminator trains and the generator gets the
            adversarial term (0, Open-MAGVIT2's setting; raise it to pre-train the autoencoder).
        lecam_weight: LeCam regulariser weight (0.02: Open-MAGVIT2's 0.01 at 128 px, relative to a
            hinge loss that it halves (``0.5 * (real + fake)``) and
            :func:`~magvit2.losses.adversarial.hinge_d_loss` does not; MAGVIT-v1 had LeCam implemented
            with weight 0). Chosen because LeCam targets limited-data
            GAN training and costs no extra forward pass.
        lecam_decay: decay of LeCam's logit averages (0.999).
        r1_weight: R1 gradient-penalty weight (10, MAGVIT-v1); 0 turns it off (saves a double backward).
        r1_every: lazy R1: apply every ``r1_every`` discriminator steps, scaled by ``r1_every``.
        quantizer_weight: multiplier of the quantizer's own weighted auxiliary loss ``QuantizerOutput.loss``
            (1.0: the entropy 0.1 and commitment 0.25 weights live in the quantizer).
        entropy_weight_start, entropy_weight_end, entropy_anneal_steps, entropy_anneal_delay,
        entropy_anneal_kind: the entropy-weight schedule (see :meth:`entropy_schedule`). Default is the
            constant 0.1 every MAGVIT-v2 experiment used; its annealing numbers are unpublished.
        disc_channels, disc_channel_multipliers, disc_input_size: :class:`DiscriminatorConfig` sizes
            (MAGVIT-v2: 128, (2, 4, 4, 4, 4)).
    """

    l1_weight: float = 1.0
    l2_weight: float = 0.0
    perceptual_weight: float = 0.1
    perceptual_path: str | None = None
    perceptual_lin_path: str | None = None
    perceptual_frames: int | None = None
    adversarial_weight: float = 0.1
    adversarial_loss: str = "hinge"
    generator_loss: str = "non_saturating"
    adaptive_weight: bool = False
    adaptive_weight_max: float = 1e4
    disc_start: int = 0
    lecam_weight: float = 0.02
    lecam_decay: float = 0.999
    r1_weight: float = 10.0
    r1_every: int = 1
    quantizer_weight: float = 1.0
    entropy_weight_start: float = 0.1
    entropy_weight_end: float = 0.1
    entropy_anneal_steps: int = 0
    entropy_anneal_delay: int = 0
    entropy_anneal_kind: str = "cosine"
    disc_channels: int = 128
    disc_channel_multipliers: tuple[int, ...] = field(default_factory=lambda: (2, 4, 4, 4, 4))
    disc_input_size: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.adversarial_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(
                f"LossConfig.adversarial_loss must be one of {ADVERSARIAL_LOSSES}, "
                f"got {self.adversarial_loss!r}"
            )
        if self.generator_loss not in ADVERSARIAL_LOSSES:
            raise ValueError(
                f"LossConfig.generator_loss must be one of {ADVERSARIAL_LOSSES}, got {self.generator_loss!r}"
            )
        for name in ("l1_weight", "l2_weight", "perceptual_weight", "adversarial_weight", "lecam_weight",
                     "r1_weight", "quantizer_weight"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.r1_every < 1 or self.disc_start < 0:
            raise ValueError(
                f"LossConfig needs r1_every >= 1 and disc_start >= 0, got {self.r1_every}, {self.disc_start}"
            )
        self.disc_channel_multipliers = tuple(self.disc_channel_multipliers)
        self.entropy_schedule()  # validate

    def entropy_schedule(self) -> EntropyWeightSchedule:
        """The quantizer entropy-weight schedule these settings describe."""
        return EntropyWeightSchedule(
            start_weight=self.entropy_weight_start,
            end_weight=self.entropy_weight_end,
            anneal_steps=self.entropy_anneal_steps,
            delay_steps=self.entropy_anneal_delay,
            kind=self.entropy_anneal_kind,
        )

    def discriminator_config(self, in_channels: int = 3) -> DiscriminatorConfig:
        """The :class:`DiscriminatorConfig` these settings describe."""
        return DiscriminatorConfig(
            in_channels=in_channels,
            channels=self.disc_channels,
            channel_multipliers=self.disc_channel_multipliers,
            input_size=self.disc_input_size,
        )


class TokenizerLoss(nn.Module):
    """Generator objective (``forward``) and discriminator objective (``discriminator_loss``).

    Owns the discriminator, the frozen perceptual network and LeCam's averages; its ``state_dict``
    holds the discriminator and LeCam buffers (not the frozen VGG).
    """

    def __init__(self, config: LossConfig | None = None, in_channels: int = 3) -> None:
        super().__init__()
        self.config = cfg = config or LossConfig()
        self.perceptual = PerceptualLoss(cfg.perceptual_path, cfg.perceptual_lin_path, cfg.perceptual_frames)
        self.discriminator = (
            Discriminator3D(cfg.discriminator_config(in_channels)) if cfg.adversarial_weight > 0 else None
        )
        self.lecam = LeCam(cfg.lecam_decay)

    def disc_active(self, step: int) -> bool:
        """Whether the adversarial game is on at ``step`` (a discriminator exists and step >= disc_start)."""
        return self.discriminator is not None and step >= self.config.disc_start

    def reconstruction_loss(self, x: Tensor, x_hat: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted L1 + L2 + perceptual ("nll" in VQGAN terms) of ``x_hat`` against ``x`` -> scalar, logs."""
        cfg = self.config
        l1 = (x_hat - x).abs().mean()
        l2 = F.mse_loss(x_hat, x)
        loss = cfg.l1_weight * l1 + cfg.l2_weight * l2
        logs = {"l1": l1.detach(), "l2": l2.detach()}
        if self.perceptual.enabled and cfg.perceptual_weight > 0:
            p = self.perceptual(x, x_hat)
            loss = loss + cfg.perceptual_weight * p
            logs["perceptual"] = p.detach()
        logs["reconstruction"] = loss.detach()
        return loss, logs

    def forward(
        self,
        inputs: Tensor,
        reconstructions: Tensor,
        quantizer_output: QuantizerOutput | None,
        step: int,
        last_layer: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Total generator loss (scalar) and a dict of detached logged components.

        Args:
            inputs: ``(B, C, T, H, W)`` videos or ``(B, C, H, W)`` images, in ``[-1, 1]``.
            reconstructions: the tokenizer's output, same shape.
            quantizer_output: the quantizer's :class:`QuantizerOutput` (``.loss`` is added); ``None``
                for a plain autoencoder.
            step: global optimiser step (for ``disc_start``).
            last_layer: weight of the decoder's last layer, required when ``adaptive_weight`` is on.
        """
        if inputs.shape != reconstructions.shape:
            raise ValueError(
                f"TokenizerLoss: inputs {tuple(inputs.shape)} and reconstructions "
                f"{tuple(reconstructions.shape)} differ in shape"
            )
        cfg = self.config
        nll, logs = self.reconstruction_loss(inputs, reconstructions)
        total = nll
        adv_weight = reconstructions.new_zeros(())
        if self.disc_active(step) and cfg.adversarial_weight > 0:
            g_loss = g_loss_fn(cfg.generator_loss, self.discriminator(reconstructions))
            adv_weight = adv_weight + cfg.adversarial_weight
            if cfg.adaptive_weight and torch.is_grad_enabled() and nll.requires_grad:
                if last_layer is None:
                    raise ValueError("TokenizerLoss: adaptive_weight=True needs last_layer (decoder weight)")
                adv_weight = cfg.adversarial_weight * adaptive_generator_weight(
                    nll, g_loss, last_layer, max_weight=cfg.adaptive_weight_max
                )
            total = total + adv_weight * g_loss
            logs["g_adversarial"] = g_loss.detach()
        logs["adversarial_weight"] = adv_weight.detach()
        if quantizer_output is not None:
            total = total + cfg.quantizer_weight * quantizer_output.loss
            logs["quantizer"] = quantizer_output.loss.detach()
            logs["commitment"] = quantizer_output.commitment.detach()
            for name in ("per_token_entropy", "codebook_entropy", "used_codes", "perplexity"):
                value = getattr(quantizer_output, name, None)
                if value is not None:
                    logs[name] = value.detach()
        logs["total"] = total.detach()
        return total, logs

    def discriminator_loss(
        self, inputs: Tensor, reconstructions: Tensor, step: int
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Discriminator loss (scalar) and logs; a constant 0 (no graph) before ``disc_start``.

        ``d_loss(real, fake) + lecam_weight * LeCam + r1_weight * r1_every * R1`` (R1 on steps where
        ``step % r1_every == 0``). Inputs are detached here.
        """
        cfg = self.config
        if not self.disc_active(step):
            zero = inputs.new_zeros(())
            return zero, {"d_loss": zero}
        real = inputs.detach()
        fake = reconstructions.detach()
        use_r1 = cfg.r1_weight > 0 and step % cfg.r1_every == 0 and torch.is_grad_enabled()
        if use_r1:
            real = real.requires_grad_(True)
        logits = self.discriminator(torch.cat([real, fake], dim=0))
        real_logits, fake_logits = logits[: real.shape[0]], logits[real.shape[0] :]
        adv = d_loss_fn(cfg.adversarial_loss, real_logits, fake_logits)
        loss = adv
        logs = {
            "d_adversarial": adv.detach(),
            "logits_real": real_logits.detach().mean(),
            "logits_fake": fake_logits.detach().mean(),
        }
        if cfg.lecam_weight > 0:
            lecam = self.lecam(real_logits, fake_logits)
            loss = loss + cfg.lecam_weight * lecam
            logs["lecam"] = lecam.detach()
        if use_r1:
            r1 = r1_penalty(real_logits, real)
            loss = loss + cfg.r1_weight * cfg.r1_every * r1
            logs["r1"] = r1.detach()
        logs["d_loss"] = loss.detach()
        return loss, logs
