"""A plain-data description of a quantizer, and the factory that builds one from it."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from magvit2.quantizers.base import Quantizer

QUANTIZER_KINDS = ("lfq", "vq", "cvq", "fsq")


@dataclass
class QuantizerConfig:
    """Which quantizer, and its settings.

    Attributes:
        kind: one of ``lfq``, ``vq``, ``cvq``, ``fsq``.
        bits: LFQ only: latent channels = bits per token (vocabulary ``2**bits``).
        codebook_size: VQ/CVQ only: number of codes.
        dim: VQ/CVQ only: latent channels (length of each code vector).
        levels: FSQ only: quantization levels per channel (vocabulary = their product).
        options: further keyword arguments passed to the quantizer's constructor
            (e.g. ``{"temperature": 0.01, "bit_order": "lsb"}`` for LFQ).
    """

    kind: str = "lfq"
    bits: int = 18
    codebook_size: int = 65536
    dim: int = 8
    levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in QUANTIZER_KINDS:
            raise ValueError(f"quantizer kind must be one of {QUANTIZER_KINDS}, got {self.kind!r}")

    @property
    def latent_dim(self) -> int:
        """Channels of the latent the encoder must produce for this quantizer."""
        if self.kind == "lfq":
            return self.bits
        if self.kind == "fsq":
            return len(self.levels)
        return self.dim


def quantizer_class(kind: str) -> type[Quantizer]:
    """The quantizer class of a kind (``lfq``, ``vq``, ``cvq``, ``fsq``)."""
    if kind == "lfq":
        from magvit2.quantizers.lfq import LFQ

        return LFQ
    if kind == "vq":
        from magvit2.quantizers.vq import VQ

        return VQ
    if kind == "cvq":
        from magvit2.quantizers.cvq import CVQ

        return CVQ
    from magvit2.quantizers.fsq import FSQ

    return FSQ


def check_options(kind: str, options: Any, where: str) -> None:
    """A ValueError naming ``where`` unless ``options`` is a mapping of keyword options that the
    ``kind`` quantizer's constructor takes."""
    if not isinstance(options, dict):
        raise ValueError(f"{where}: expected a mapping of {kind} options, got {type(options).__name__}")
    params = inspect.signature(quantizer_class(kind).__init__).parameters
    known = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(str(k) for k in options if k not in known)
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown} for {kind}; known: {known}")


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    """Construct the quantizer a :class:`QuantizerConfig` describes."""
    if cfg.kind == "lfq":
        from magvit2.quantizers.lfq import LFQ

        return LFQ(cfg.bits, **cfg.options)
    if cfg.kind == "vq":
        from magvit2.quantizers.vq import VQ

        return VQ(cfg.dim, cfg.codebook_size, **cfg.options)
    if cfg.kind == "cvq":
        from magvit2.quantizers.cvq import CVQ

        return CVQ(cfg.dim, cfg.codebook_size, **cfg.options)
    from magvit2.quantizers.fsq import FSQ

    return FSQ(list(cfg.levels), **cfg.options)
