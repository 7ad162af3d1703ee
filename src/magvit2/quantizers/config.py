"""Plain-data descriptions of the quantizers, one class per kind, and the factory that builds one.

``LFQConfig`` (bits), ``VQConfig`` (``vq`` and ``cvq``: codebook_size, dim) and ``FSQConfig`` (levels);
each also carries ``options``, further keyword arguments of the quantizer's constructor (e.g.
``{"temperature": 0.01, "bit_order": "lsb"}`` for LFQ). :func:`QuantizerConfig.from_dict` picks the
class from ``kind``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from magvit2.quantizers.base import Quantizer

QUANTIZER_KINDS = ("lfq", "vq", "cvq", "fsq")

#: Fields that config.json files of earlier versions wrote for every kind, with the values they held
#: when unused; a config of another kind that carries them at these values still loads.
_LEGACY_DEFAULTS: dict[str, Any] = {
    "bits": 18,
    "codebook_size": 65536,
    "dim": 8,
    "levels": [8, 8, 8, 5, 5, 5],
}


@dataclass(kw_only=True)
class QuantizerConfig:
    """Which quantizer (``kind``) and its constructor ``options``; the subclasses add each kind's fields."""

    kind: str = "lfq"
    options: dict[str, Any] = field(default_factory=dict)
    KINDS: ClassVar[tuple[str, ...]] = QUANTIZER_KINDS

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"{type(self).__name__}: kind must be one of {self.KINDS}, got {self.kind!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"quantizer options: expected a mapping, got {type(self.options).__name__}")

    @property
    def latent_dim(self) -> int:
        """Channels of the latent the encoder must produce for this quantizer."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``kind``, the kind's own fields, ``options``."""
        d = {"kind": self.kind}
        d.update({f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("kind", "options")})
        return {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()},
            "options": dict(self.options),
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> QuantizerConfig:
        """The config of ``d["kind"]`` (default ``lfq``) from its fields. Fields of other kinds are
        refused, except at the values earlier versions wrote for unused fields (so old files load)."""
        cls, d = config_class(d)
        own = {f.name for f in fields(cls)}
        for key in [k for k in d if k not in own]:
            raise ValueError(
                f"quantizer {d['kind']!r}: unknown field {key!r}; expected a subset of {sorted(own)}"
            )
        return cls(**d)


def config_class(d: dict[str, Any]) -> tuple[type[QuantizerConfig], dict[str, Any]]:
    """The config class of ``d["kind"]`` (default ``lfq``) and ``d`` with ``kind`` set and without the
    fields of other kinds that earlier versions wrote at their unused values."""
    kind = d.get("kind", "lfq")
    if kind not in QUANTIZER_KINDS:
        raise ValueError(f"quantizer kind must be one of {QUANTIZER_KINDS}, got {kind!r}")
    cls = CONFIG_CLASSES[kind]
    own = {f.name for f in fields(cls)}
    legacy = lambda k, v: k not in own and k in _LEGACY_DEFAULTS and v == _LEGACY_DEFAULTS[k]
    return cls, {"kind": kind, **{k: v for k, v in d.items() if not legacy(k, v)}}


@dataclass(kw_only=True)
class LFQConfig(QuantizerConfig):
    """Lookup-free quantization: ``bits`` latent channels = bits per token (vocabulary ``2**bits``)."""

    kind: str = "lfq"
    bits: int = 18
    KINDS: ClassVar[tuple[str, ...]] = ("lfq",)

    @property
    def latent_dim(self) -> int:
        return self.bits


@dataclass(kw_only=True)
class VQConfig(QuantizerConfig):
    """Vector quantization (``vq``) or clustering VQ (``cvq``): ``codebook_size`` codes of ``dim``
    channels (the latent width)."""

    kind: str = "vq"
    codebook_size: int = 65536
    dim: int = 8
    KINDS: ClassVar[tuple[str, ...]] = ("vq", "cvq")

    @property
    def latent_dim(self) -> int:
        return self.dim


@dataclass(kw_only=True)
class FSQConfig(QuantizerConfig):
    """Finite scalar quantization: ``levels`` per channel (vocabulary = their product)."""

    kind: str = "fsq"
    levels: list[int] = field(default_factory=lambda: [8, 8, 8, 5, 5, 5])
    KINDS: ClassVar[tuple[str, ...]] = ("fsq",)

    @property
    def latent_dim(self) -> int:
        return len(self.levels)


CONFIG_CLASSES: dict[str, type[QuantizerConfig]] = {
    "lfq": LFQConfig,
    "vq": VQConfig,
    "cvq": VQConfig,
    "fsq": FSQConfig,
}


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
    """Construct the quantizer a quantizer config describes."""
    if isinstance(cfg, LFQConfig):
        from magvit2.quantizers.lfq import LFQ

        return LFQ(cfg.bits, **cfg.options)
    if isinstance(cfg, VQConfig) and cfg.kind == "vq":
        from magvit2.quantizers.vq import VQ

        return VQ(cfg.dim, cfg.codebook_size, **cfg.options)
    if isinstance(cfg, VQConfig):
        from magvit2.quantizers.cvq import CVQ

        return CVQ(cfg.dim, cfg.codebook_size, **cfg.options)
    if isinstance(cfg, FSQConfig):
        from magvit2.quantizers.fsq import FSQ

        return FSQ(list(cfg.levels), **cfg.options)
    raise ValueError(
        f"build_quantizer: expected an LFQConfig, VQConfig or FSQConfig, got {type(cfg).__name__}"
    )
