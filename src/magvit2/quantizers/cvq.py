"""Clustered vector quantization (CVQ; Zheng & Vedaldi 2023, "Online Clustered Codebook").

A learned-codebook VQ (see :class:`magvit2.quantizers.vq.VQ`) that keeps every code alive. In
training mode each step

1. updates a running usage ``u_k <- decay * u_k + (1 - decay) * p_k`` where ``p_k`` is the fraction
   of this batch's tokens assigned to code ``k``;
2. picks an *anchor* feature ``a_k`` from the current batch for every code;
3. moves each code towards its anchor with a rate that is ~1 for unused codes and ~0 for used ones:
   ``e_k <- (1 - alpha_k) e_k + alpha_k a_k``, ``alpha_k = exp(-u_k K revive_rate / (1 - decay) - 1e-3)``.

With the defaults a code whose usage is the uniform share ``1/K`` gets ``alpha = exp(-1000)`` (untouched)
while a code below ``(1 - decay) / (K revive_rate)`` (one thousandth of its share) gets ``alpha > 1/e``.
The usage starts at zero and is updated before ``alpha`` is computed, so the first training step
seeds from batch features every code that batch did not use, and keeps the codes it used.

Distributed (torch.distributed initialised with world size > 1): the per-batch usage ``p`` is averaged
over ranks before the EMA, and the re-seeded codebook is broadcast from rank 0 (anchors from rank 0),
so every rank keeps an identical codebook.
"""

from __future__ import annotations

import torch
from torch import Tensor

from magvit2.quantizers.base import all_reduce_sum, world_size
from magvit2.quantizers.vq import VQ, squared_distances

ANCHORS = ("random", "closest", "probrandom")


class CVQ(VQ):
    """VQ whose under-used codes are re-seeded towards encoder features of the current batch.

    Args:
        dim, codebook_size, commitment_weight, codebook_weight, l2_normalize, chunk_elements:
            as :class:`~magvit2.quantizers.vq.VQ` (the codebook is learned by gradient: no EMA).
        decay: decay of the running code usage.
        anchor: how each code's anchor feature is chosen from the batch tokens:
            ``random`` (a uniformly drawn token), ``closest`` (the token nearest to the code) or
            ``probrandom`` (a token drawn with probability ``softmax(-||x - e_k||^2)`` over tokens;
            with ``l2_normalize`` that is ``softmax(2 cos(x, e_k))``, twice as sharp as the reference
            code's ``softmax(cos)``).
        revive_rate: sharpness of ``alpha_k`` (10 in the paper).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        l2_normalize: bool = False,
        decay: float = 0.99,
        anchor: str = "random",
        revive_rate: float = 10.0,
        chunk_elements: int = 2**24,
    ) -> None:
        super().__init__(
            dim,
            codebook_size,
            commitment_weight=commitment_weight,
            codebook_weight=codebook_weight,
            l2_normalize=l2_normalize,
            ema=False,
            decay=decay,
            chunk_elements=chunk_elements,
        )
        if anchor not in ANCHORS:
            raise ValueError(f"CVQ: anchor must be one of {ANCHORS}, got {anchor!r}")
        if revive_rate <= 0:
            raise ValueError(f"CVQ: revive_rate must be > 0, got {revive_rate!r}")
        self.anchor = anchor
        self.revive_rate = float(revive_rate)
        self.register_buffer("usage_ema", torch.zeros(codebook_size))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", anchor={self.anchor!r}, decay={self.decay}"

    def revive_alpha(self) -> Tensor:
        """Per-code re-seeding rate ``alpha_k (K,)`` from the running usage."""
        scale = self.codebook_size * self.revive_rate / (1.0 - self.decay)
        return torch.exp(-self.usage_ema * scale - 1e-3)

    @torch.no_grad()
    def anchors(self, x: Tensor, codebook: Tensor) -> Tensor:
        """One batch feature per code: tokens ``x (N, D)``, search codebook ``(K, D)`` -> ``(K, D)``."""
        n, k = x.shape[0], codebook.shape[0]
        if self.anchor == "random":
            return x[torch.randint(n, (k,), device=x.device)]
        best = torch.full((k,), -float("inf"), dtype=x.dtype, device=x.device)
        best_idx = torch.zeros(k, dtype=torch.long, device=x.device)
        codebook_sq = codebook.pow(2).sum(1)
        step = self._chunk()
        for s in range(0, n, step):
            score = -squared_distances(x[s : s + step], codebook, codebook_sq)  # (n_chunk, K)
            if self.anchor == "probrandom":  # Gumbel-max: argmax of score + Gumbel = softmax sample
                score = score - torch.empty_like(score).exponential_().log()
            value, idx = score.max(0)
            better = value > best
            best = torch.where(better, value, best)
            best_idx = torch.where(better, idx + s, best_idx)
        return x[best_idx]

    @torch.no_grad()
    def _after_assignment(self, x: Tensor, indices: Tensor, search_codebook: Tensor) -> None:
        """Update the running usage and pull rarely used codes towards batch anchors."""
        counts = torch.bincount(indices, minlength=self.codebook_size).to(self.usage_ema.dtype)
        total = torch.tensor(float(indices.numel()), dtype=counts.dtype, device=counts.device)
        all_reduce_sum(counts)
        all_reduce_sum(total)
        self.usage_ema.mul_(self.decay).add_(counts / total.clamp_min(1.0), alpha=1 - self.decay)
        alpha = self.revive_alpha().unsqueeze(1)
        anchors = self.anchors(x, search_codebook).to(self.codebook.dtype)
        new = self.codebook.detach() * (1 - alpha) + anchors * alpha
        if world_size() > 1:
            torch.distributed.broadcast(new, src=0)
        self.codebook.copy_(new)
