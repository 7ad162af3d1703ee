"""Refinement distillation loss: the logistic sign loss and the squared error, with known values."""

from __future__ import annotations

import math

import pytest
import torch

from magvit2.losses.distillation import LOGISTIC_SCALE, distillation_loss
from magvit2.losses.tokenizer_loss import LossConfig


def test_binary_codes_logistic_loss_values_and_direction():
    target = torch.tensor([1.0, -1.0, 1.0, -1.0]).reshape(1, 4, 1, 1, 1)
    zero = torch.zeros_like(target, requires_grad=True)
    loss = distillation_loss(zero, target, binary=True)
    assert float(loss.detach()) == pytest.approx(math.log(2))  # softplus(0)
    loss.backward()
    assert torch.equal(torch.sign(-zero.grad), target)  # descending moves each sign toward its target
    z = torch.tensor([0.5, 0.5, -2.0, -1.0]).reshape(1, 4, 1, 1, 1)
    pairs = zip([1, -1, 1, -1], [0.5, 0.5, -2, -1], strict=True)
    expected = sum(math.log1p(math.exp(-LOGISTIC_SCALE * t * v)) for t, v in pairs)
    assert float(distillation_loss(z, target, binary=True)) == pytest.approx(expected / 4, rel=1e-6)
    assert float(distillation_loss(10 * target, target, binary=True)) < 1e-10


def test_other_codes_squared_error_and_checks():
    z, c = torch.randn(2, 3, 1, 2, 2), torch.randn(2, 3, 1, 2, 2)
    mse = float(((z - c) ** 2).mean())
    assert float(distillation_loss(z, c, binary=False)) == pytest.approx(mse, rel=1e-6)
    with pytest.raises(ValueError, match="latent .* and target codes .* differ"):
        distillation_loss(z, c[:, :2], binary=False)
    with pytest.raises(ValueError, match="needs distill_steps >= 1 and distill_lr > 0"):
        LossConfig(distill_weight=1.0, distill_steps=0)
