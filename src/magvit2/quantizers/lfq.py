"""Lookup-free quantization (placeholder: signs and ids only; the entropy loss is being written)."""

from __future__ import annotations

import torch
from torch import Tensor

from magvit2.quantizers.base import Quantizer, QuantizerOutput


class LFQ(Quantizer):
    """Each channel becomes its sign; the id is the integer whose bits are those signs."""

    def __init__(self, bits: int, *, bit_order: str = "msb", **_: object) -> None:
        super().__init__()
        self.dim = bits
        self.codebook_size = 2**bits
        self.bit_order = bit_order
        shifts = torch.arange(bits - 1, -1, -1) if bit_order == "msb" else torch.arange(bits)
        self.register_buffer("mask", 2**shifts, persistent=False)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self.check_input(z)
        q = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        codes = z + (q - z).detach()
        indices = self.codes_to_indices(z)
        commitment = (z - q).pow(2).mean()
        used, ppl = self.usage(indices)
        return QuantizerOutput(codes, indices, 0.25 * commitment, commitment, used, ppl)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        bits = (codes > 0).long().movedim(1, -1)
        return (bits * self.mask).sum(-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        bits = (indices.unsqueeze(-1) & self.mask) != 0
        return (bits.float() * 2 - 1).movedim(-1, 1)
