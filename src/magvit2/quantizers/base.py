"""The interface every quantizer implements.

A quantizer maps a channels-first latent ``z`` of shape ``(B, D, *spatial)`` to

* ``codes``: the quantized latent, same shape and dtype family as ``z``, with a straight-through
  gradient (``z + (q - z).detach()``) so the encoder is trained through it;
* ``indices``: int64 token ids of shape ``(B, *spatial)`` in ``[0, codebook_size)``;
* auxiliary losses and usage statistics (see :class:`QuantizerOutput`).

``indices_to_codes`` is the inverse of the token-id map, so ``decode(ids)`` works with any quantizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    """What a quantizer returns.

    Attributes:
        codes: quantized latent ``(B, D, *spatial)`` with a straight-through gradient.
        indices: token ids, int64 ``(B, *spatial)``.
        loss: weighted sum of the auxiliary losses (scalar); add it to the training loss.
        commitment: mean squared distance between ``z`` and its code (scalar, unweighted).
        per_token_entropy: mean entropy of each token's soft assignment (LFQ), else ``None``.
        codebook_entropy: entropy of the batch-mean soft assignment (LFQ), else ``None``.
        used_codes: number of distinct ids in this batch (int tensor, no gradient).
        perplexity: ``exp(entropy of the id histogram of this batch)`` (no gradient).
    """

    codes: Tensor
    indices: Tensor
    loss: Tensor
    commitment: Tensor
    used_codes: Tensor
    perplexity: Tensor
    per_token_entropy: Tensor | None = None
    codebook_entropy: Tensor | None = None


class Quantizer(nn.Module):
    """Base class: input checks, usage statistics and the attributes every quantizer exposes.

    Subclasses set ``self.dim`` (channels of ``z``) and ``self.codebook_size`` and implement
    ``forward``, ``indices_to_codes`` and ``codes_to_indices``.
    """

    dim: int
    codebook_size: int

    @property
    def bits_per_token(self) -> float:
        """log2 of the vocabulary size: the information one token carries."""
        return math.log2(self.codebook_size)

    def check_input(self, z: Tensor) -> None:
        """Raise a ValueError naming the expectation if ``z`` is not a finite float ``(B, dim, ...)``."""
        name = type(self).__name__
        if not isinstance(z, Tensor):
            raise ValueError(f"{name} expects a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise ValueError(f"{name} expects a floating-point latent, got dtype {z.dtype}")
        if z.ndim < 2 or z.shape[1] != self.dim:
            raise ValueError(
                f"{name} expects a channels-first latent (B, {self.dim}, *spatial), "
                f"got shape {tuple(z.shape)}"
            )
        if not torch.isfinite(z).all():
            raise ValueError(f"{name} got a latent with NaN or Inf values (shape {tuple(z.shape)})")

    def check_indices(self, indices: Tensor) -> None:
        """Raise a ValueError if ``indices`` are not integer ids in ``[0, codebook_size)``."""
        name = type(self).__name__
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ValueError(f"{name} expects integer token ids, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"{name} token ids must lie in [0, {self.codebook_size}), "
                f"got range [{int(indices.min())}, {int(indices.max())}]"
            )

    @staticmethod
    def usage(indices: Tensor) -> tuple[Tensor, Tensor]:
        """Distinct ids and perplexity ``exp(H(histogram))`` of a batch of ids (any shape)."""
        with torch.no_grad():
            _, counts = torch.unique(indices.reshape(-1), return_counts=True)
            p = counts.double() / counts.sum()
            perplexity = torch.exp(-(p * p.log()).sum()).float()
            return torch.tensor(counts.numel(), device=indices.device), perplexity

    def forward(self, z: Tensor) -> QuantizerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def indices_to_codes(self, indices: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Token ids ``(B, *spatial)`` -> codes ``(B, dim, *spatial)``."""
        raise NotImplementedError

    def codes_to_indices(self, codes: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Codes (or any latent) ``(B, dim, *spatial)`` -> token ids ``(B, *spatial)``."""
        raise NotImplementedError


def world_size() -> int:
    """Number of processes in the default torch.distributed group (1 when not initialised)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` in place over all ranks when torch.distributed runs with more than one process
    (quantizer statistics: code counts, EMA sums, usage)."""
    if world_size() > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t
