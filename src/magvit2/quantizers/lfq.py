"""Lookup-free quantization (LFQ, MAGVIT-v2 arXiv 2310.05737) with an exact, cheap entropy penalty.

Quantization
------------
A latent ``z`` with ``K = bits`` channels is quantized channel by channel to its sign,
``q_k = +1 if z_k > 0 else -1``, so the codebook is the corner set ``C = {-1, +1}^K`` (``2^K`` codes) and
there is nothing to look up or learn. The token id is the integer whose bits are those signs::

    bit_order="msb" (default):  id = sum_k [z_k > 0] * 2^(K-1-k)     (channel 0 = most significant bit)
    bit_order="lsb":            id = sum_k [z_k > 0] * 2^k           (channel 0 = least significant bit,
                                                                      Open-MAGVIT2's convention)

The gradient passes straight through: ``codes = q + (z - z.detach())`` (value exactly ``q``,
``d codes / d z = identity``).

Entropy penalty
---------------
Each token gets a soft assignment over all codes at temperature ``T``::

    p(c | z) = exp(-||z - c||^2 / T) / sum_c' exp(-||z - c'||^2 / T),   c in {-1, +1}^K.

* per-token entropy   ``H_tok = mean_tokens H(p(.|z))``        (low: each token is confident)
* codebook entropy    ``H_cb  = H(mean_tokens p(.|z))``        (high: the batch uses many codes)
* entropy loss        ``H_tok - codebook_entropy_weight * H_cb``
* commitment          ``mean((z - q)^2)``
* ``loss = entropy_weight * (H_tok - codebook_entropy_weight * H_cb) + commitment_weight * commitment``

Nothing of size ``tokens x 2^K`` is ever built. Since ``||z - c||^2 = ||z||^2 + K - 2 sum_k z_k c_k``,
``p(c|z)`` factorises over the bits: the bits are independent Bernoulli variables with

    p(c_k = +1 | z) = sigmoid(x_k),   x_k = 4 z_k / T.

* ``H_tok`` is the sum of the K Bernoulli entropies ``h(x) = softplus(-|x|) + |x| sigmoid(-|x|)``:
  O(tokens x K).
* ``H_cb`` needs the mean joint probability of every code. Split the K bits into halves A and B
  (``K_A + K_B = K``). For each token, the probabilities of all ``2^K_A`` patterns of half A form a row of
  ``P_A`` (tokens x 2^K_A), likewise ``P_B``; then ``p(c_A c_B | z) = P_A[t, c_A] P_B[t, c_B]`` and the mean
  over tokens of the joint distribution is one matrix product::

      M = P_A^T P_B / tokens        (2^K_A x 2^K_B  =  all 2^K codes, row-major = msb id order)

  exact, at matmul speed, memory O(tokens x 2^(K/2) + 2^K). The pattern probabilities are built as
  products of per-bit probabilities (never ``exp`` of large sums), so confident tokens (``|x|`` in the
  hundreds at ``T = 0.01``) lose no precision; ``0 log 0 = 0``. Autograd runs through the product.
  Large token counts are processed in chunks of ``token_chunk`` tokens (with activation checkpointing
  when gradients are needed) so memory stays bounded.

Exact mode holds ``M`` (``2^K`` floats), so it refuses ``bits > 30``. ``codebook_entropy="grouped"``
treats consecutive groups of bits as independent codebooks and uses the sum of the groups' codebook
entropies, ``sum_g H(mean_tokens p_g(.|z))``: an upper bound of the exact ``H_cb`` (subadditivity of
entropy), equal to it with one group, for vocabularies up to ``2^62``.

All of the above is computed in float32 (float64 if ``z`` is float64) with autocast disabled, so
``bf16`` autocast gives the same ids and entropies as float32.

Distributed
-----------
With ``torch.distributed`` initialised and ``world_size > 1`` (or ``distributed=True``), ``M`` is the
mean over the tokens of all ranks: the per-rank sums of probabilities and the token counts are
all-reduced. The all-reduce is autograd-aware (its backward all-reduces the gradient), so each rank's
gradient w.r.t. its own latent is ``world_size * dH_cb/dz_rank``, and DDP's gradient averaging yields
exactly the gradient of the global codebook entropy.

Relation to vector-quantize-pytorch's ``LFQ``
---------------------------------------------
Its ``inv_temperature`` is ``1 / T`` and its codebook is ``codebook_scale * {-1, +1}^K`` (scale 1 = ours);
its logits ``2 z.c * inv_temperature`` differ from ours by a per-token constant, so the distributions
are the same. Ids (msb order), ``diversity_gamma`` = ``codebook_entropy_weight``, ``entropy_loss_weight``
= ``entropy_weight``, ``commitment_loss_weight`` = ``commitment_weight`` match. It computes
``-sum p log(max(p, 1e-5))``, which under-counts probabilities below ``1e-5``; ours is exact, so the
entropies differ where many codes have tiny probability (large vocabularies).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from magvit2.quantizers.base import Quantizer, QuantizerOutput

MAX_BITS = 62
"""Largest ``bits``: ids are int64 and stay below ``2^62``."""

EXACT_MAX_BITS = 30
"""Largest ``bits`` (or group size) whose exact codebook entropy is computed (``2^30`` floats = 4 GiB)."""

BIT_ORDERS = ("msb", "lsb")
CODEBOOK_ENTROPY_MODES = ("exact", "grouped")


# ----------------------------------------------------------------------------------------------------
# math helpers (no state)


def bit_masks(bits: int, bit_order: str = "msb") -> Tensor:
    """int64 ``(bits,)``: the value of channel k's bit in the id (``2^(bits-1-k)`` msb, ``2^k`` lsb)."""
    shifts = range(bits - 1, -1, -1) if bit_order == "msb" else range(bits)
    return torch.tensor([1 << s for s in shifts], dtype=torch.int64)


def bernoulli_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(sigmoid(x)), elementwise: ``softplus(-|x|) + |x| sigmoid(-|x|)``.

    Both terms are non-negative, so there is no cancellation for confident bits.
    """
    a = logits.abs()
    return torch.nn.functional.softplus(-a) + a * torch.sigmoid(-a)


def pattern_probs(logits: Tensor) -> Tensor:
    """Joint probabilities of all bit patterns of independent bits.

    Args:
        logits: ``(N, m)``, ``p(bit_k = 1) = sigmoid(logits[:, k])``.

    Returns:
        ``(N, 2^m)``, column ``j`` = probability of the pattern whose binary digits (column 0 = most
        significant) are ``j``; each row sums to 1. ``m = 0`` gives a column of ones.
    """
    n, m = logits.shape
    p1, p0 = torch.sigmoid(logits), torch.sigmoid(-logits)
    probs = logits.new_ones(n, 1)
    for k in range(m):
        probs = torch.stack((probs * p0[:, k : k + 1], probs * p1[:, k : k + 1]), dim=-1).reshape(n, -1)
    return probs


def code_prob_sum(logits: Tensor) -> Tensor:
    """Sum over tokens of the joint code distribution, via the half split.

    Args:
        logits: ``(N, K)`` per-bit logits ``x_k = 4 z_k / T``.

    Returns:
        ``(2^ceil(K/2), 2^floor(K/2))``: entry ``[a, b]`` = ``sum_t p(code a*2^floor(K/2) + b | z_t)`` with
        code ids in msb order (channel 0 = most significant bit).
    """
    k_a = logits.shape[1] - logits.shape[1] // 2
    return pattern_probs(logits[:, :k_a]).T @ pattern_probs(logits[:, k_a:])


class _Entropy(torch.autograd.Function):
    """``-sum p ln p`` saving only ``p`` (one ``2^K`` tensor instead of four) for the backward."""

    @staticmethod
    def forward(ctx, probs: Tensor) -> Tensor:  # noqa: D102
        log = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        ctx.save_for_backward(probs)
        return -(probs * log).sum()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (probs,) = ctx.saved_tensors
        log = probs.clamp_min(torch.finfo(probs.dtype).tiny).log_()
        return log.add_(1.0).mul_(-grad)


def entropy(probs: Tensor) -> Tensor:
    """``-sum p ln p`` over all entries (nats), with ``0 ln 0 = 0``.

    The gradient ``-(ln p + 1)`` uses ``ln max(p, tiny)``, so codes of probability 0 (underflow) get a
    finite gradient (and ``0 * finite = 0`` upstream, no NaN).
    """
    return _Entropy.apply(probs)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward sums the incoming gradients over ranks too."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # noqa: D102
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return _AllReduceSum.apply(grad)


def group_sizes(bits: int, num_groups: int | None = None, group_bits: int | None = None) -> list[int]:
    """Bits per group for the grouped codebook entropy (consecutive channels).

    ``group_bits`` gives groups of that many bits (the last one smaller if it does not divide ``bits``);
    ``num_groups`` splits as evenly as possible (larger groups first). Neither: one group per 30 bits.
    """
    if num_groups is not None and group_bits is not None:
        raise ValueError(f"LFQ: give num_groups or group_bits, not both (got {num_groups}, {group_bits})")
    if group_bits is not None:
        if not 1 <= group_bits <= EXACT_MAX_BITS:
            raise ValueError(f"LFQ group_bits must be in [1, {EXACT_MAX_BITS}], got {group_bits}")
        return [min(group_bits, bits - s) for s in range(0, bits, group_bits)]
    if num_groups is None:
        num_groups = math.ceil(bits / EXACT_MAX_BITS)
    if not 1 <= num_groups <= bits:
        raise ValueError(f"LFQ num_groups must be in [1, bits={bits}], got {num_groups}")
    base, extra = divmod(bits, num_groups)
    sizes = [base + (g < extra) for g in range(num_groups)]
    if max(sizes) > EXACT_MAX_BITS:
        raise ValueError(
            f"LFQ groups of {max(sizes)} bits exceed {EXACT_MAX_BITS}; use more groups (num_groups >= "
            f"{math.ceil(bits / EXACT_MAX_BITS)})"
        )
    return sizes


# ----------------------------------------------------------------------------------------------------
# the module


class LFQ(Quantizer):
    """Lookup-free quantizer with an exact entropy penalty (see the module docstring for the math).

    Args:
        bits: latent channels ``K`` = bits per token; vocabulary ``2^K`` (1 to 62).
        temperature: ``T`` of the soft assignment ``p(c|z) ∝ exp(-||z - c||^2 / T)``.
        entropy_weight: weight of the entropy loss; a plain attribute, so a trainer can anneal it
            (``lfq.entropy_weight = w``) or pass ``entropy_weight=`` to ``forward``.
        codebook_entropy_weight: weight of the codebook entropy inside the entropy loss.
        commitment_weight: weight of ``mean((z - q)^2)``.
        bit_order: ``"msb"`` (channel 0 = most significant bit of the id) or ``"lsb"``.
        codebook_entropy: ``"exact"`` (``bits <= 30``) or ``"grouped"`` (sum over groups of bits).
        num_groups, group_bits: the groups for ``"grouped"`` (see :func:`group_sizes`).
        distributed: average the code distribution over ranks; ``None`` = when ``torch.distributed`` is
            initialised with more than one process.
        token_chunk: tokens processed at once for the codebook entropy (bounds memory).
    """

    def __init__(
        self,
        bits: int,
        *,
        temperature: float = 0.01,
        entropy_weight: float = 0.1,
        codebook_entropy_weight: float = 1.0,
        commitment_weight: float = 0.25,
        bit_order: str = "msb",
        codebook_entropy: str = "exact",
        num_groups: int | None = None,
        group_bits: int | None = None,
        distributed: bool | None = None,
        token_chunk: int = 8192,
    ) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS:
            raise ValueError(f"LFQ bits must be an int in [1, {MAX_BITS}], got {bits!r}")
        if not temperature > 0:
            raise ValueError(f"LFQ temperature must be > 0, got {temperature!r}")
        if bit_order not in BIT_ORDERS:
            raise ValueError(f"LFQ bit_order must be one of {BIT_ORDERS}, got {bit_order!r}")
        if codebook_entropy not in CODEBOOK_ENTROPY_MODES:
            raise ValueError(
                f"LFQ codebook_entropy must be one of {CODEBOOK_ENTROPY_MODES}, got {codebook_entropy!r}"
            )
        if token_chunk < 1:
            raise ValueError(f"LFQ token_chunk must be >= 1, got {token_chunk}")
        if codebook_entropy == "exact":
            if num_groups is not None or group_bits is not None:
                raise ValueError("LFQ num_groups/group_bits need codebook_entropy='grouped'")
            if bits > EXACT_MAX_BITS:
                raise ValueError(
                    f"LFQ exact codebook entropy stores 2^{bits} floats (bits <= {EXACT_MAX_BITS} only). "
                    f"Use codebook_entropy='grouped' (e.g. group_bits=16) for bits={bits}"
                )
            self.groups = [bits]
        else:
            self.groups = group_sizes(bits, num_groups, group_bits)
        self.dim = bits
        self.bits = bits
        self.codebook_size = 2**bits
        self.temperature = float(temperature)
        self.entropy_weight = float(entropy_weight)
        self.codebook_entropy_weight = float(codebook_entropy_weight)
        self.commitment_weight = float(commitment_weight)
        self.bit_order = bit_order
        self.codebook_entropy_mode = codebook_entropy
        self.distributed = distributed
        self.token_chunk = int(token_chunk)
        self.register_buffer("mask", bit_masks(bits, bit_order), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, temperature={self.temperature}, entropy_weight={self.entropy_weight}, "
            f"codebook_entropy_weight={self.codebook_entropy_weight}, "
            f"commitment_weight={self.commitment_weight}, bit_order={self.bit_order!r}, "
            f"codebook_entropy={self.codebook_entropy_mode!r}, groups={self.groups}"
        )

    # ------------------------------------------------------------------ ids <-> codes

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codes (or any latent) ``(B, bits, *spatial)`` -> int64 ids ``(B, *spatial)`` (sign > 0 = 1)."""
        self.check_input(codes)
        return self._ids(codes)

    def _ids(self, codes: Tensor) -> Tensor:
        on = (codes > 0).movedim(1, -1).long()
        return (on * self.mask.to(codes.device)).sum(-1)

    def indices_to_codes(self, indices: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """int ids ``(B, *spatial)`` -> codes ``(B, bits, *spatial)`` of +-1 in ``dtype``."""
        self.check_indices(indices)
        on = (indices.long().unsqueeze(-1) & self.mask.to(indices.device)) != 0
        return (on.to(dtype) * 2 - 1).movedim(-1, 1)

    # ------------------------------------------------------------------ entropies

    def _use_distributed(self) -> bool:
        if self.distributed is None:
            return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if self.distributed and not (dist.is_available() and dist.is_initialized()):
            raise ValueError("LFQ distributed=True needs torch.distributed to be initialised")
        return self.distributed

    def _prob_sums(self, logits: Tensor) -> list[Tensor]:
        """Per group, the sum over tokens of its code distribution (``2^bits_g`` values, flattened)."""
        chunks = logits.split(self.token_chunk) if logits.shape[0] > self.token_chunk else [logits]
        use_ckpt = len(chunks) > 1 and torch.is_grad_enabled() and logits.requires_grad
        sums: list[Tensor] = []
        start = 0
        for size in self.groups:
            total = None
            for chunk in chunks:
                x = chunk[:, start : start + size]
                s = checkpoint(code_prob_sum, x, use_reentrant=False) if use_ckpt else code_prob_sum(x)
                total = s if total is None else total + s
            sums.append(total.reshape(-1))
            start += size
        return sums

    def entropies(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(per-token entropy, codebook entropy) in nats for a latent ``(B, bits, *spatial)``.

        Computed in float32 (float64 for float64 ``z``) with autocast off; differentiable.
        """
        self.check_input(z)
        return self._entropies(z)

    def _entropies(self, z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type=z.device.type, enabled=False):
            work = z if z.dtype == torch.float64 else z.float()
            logits = (4.0 / self.temperature) * work.movedim(1, -1).reshape(-1, self.bits)
            per_token = bernoulli_entropy(logits).sum(-1).mean()
            sums = self._prob_sums(logits)
            count = torch.tensor(float(logits.shape[0]), dtype=logits.dtype, device=logits.device)
            if self._use_distributed():
                flat = _AllReduceSum.apply(torch.cat(sums))
                sums = list(flat.split([s.numel() for s in sums]))
                dist.all_reduce(count)
            codebook = sum(entropy(s / count) for s in sums)
        return per_token, codebook

    # ------------------------------------------------------------------ forward

    def forward(self, z: Tensor, *, entropy_weight: float | None = None) -> QuantizerOutput:
        """Quantize ``z`` ``(B, bits, *spatial)``.

        Args:
            z: channels-first float latent.
            entropy_weight: overrides ``self.entropy_weight`` for this call (annealing).

        Returns:
            :class:`QuantizerOutput` with ``codes`` (+-1, dtype of ``z``, straight-through gradient),
            int64 ``indices`` ``(B, *spatial)``, ``loss``, ``commitment``, ``per_token_entropy``,
            ``codebook_entropy``, ``used_codes`` and ``perplexity``.
        """
        self.check_input(z)
        ew = self.entropy_weight if entropy_weight is None else float(entropy_weight)
        with torch.autocast(device_type=z.device.type, enabled=False):
            work = z if z.dtype == torch.float64 else z.float()
            q = torch.where(work > 0, 1.0, -1.0).to(work.dtype)
            codes = q.to(z.dtype) + (z - z.detach())
            indices = self._ids(work)
            commitment = (work - q).pow(2).mean()
            per_token, codebook = self._entropies(work)
            entropy_loss = per_token - self.codebook_entropy_weight * codebook
            loss = ew * entropy_loss + self.commitment_weight * commitment
        used, perplexity = self.usage(indices)
        return QuantizerOutput(
            codes=codes,
            indices=indices,
            loss=loss,
            commitment=commitment,
            used_codes=used,
            perplexity=perplexity,
            per_token_entropy=per_token,
            codebook_entropy=codebook,
        )
