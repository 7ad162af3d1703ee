"""Quantizers behind one interface: LFQ (lookup-free), VQ, CVQ (clustered VQ) and FSQ."""

from magvit2.quantizers.base import Quantizer, QuantizerOutput

__all__ = ["Quantizer", "QuantizerOutput"]
