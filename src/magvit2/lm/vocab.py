"""Token embeddings and output heads, plain or factorised into sub-tokens.

An LFQ id of K bits is too large for one softmax (2^18 classes). With ``split_tokens`` (bit widths,
lowest bits first, :func:`magvit2.quantizers.factorization.split_tokens`) an id enters as the SUM of
one embedding per sub-token and leaves through one head per sub-token, head ``i`` seeing the hidden
state plus embeddings of sub-tokens ``0 .. i-1`` (teacher-forced in training, sampled in turn when
generating). So ``log p(id) = sum_i log p(part_i | h, part_<i)`` is the exact log-likelihood of the
whole id and the distribution over all ids sums to 1. Vocabularies up to 2^16 use one table and one
softmax. Both modules are shared by the autoregressive and masked models.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from magvit2.quantizers.factorization import join_tokens, split_tokens


class TokenEmbedding(nn.Module):
    """ids (any shape) -> embeddings ``(*shape, dim)``: one table, or a sum of sub-token tables."""

    def __init__(self, vocabulary: int, dim: int, split: list[int] | None = None) -> None:
        super().__init__()
        self.split = list(split) if split else None
        sizes = [2**w for w in self.split] if self.split else [vocabulary]
        self.tables = nn.ModuleList(nn.Embedding(n, dim) for n in sizes)
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        parts = split_tokens(ids, self.split) if self.split else [ids]
        return sum(table(p) for table, p in zip(self.tables, parts, strict=True))


class _PartHead(nn.Module):
    """One sub-token's head: ``h + cond`` -> residual MLP -> norm -> logits ``(..., 2^bits)``."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mlp(self.norm1(x))
        return self.out(self.norm2(x))


class TokenHead(nn.Module):
    """Hidden states -> distribution over ids, plain (one softmax) or factorised (one head per
    sub-token, each conditioned on the sub-tokens before it).

    ``num_parts`` and :meth:`part_logits` let samplers draw one sub-token at a time;
    :meth:`log_prob` scores whole ids; :meth:`full_log_probs` enumerates the whole vocabulary (small
    vocabularies: tests and analysis).
    """

    def __init__(self, dim: int, vocabulary: int, split: list[int] | None = None) -> None:
        super().__init__()
        self.vocabulary, self.split = vocabulary, list(split) if split else None
        if self.split is None:
            self.norm = nn.RMSNorm(dim)
            self.out = nn.Linear(dim, vocabulary)
            return
        self.parts = nn.ModuleList(_PartHead(dim, 2**w) for w in self.split)
        # cond[i - 1][j]: embedding of sub-token j (< i) as seen by head i
        self.cond = nn.ModuleList(
            nn.ModuleList(nn.Embedding(2 ** self.split[j], dim) for j in range(i))
            for i in range(1, len(self.split))
        )
        for tables in self.cond:
            for table in tables:
                nn.init.normal_(table.weight, std=0.02)

    @property
    def num_parts(self) -> int:
        return len(self.split) if self.split else 1

    def part_logits(self, h: Tensor, previous: list[Tensor], i: int) -> Tensor:
        """Logits of sub-token ``i``: h ``(..., dim)``, ``previous`` the sub-tokens ``0..i-1``
        (each ``(...)``) -> ``(..., 2^split[i])`` (plain head: ``(..., vocabulary)``)."""
        if self.split is None:
            return self.out(self.norm(h))
        x = h
        if i:
            x = x + sum(table(p) for table, p in zip(self.cond[i - 1], previous, strict=True))
        return self.parts[i](x)

    def split_ids(self, ids: Tensor) -> list[Tensor]:
        """ids -> sub-tokens (plain head: ``[ids]``)."""
        return split_tokens(ids, self.split) if self.split else [ids]

    def join(self, parts: list[Tensor]) -> Tensor:
        """Inverse of :meth:`split_ids`."""
        return join_tokens(parts, self.split) if self.split else parts[0]

    def log_prob(self, h: Tensor, ids: Tensor) -> Tensor:
        """Exact log-likelihood (nats) of ids ``(...)`` given hidden states ``(..., dim)`` -> ``(...)``."""
        parts = self.split_ids(ids)
        total = 0.0
        for i, part in enumerate(parts):
            logits = self.part_logits(h, parts[:i], i).float()
            total = total + torch.gather(F.log_softmax(logits, -1), -1, part[..., None])[..., 0]
        return total

    def full_log_probs(self, h: Tensor) -> Tensor:
        """h ``(N, dim)`` -> log-probabilities of every id ``(N, vocabulary)`` (enumerates the
        vocabulary: for small ones)."""
        ids = torch.arange(self.vocabulary, device=h.device)
        n = h.shape[0]
        hh = rearrange(h[:, None].expand(n, self.vocabulary, h.shape[-1]), "n v d -> (n v) d")
        flat = self.log_prob(hh, ids.repeat(n))
        return rearrange(flat, "(n v) -> n v", n=n)
