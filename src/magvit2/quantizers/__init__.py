"""Quantizers behind one interface: LFQ (lookup-free), VQ, CVQ (clustered VQ) and FSQ."""

from magvit2.quantizers.base import Quantizer, QuantizerOutput
from magvit2.quantizers.config import QUANTIZER_KINDS, QuantizerConfig, build_quantizer
from magvit2.quantizers.lfq import LFQ

__all__ = ["LFQ", "QUANTIZER_KINDS", "Quantizer", "QuantizerConfig", "QuantizerOutput", "build_quantizer"]
