"""Vector quantization with a learned codebook (VQ-VAE), optionally cosine and/or EMA-updated.

Every token (one channel vector of a channels-first latent ``z (B, dim, *spatial)``) is replaced by
its nearest codebook vector; the id is that vector's row. Distances are always computed in float32
(float64 if ``z`` is float64), outside autocast, and in chunks of tokens so that the
``tokens x codebook_size`` distance matrix never exceeds ``chunk_elements`` entries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from magvit2.quantizers.base import Quantizer, QuantizerOutput, all_reduce_sum


def squared_distances(x: Tensor, codebook: Tensor, codebook_sq: Tensor | None = None) -> Tensor:
    """``||x_n - e_k||^2`` for tokens ``x (N, D)`` and codes ``codebook (K, D)`` -> ``(N, K)``."""
    if codebook_sq is None:
        codebook_sq = codebook.pow(2).sum(1)
    base = x.pow(2).sum(1, keepdim=True) + codebook_sq.unsqueeze(0)
    return torch.addmm(base, x, codebook.t(), alpha=-2.0)


def _compute_dtype(z: Tensor) -> torch.dtype:
    """float64 stays float64; every other float type is computed in float32."""
    return torch.float64 if z.dtype == torch.float64 else torch.float32


class VQ(Quantizer):
    """Nearest-neighbour vector quantizer over a learned codebook.

    Args:
        dim: channels of the latent (length of each code vector).
        codebook_size: number of codes ``K`` (vocabulary size).
        commitment_weight: weight of ``||z - sg(q)||^2`` (pulls the encoder towards its code).
        codebook_weight: weight of ``||sg(z) - q||^2`` (moves the codes; unused when ``ema``).
        l2_normalize: cosine VQ: ``z`` and the codes are L2-normalised over channels before the
            lookup, and the quantized output lies on the unit sphere (gradient flows through the
            normalisation of ``z``).
        ema: the codebook is a buffer updated, in training mode, by exponential moving averages of
            cluster sizes and member sums (Laplace-smoothed); the loss is then only the commitment.
        decay: EMA decay.
        eps: Laplace smoothing constant of the EMA cluster sizes.
        chunk_elements: largest ``tokens x K`` distance block computed at once.

    Shapes: ``forward(z (B, dim, *spatial))`` -> codes ``(B, dim, *spatial)``, ids ``(B, *spatial)``.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        commitment_weight: float = 0.25,
        codebook_weight: float = 1.0,
        l2_normalize: bool = False,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
        chunk_elements: int = 2**24,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"{name}: dim must be a positive int, got {dim!r}")
        if not isinstance(codebook_size, int) or codebook_size < 2:
            raise ValueError(f"{name}: codebook_size must be an int >= 2, got {codebook_size!r}")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"{name}: decay must lie in (0, 1), got {decay!r}")
        if eps <= 0:
            raise ValueError(f"{name}: eps must be > 0, got {eps!r}")
        if chunk_elements < 1:
            raise ValueError(f"{name}: chunk_elements must be >= 1, got {chunk_elements!r}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.commitment_weight = float(commitment_weight)
        self.codebook_weight = float(codebook_weight)
        self.l2_normalize = bool(l2_normalize)
        self.ema = bool(ema)
        self.decay = float(decay)
        self.eps = float(eps)
        self.chunk_elements = int(chunk_elements)
        init = torch.randn(codebook_size, dim)
        if self.ema:
            self.register_buffer("codebook", init)
            # Cluster sizes start at one and sums at the codes themselves, so an unused code keeps
            # its position (sum / size) instead of collapsing towards zero or blowing up.
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
            self.register_buffer("ema_embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)

    # ----------------------------------------------------------------------------------- helpers
    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, codebook_size={self.codebook_size}, l2_normalize={self.l2_normalize}, "
            f"ema={self.ema}"
        )

    def _flatten(self, z: Tensor) -> Tensor:
        """``(B, D, *spatial)`` -> ``(N, D)`` tokens in compute precision (normalised if cosine)."""
        x = z.to(_compute_dtype(z)).movedim(1, -1).reshape(-1, self.dim)
        return F.normalize(x, dim=1) if self.l2_normalize else x

    def _search_codebook(self, dtype: torch.dtype) -> Tensor:
        """The codebook as the nearest-neighbour search sees it (detached, normalised if cosine)."""
        cb = self.codebook.detach().to(dtype)
        return F.normalize(cb, dim=1) if self.l2_normalize else cb

    def _chunk(self) -> int:
        """Tokens per distance block."""
        return max(1, self.chunk_elements // self.codebook_size)

    @torch.no_grad()
    def nearest(self, x: Tensor, codebook: Tensor) -> Tensor:
        """Index of the nearest code for every token: ``x (N, D)``, ``codebook (K, D)`` -> ``(N,)``."""
        out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
        codebook_sq = codebook.pow(2).sum(1)
        step = self._chunk()
        for s in range(0, x.shape[0], step):
            out[s : s + step] = squared_distances(x[s : s + step], codebook, codebook_sq).argmin(1)
        return out

    def _lookup(self, indices: Tensor, dtype: torch.dtype) -> Tensor:
        """Codes of ``indices (N,)`` -> ``(N, D)``; differentiable w.r.t. a learned codebook.

        The rows are gathered first and normalised afterwards, so autograd keeps the gathered rows,
        not the codebook itself (an in-place codebook update after the lookup stays legal).
        """
        q = F.embedding(indices, self.codebook).to(dtype)
        return F.normalize(q, dim=1) if self.l2_normalize else q

    @torch.no_grad()
    def _ema_update(self, x: Tensor, indices: Tensor) -> None:
        """One EMA step of cluster sizes and sums from tokens ``x (N, D)`` and their ``indices``."""
        k = self.codebook_size
        counts = torch.bincount(indices, minlength=k).to(self.ema_cluster_size.dtype)
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, x.to(self.ema_embed_sum.dtype))
        all_reduce_sum(counts)
        all_reduce_sum(sums)
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.eps) / (n + k * self.eps) * n
        self.codebook.copy_(self.ema_embed_sum / smoothed.unsqueeze(1))

    def _after_assignment(self, x: Tensor, indices: Tensor, search_codebook: Tensor) -> None:
        """Training-time codebook maintenance after the assignment (EMA here; CVQ re-seeds codes)."""
        if self.ema:
            self._ema_update(x, indices)

    # ----------------------------------------------------------------------------------- interface
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z (B, dim, *spatial)``; see :class:`QuantizerOutput`."""
        self.check_input(z)
        with torch.autocast(device_type=z.device.type, enabled=False):
            x = self._flatten(z)
            search_cb = self._search_codebook(x.dtype)
            indices = self.nearest(x.detach(), search_cb)
            q = self._lookup(indices, x.dtype)
            commitment = F.mse_loss(x, q.detach())
            loss = self.commitment_weight * commitment
            if not self.ema:
                loss = loss + self.codebook_weight * F.mse_loss(q, x.detach())
            if self.training:
                self._after_assignment(x.detach(), indices, search_cb)
            # Straight-through: the value is exactly q, the gradient is the identity to x.
            st = q.detach() + (x - x.detach())
            spatial = z.shape[2:]
            codes = st.reshape(z.shape[0], *spatial, self.dim).movedim(-1, 1).to(z.dtype)
        indices = indices.reshape(z.shape[0], *spatial)
        used, ppl = self.usage(indices)
        return QuantizerOutput(codes, indices, loss, commitment, used, ppl)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Token ids ``(B, *spatial)`` -> codes ``(B, dim, *spatial)`` (unit norm if cosine)."""
        self.check_indices(indices)
        with torch.no_grad():
            cb = self._search_codebook(self.codebook.dtype)
            return cb[indices.long()].movedim(-1, 1)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codes or any latent ``(B, dim, *spatial)`` -> ids of the nearest codes ``(B, *spatial)``."""
        self.check_input(codes)
        with torch.no_grad(), torch.autocast(device_type=codes.device.type, enabled=False):
            x = self._flatten(codes)
            ids = self.nearest(x, self._search_codebook(x.dtype))
        return ids.reshape(codes.shape[0], *codes.shape[2:])
