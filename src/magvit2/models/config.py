"""Typed configuration of the video tokenizer (plain data, JSON round-trippable)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from magvit2.modules.block_mean import check_layout
from magvit2.quantizers.config import LFQConfig, QuantizerConfig

#: Keys of feedback encoding (removed) and the value each had when it was off.
_REMOVED = {"feedback": False, "feedback_stages": 1, "feedback_last_repeats": 1}


def drop_removed_keys(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without the feedback-encoding keys earlier versions wrote when it was off; a ValueError
    when it was on (the feature was removed)."""
    d = dict(d)
    for key, off in _REMOVED.items():
        if key in d and d[key] == off:
            del d[key]
        elif key in d:
            raise ValueError(
                f"TokenizerConfig: {key}={d[key]!r}: feedback encoding was removed from magvit2; the "
                "previous built-in model loads through benchmarks/previous_model.py"
            )
    return d


def _per_level(value: int | list[int] | tuple[int, ...], levels: int, name: str) -> tuple[int, ...]:
    """An int (same for every level) or one int per level -> a tuple of ``levels`` ints."""
    if isinstance(value, int):
        return (value,) * levels
    value = tuple(int(v) for v in value)
    if len(value) != levels:
        raise ValueError(f"TokenizerConfig.{name}: expected {levels} values (one per level), got {value}")
    return value


#: Spatial padding modes of the convolutions (``TokenizerConfig.padding``).
PADDINGS = ("zeros", "replicate")


@dataclass
class TokenizerConfig:
    """Architecture of :class:`magvit2.models.VideoTokenizer` (Open-MAGVIT2 / MAGVIT-v2 layout).

    The encoder has ``len(ch_mult)`` levels; level ``i`` has ``num_res_blocks[i]`` residual blocks with
    ``ch * ch_mult[i]`` channels and, except the last level, a stride-2 downsampling conv
    (also stride 2 in time where ``temporal_downsample[i]``). Then ``num_mid_blocks`` residual
    blocks, GroupNorm, swish and a 1x1x1 conv to the quantizer's latent channels. The decoder mirrors
    it, with an adaptive GroupNorm (conditioned on the quantized latent) at the start of every level
    and depth-to-space upsampling.

    Attributes:
        quantizer: which quantizer and its settings (the latent width is ``quantizer.latent_dim``).
        in_channels: video channels (3).
        ch: base channel count.
        ch_mult: channel multiplier per level; spatial factor is ``2 ** (len(ch_mult) - 1)``.
        num_res_blocks: encoder residual blocks per level (int = same for all).
        num_mid_blocks: residual blocks after the last level (None = ``num_res_blocks[-1]``).
        decoder_num_res_blocks: decoder residual blocks per level (None = same as the encoder).
        temporal_downsample: per downsampling step (``len(ch_mult) - 1`` of them), whether it halves
            time too; None = Open-MAGVIT2's rule (levels whose ``ch_mult != 1``).
            Temporal factor is ``2 ** sum(temporal_downsample)``.
        norm: ``"group"`` (default, Open-MAGVIT2's layout): GroupNorm with statistics over each frame,
            and the decoder's adaptive GroupNorm scaled by statistics of each latent frame.
            ``"channel"``: LayerNorm over the channels at each position, and the decoder's adaptive
            norm modulated by the quantized latent at each position; no statistic spans a frame, so
            flat colours keep their level, crops and whole frames are treated alike, and tiles need
            only an overlap to match a whole-frame pass.
        norm_groups: GroupNorm groups (``norm="group"`` only).
        norm_eps: GroupNorm epsilon (and the adaptive norm's variance epsilon).
        time_pooled_norm: False (default): normalisation statistics per frame, strictly causal, chunked
            processing exact. True: statistics pooled over time as Open-MAGVIT2's video model (not
            causal; chunked processing is refused).
        padding: spatial padding of every convolution: ``"zeros"`` (default, Open-MAGVIT2's) or
            ``"replicate"`` (edge pixels repeated: a flat frame stays exactly flat through the whole
            network, and the frame's border looks like its inside).
        mean_bits: None (default): every latent channel is learned. ``(y, co, cg)``: that many of the
            ``z_channels`` bits per token hold the block's mean colour, quantized by a fixed rule
            (:mod:`magvit2.modules.block_mean`), and the decoder adds its output to those means
            upsampled; the encoder learns the other ``z_channels - sum(mean_bits)``.
        mean_slope: with ``mean_bits``, in [0, 1]: how far the rendered means follow the change from one
            group of frames to the next within a group (0: each group's mean on all its frames; see
            :mod:`magvit2.modules.block_mean`).
        mean_slope_bits: with ``mean_bits`` and ``mean_slope = 0``: 0, or 2 more fixed bits per token
            that choose that factor per block and group (the encoder picks the one nearest the
            group's own frames). When the fixed bits fill all ``z_channels`` the encoder has no
            network.
        mean_chroma_share: with ``mean_bits``: 1 (default), or 2: one chroma per 2x2 tokens, its
            ``mean_bits[1] + mean_bits[2]`` bits split over the four (the bits saved go to detail).
        mean_detail_bits: with ``mean_bits``: 0 (default), or the bits of a per-token index into a
            fitted table of luma patterns (:func:`magvit2.modules.block_mean.fit_detail`).
        decoder_network: False: the decoder is the block-mean code's reconstruction alone (no
            weights; needs ``mean_bits``).
    """

    quantizer: QuantizerConfig = field(default_factory=LFQConfig)
    in_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 2, 4)
    num_res_blocks: int | tuple[int, ...] = 4
    num_mid_blocks: int | None = None
    decoder_num_res_blocks: int | tuple[int, ...] | None = None
    temporal_downsample: tuple[bool, ...] | None = None
    norm: str = "group"
    norm_groups: int = 32
    norm_eps: float = 1e-6
    time_pooled_norm: bool = False
    padding: str = "zeros"
    mean_bits: tuple[int, ...] | None = None
    mean_slope: float = 0.0
    mean_slope_bits: int = 0
    mean_chroma_share: int = 1
    mean_detail_bits: int = 0
    decoder_network: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.quantizer, dict):
            self.quantizer = QuantizerConfig.from_dict(self.quantizer)
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        levels = len(self.ch_mult)
        if levels < 1 or min(self.ch_mult) < 1:
            raise ValueError(f"TokenizerConfig.ch_mult: expected positive ints, got {self.ch_mult}")
        self.num_res_blocks = _per_level(self.num_res_blocks, levels, "num_res_blocks")
        if self.decoder_num_res_blocks is None:
            self.decoder_num_res_blocks = self.num_res_blocks
        self.decoder_num_res_blocks = _per_level(
            self.decoder_num_res_blocks, levels, "decoder_num_res_blocks"
        )
        if self.num_mid_blocks is None:
            self.num_mid_blocks = self.num_res_blocks[-1]
        if self.temporal_downsample is None:
            self.temporal_downsample = tuple(m != 1 for m in self.ch_mult[:-1])
        self.temporal_downsample = tuple(bool(t) for t in self.temporal_downsample)
        if len(self.temporal_downsample) != levels - 1:
            raise ValueError(
                f"TokenizerConfig.temporal_downsample: expected {levels - 1} flags (one per downsampling), "
                f"got {self.temporal_downsample}"
            )
        if self.norm not in ("group", "channel"):
            raise ValueError(f"TokenizerConfig.norm: expected 'group' or 'channel', got {self.norm!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"TokenizerConfig.padding: expected one of {PADDINGS}, got {self.padding!r}")
        if self.mean_bits is not None:
            self.mean_bits = tuple(int(b) for b in self.mean_bits)
            if len(self.mean_bits) != 3 or not all(1 <= b <= 8 for b in self.mean_bits):
                raise ValueError(
                    f"TokenizerConfig.mean_bits: expected None or 3 bit counts (Y, Co, Cg) in [1, 8], "
                    f"got {self.mean_bits}"
                )
            if self.quantizer.kind != "lfq":
                raise ValueError(
                    f"TokenizerConfig.mean_bits: the block-mean bits are LFQ signs; expected quantizer kind "
                    f"'lfq', got {self.quantizer.kind!r}"
                )
            self.mean_chroma_share = int(self.mean_chroma_share)
            self.mean_detail_bits = int(self.mean_detail_bits)
            try:
                check_layout(self.mean_bits, self.mean_chroma_share, self.mean_detail_bits)
            except ValueError as e:
                raise ValueError(f"TokenizerConfig.mean_bits: {e}") from None
            if self.fixed_channels > self.z_channels:
                raise ValueError(
                    f"TokenizerConfig.mean_bits: {self.mean_bits}, mean_slope_bits {self.mean_slope_bits}, "
                    f"mean_chroma_share {self.mean_chroma_share} and mean_detail_bits "
                    f"{self.mean_detail_bits} take {self.fixed_channels} bits, more than the "
                    f"{self.z_channels} latent channels"
                )
        elif self.mean_chroma_share != 1 or self.mean_detail_bits or not self.decoder_network:
            raise ValueError(
                "TokenizerConfig: mean_chroma_share, mean_detail_bits and decoder_network=False need "
                "mean_bits"
            )
        self.mean_slope, self.mean_slope_bits = float(self.mean_slope), int(self.mean_slope_bits)
        if not 0 <= self.mean_slope <= 1:
            raise ValueError(f"TokenizerConfig.mean_slope: expected a value in [0, 1], got {self.mean_slope}")
        if self.mean_slope_bits not in (0, 2) or (
            self.mean_slope_bits and (self.mean_slope or not self.mean_bits)
        ):
            raise ValueError(
                f"TokenizerConfig.mean_slope_bits: expected 0, or 2 with mean_bits and mean_slope 0; got "
                f"{self.mean_slope_bits} (mean_bits {self.mean_bits}, mean_slope {self.mean_slope})"
            )
        if self.mean_slope_bits and not any(self.temporal_downsample):
            raise ValueError(
                "TokenizerConfig.mean_slope_bits: a line in time needs a temporal factor above 1"
            )
        if self.norm == "channel" and self.time_pooled_norm:
            raise ValueError("TokenizerConfig: time_pooled_norm applies to norm 'group' only")
        for c in (self.ch * m for m in self.ch_mult) if self.norm == "group" else ():
            if c % self.norm_groups:
                raise ValueError(
                    f"TokenizerConfig: channels {c} (ch {self.ch} x ch_mult) must be divisible by "
                    f"norm_groups {self.norm_groups}"
                )

    @property
    def z_channels(self) -> int:
        """Latent channels (the quantizer's input width)."""
        return self.quantizer.latent_dim

    @property
    def learned_channels(self) -> int:
        """Latent channels the encoder learns (``z_channels`` less the block-mean and slope bits)."""
        return self.z_channels - self.fixed_channels

    @property
    def fixed_channels(self) -> int:
        """Latent channels the block-mean code fixes (0 without ``mean_bits``)."""
        if self.mean_bits is None:
            return 0
        chroma = (self.mean_bits[1] + self.mean_bits[2]) // self.mean_chroma_share**2
        return self.mean_slope_bits + self.mean_bits[0] + chroma + self.mean_detail_bits

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["quantizer"] = self.quantizer.to_dict()
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenizerConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError. The keys of feedback encoding,
        which earlier versions wrote, are ignored when it is off."""
        d = drop_removed_keys(d)
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"TokenizerConfig: unknown keys {sorted(unknown)}; expected a subset of {sorted(known)}"
            )
        if isinstance(d.get("quantizer"), dict):
            d["quantizer"] = QuantizerConfig.from_dict(d["quantizer"])
        return cls(**d)
