"""Quantizers behind one interface: LFQ (lookup-free), VQ, CVQ (clustered VQ) and FSQ."""

from magvit2.quantizers.base import Quantizer, QuantizerOutput
from magvit2.quantizers.config import (
    QUANTIZER_KINDS,
    FSQConfig,
    LFQConfig,
    QuantizerConfig,
    VQConfig,
    build_quantizer,
)
from magvit2.quantizers.cvq import CVQ
from magvit2.quantizers.factorization import join_tokens, split_tokens
from magvit2.quantizers.fsq import FSQ
from magvit2.quantizers.lfq import LFQ
from magvit2.quantizers.vq import VQ

__all__ = [
    "CVQ",
    "FSQ",
    "FSQConfig",
    "LFQ",
    "LFQConfig",
    "QUANTIZER_KINDS",
    "VQ",
    "VQConfig",
    "Quantizer",
    "QuantizerConfig",
    "QuantizerOutput",
    "build_quantizer",
    "join_tokens",
    "split_tokens",
]
