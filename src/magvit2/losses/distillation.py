"""Refinement distillation: teach the encoder the tokens that token refinement finds.

Token refinement (:mod:`magvit2.inference.refine`) searches, per clip, for tokens that the decoder
turns into a closer reconstruction than the encoder's own. Distillation makes those searched tokens a
training target for the encoder, so that its one pass moves toward them (as in "amortised inference"
with iterative refinement): per batch, ``steps`` refinement steps give target codes ``c*`` and

    binary codes (LFQ, +-1):  loss = mean softplus(-k * c* * z)      (logistic loss on each sign)
    other codes (VQ, FSQ):    loss = mean (z - c*)^2

with ``z`` the encoder's latent before quantization and ``k = 4``. Training the encoder on the
reconstruction loss alone through a frozen decoder did not close the gap (README, "Where the missing
quality is"); this target did move it (README, "Refinement distillation").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from magvit2.inference.refine import RefineOptions, refine_ids

LOGISTIC_SCALE = 4.0


def refined_target_codes(model, latent: Tensor, video: Tensor, options: RefineOptions) -> Tensor:
    """Codes ``(B, Z, n, h, w)`` of the tokens that ``options.steps`` refinement steps find for
    ``video`` ``(B, 3, T, H, W)`` starting from ``latent`` ``(B, Z, n, h, w)``; no gradient, weights
    untouched."""
    ids, _ = refine_ids(model, latent.detach(), video.detach(), options)
    with torch.no_grad():
        return model.quantizer.indices_to_codes(ids).to(latent.dtype)


def distillation_loss(latent: Tensor, target_codes: Tensor, binary: bool) -> Tensor:
    """Scalar loss pulling the encoder's ``latent`` toward ``target_codes`` (same shape): a logistic
    loss on the signs for binary (+-1) codes, mean squared error otherwise."""
    if latent.shape != target_codes.shape:
        raise ValueError(f"latent {tuple(latent.shape)} and target codes {tuple(target_codes.shape)} differ")
    target = target_codes.detach().float()
    if binary:
        return F.softplus(-LOGISTIC_SCALE * torch.sign(target) * latent.float()).mean()
    return (latent.float() - target).pow(2).mean()
