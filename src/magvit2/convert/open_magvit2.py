"""Exact conversion of Open-MAGVIT2's published image and video tokenizers into :class:`VideoTokenizer`.

Open-MAGVIT2 (TencentARC, now SEED-Voken) names its tokenizer's weights ``encoder.*`` / ``decoder.*``
and keeps an EMA copy as ``model_ema.<name without dots>``. Our network uses the same layout and
key names as its video model, so a video checkpoint maps one to one. Its image model is the 2D version
of the same network; each 2D kernel ``(O, I, kh, kw)`` becomes a 3D causal kernel ``(O, I, kt, kh, kw)``
that is zero except in the last temporal slot (front-only causal padding then makes a one-frame input
see exactly the 2D convolution), and the image model's up/downsampling never touches time.

Open-MAGVIT2's video model pools its GroupNorm statistics (and the decoder's adaptive-norm statistics
of the quantized latent) over time; ``time_pooled_norm=True`` reproduces that, our default keeps
per-frame statistics (strictly causal, chunkable). Both give the same result on one frame.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from magvit2.convert.checkpoint import read_state_dict
from magvit2.models.config import TokenizerConfig
from magvit2.models.tokenizer import CONFIG_NAME, WEIGHTS_NAME, VideoTokenizer

REPORT_NAME = "conversion.json"
NORM_GROUPS = 32  # Open-MAGVIT2 hard-codes GroupNorm(32, C, eps=1e-6)
NORM_EPS = 1e-6
EMA_PREFIX = "model_ema."
EMA_COUNTERS = ("model_ema.decay", "model_ema.num_updates")
#: Non-persistent in today's LFQ; older code saved some of them. Recomputed from the bit count.
LFQ_BUFFERS = ("mask", "zero", "codebook", "pre_mask", "post_mask")
#: Modules of the image model that are 2D convolutions (our 3D convs keep their weight in ``.conv_1``).
CONV_MODULES = ("conv_in", "conv_out", "conv1", "conv2", "nin_shortcut", "downsample", "conv_shortcut")
#: Segments of Open-MAGVIT2's tokenizer key names, to restore the dots of EMA names (longest first).
_SEGMENTS = sorted(
    {"encoder", "decoder", "down", "up", "mid_block", "block", "adaptive", "gamma", "beta", "norm1", "norm2",
     "norm_out", "upsample", "weight", "bias", "conv_1", *CONV_MODULES},
    key=len,
    reverse=True,
)  # fmt: skip

#: Open-MAGVIT2's published architectures (ch 128, 4 res blocks, 18-bit LFQ): kind and ch_mult.
OPEN_MAGVIT2_ARCHITECTURES: dict[str, tuple[str, tuple[int, ...]]] = {
    "open-magvit2-video-128": ("video", (1, 2, 2, 4)),
    "open-magvit2-image-128": ("image", (1, 2, 2, 4)),
    "open-magvit2-image-256": ("image", (1, 1, 2, 2, 4)),
}


class ConversionError(ValueError):
    """A checkpoint that is not an Open-MAGVIT2 tokenizer of a layout we can convert exactly."""


# ---------------------------------------------------------------------------------------------- configs
def _config(
    kind: str,
    ch: int,
    ch_mult: Sequence[int],
    enc_blocks: Sequence[int],
    dec_blocks: Sequence[int],
    mid_blocks: int,
    z_channels: int,
    in_channels: int = 3,
    time_pooled_norm: bool = False,
) -> TokenizerConfig:
    """Our config for an Open-MAGVIT2 network (LFQ with ``bit_order="lsb"``: ids equal Open-MAGVIT2's)."""
    levels = len(ch_mult)
    if kind == "video":  # Open-MAGVIT2: a level whose ch_mult != 1 downsamples time too
        temporal = tuple(m != 1 for m in ch_mult[: levels - 1])
    else:  # the image model never touches time (one frame in, one frame out)
        temporal = (False,) * (levels - 1)
    return TokenizerConfig(
        quantizer={"kind": "lfq", "bits": z_channels, "options": {"bit_order": "lsb"}},
        in_channels=in_channels,
        ch=ch,
        ch_mult=tuple(ch_mult),
        num_res_blocks=tuple(enc_blocks),
        num_mid_blocks=mid_blocks,
        decoder_num_res_blocks=tuple(dec_blocks),
        temporal_downsample=temporal,
        norm_groups=NORM_GROUPS,
        norm_eps=NORM_EPS,
        time_pooled_norm=time_pooled_norm,
    )


def open_magvit2_config(name: str, time_pooled_norm: bool = False) -> TokenizerConfig:
    """Config of a published Open-MAGVIT2 tokenizer: ``open-magvit2-video-128`` (370,547,349
    parameters), ``open-magvit2-image-128`` or ``open-magvit2-image-256`` (2D kernels inflated to 3D)."""
    if name not in OPEN_MAGVIT2_ARCHITECTURES:
        raise ValueError(
            f"unknown Open-MAGVIT2 config {name!r}; expected one of {sorted(OPEN_MAGVIT2_ARCHITECTURES)}"
        )
    kind, ch_mult = OPEN_MAGVIT2_ARCHITECTURES[name]
    n = len(ch_mult)
    return _config(kind, 128, ch_mult, (4,) * n, (4,) * n, 4, 18, time_pooled_norm=time_pooled_norm)


def _architecture_name(kind: str, config: TokenizerConfig) -> str | None:
    """The published name whose architecture ``config`` has, or None."""
    for name in OPEN_MAGVIT2_ARCHITECTURES:
        ref = open_magvit2_config(name, config.time_pooled_norm)
        if OPEN_MAGVIT2_ARCHITECTURES[name][0] == kind and ref.to_dict() == config.to_dict():
            return name
    return None


# ---------------------------------------------------------------------------------------------- names
def _strip_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove a wrapper prefix (``module.``, ``model.``, ``_orig_mod.`` ...) that every tokenizer key
    carries: the prefix in front of ``encoder.conv_in.``, or of ``model_ema.`` when there is no raw copy."""
    clean = {k.replace("._orig_mod.", ".").removeprefix("_orig_mod."): v for k, v in state.items()}
    for anchor in (re.compile(r"^(.*?)encoder\.conv_in\."), re.compile(r"^(.*?)model_ema\.encoderconv_in")):
        prefixes = {m.group(1) for k in clean if (m := anchor.match(k))}
        if len(prefixes) == 1:
            prefix = prefixes.pop()
            return {k.removeprefix(prefix): v for k, v in clean.items()}
        if len(prefixes) > 1:
            raise ConversionError(
                f"checkpoint: expected one tokenizer, found encoder.conv_in under several prefixes "
                f"{sorted(prefixes)}"
            )
    return clean


def ema_name(key: str) -> str:
    """Open-MAGVIT2's name of the EMA copy of parameter ``key``: ``model_ema.`` + key without dots."""
    return EMA_PREFIX + key.replace(".", "")


def _restore_dots(flat: str) -> str | None:
    """``encoderdown0block0norm1weight`` -> ``encoder.down.0.block.0.norm1.weight`` (None if unparsable)."""
    parts, i = [], 0
    while i < len(flat):
        digits = re.match(r"\d+", flat[i:])
        if digits:
            parts.append(digits.group())
            i += len(digits.group())
            continue
        seg = next((s for s in _SEGMENTS if flat.startswith(s, i)), None)
        if seg is None:
            return None
        parts.append(seg)
        i += len(seg)
    return ".".join(parts)


def _skip_reason(key: str) -> str | None:
    """Why a non-tokenizer key is deliberately not converted, or None if it is not known."""
    if key in EMA_COUNTERS:
        return "EMA counters"
    if key.startswith("loss.discriminator."):
        return "discriminator"
    if key.startswith(("loss.perceptual_loss.", "loss.lpips.", "loss.perceptual.")):
        return "LPIPS"
    if key.startswith("loss."):
        return "other loss-module state"
    if key.startswith("quantize.") and key.split(".")[-1] in LFQ_BUFFERS:
        return "LFQ buffers (recomputed)"
    return None


def _to_ours(key: str, kind: str) -> str:
    """Open-MAGVIT2 key -> our key (image: 2D conv ``x.conv1.weight`` -> ``x.conv1.conv_1.weight``)."""
    if kind == "video":
        return key
    module, _, param = key.rpartition(".")
    if module.rsplit(".", 1)[-1] in CONV_MODULES:
        return f"{module}.conv_1.{param}"
    return key


# ---------------------------------------------------------------------------------------------- inference
def _shape(shapes: Mapping[str, Sequence[int]], key: str, ndim: int | None = None) -> tuple[int, ...]:
    if key not in shapes:
        raise ConversionError(f"checkpoint: expected key {key!r} (Open-MAGVIT2 layout), it is missing")
    shape = tuple(int(s) for s in shapes[key])
    if ndim is not None and len(shape) != ndim:
        raise ConversionError(f"checkpoint: {key!r} expected a {ndim}-D tensor, got shape {list(shape)}")
    return shape


def _indices(shapes: Mapping[str, Any], pattern: str) -> list[int]:
    """Sorted distinct integers ``i`` of keys matching ``pattern`` (a regex with one ``(\\d+)`` group)."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes if (m := rx.match(k))})


def _count(shapes: Mapping[str, Any], pattern: str, where: str) -> int:
    idx = _indices(shapes, pattern)
    if idx != list(range(len(idx))):
        raise ConversionError(f"checkpoint: {where} indices {idx} are not 0..n-1")
    return len(idx)


def infer_config(
    shapes: Mapping[str, Sequence[int]], time_pooled_norm: bool = False
) -> tuple[TokenizerConfig, str]:
    """Our config for the Open-MAGVIT2 network whose raw key names and shapes are ``shapes``.

    Rules: ``kind`` is video when ``encoder.conv_in`` is a 3D conv (``...conv_in.conv_1.weight``, 5-D),
    image when 2D (``...conv_in.weight``, 4-D); ``in_channels``/``ch`` from that kernel; ``z`` (LFQ bits)
    from ``encoder.conv_out``; one level per ``encoder.down.{i}`` with ``ch_mult[i]`` = output channels of
    its last residual block / ``ch``; residual blocks per level counted in ``encoder.down.{i}.block`` and
    ``decoder.up.{i}.block``; mid blocks counted in ``encoder.mid_block`` (the decoder's must match);
    temporal downsampling from each decoder upsampler's output channels (``C * bt * 4``), which must follow
    Open-MAGVIT2's rule (video: time halves at levels whose ``ch_mult != 1``; image: never). GroupNorm has
    32 groups, eps 1e-6. Returns ``(config, kind)``.
    """
    kind, conv_in = _network_kind(shapes)
    w = lambda key: key if kind == "image" else key.replace(".weight", ".conv_1.weight")  # noqa: E731
    ch, in_channels = conv_in[0], conv_in[1]
    z_channels = _shape(shapes, w("encoder.conv_out.weight"))[0]
    ch_mult, enc_blocks, dec_blocks = _levels(shapes, w, ch)
    mid = _count(shapes, r"^encoder\.mid_block\.(\d+)\.", "encoder.mid_block")
    dec_mid = _count(shapes, r"^decoder\.mid_block\.(\d+)\.", "decoder.mid_block")
    if mid != dec_mid:
        raise ConversionError(
            f"checkpoint: encoder has {mid} mid blocks, decoder {dec_mid}; expected the same number"
        )
    config = _config(
        kind, ch, ch_mult, enc_blocks, dec_blocks, mid, z_channels, in_channels, time_pooled_norm
    )
    _check_upsamplers(shapes, config, kind)
    return config, kind


def _network_kind(shapes: Mapping[str, Sequence[int]]) -> tuple[str, Sequence[int]]:
    """``("video", conv_in kernel shape)`` for a 3D first conv, ``("image", ...)`` for a 2D one."""
    if "encoder.conv_in.conv_1.weight" in shapes:
        return "video", _shape(shapes, "encoder.conv_in.conv_1.weight", 5)
    if "encoder.conv_in.weight" in shapes:
        return "image", _shape(shapes, "encoder.conv_in.weight", 4)
    raise ConversionError(
        "checkpoint: expected an Open-MAGVIT2 tokenizer (a key 'encoder.conv_in.weight' for the image "
        "model or 'encoder.conv_in.conv_1.weight' for the video model); found neither, first keys "
        f"{list(shapes)[:3]}"
    )


def _levels(
    shapes: Mapping[str, Sequence[int]], w: Callable[[str], str], ch: int
) -> tuple[list[int], list[int], list[int]]:
    """``(ch_mult, encoder blocks per level, decoder blocks per level)``: one level per
    ``encoder.down.{i}``, its multiplier from the output channels of its last residual block."""
    levels = _count(shapes, r"^encoder\.down\.(\d+)\.", "encoder.down")
    if levels == 0:
        raise ConversionError("checkpoint: expected encoder.down.0.* (at least one level), found none")
    enc_blocks = [
        _count(shapes, rf"^encoder\.down\.{i}\.block\.(\d+)\.", f"encoder.down.{i}.block")
        for i in range(levels)
    ]
    dec_blocks = [
        _count(shapes, rf"^decoder\.up\.{i}\.block\.(\d+)\.", f"decoder.up.{i}.block") for i in range(levels)
    ]
    ch_mult = []
    for i in range(levels):
        if enc_blocks[i] == 0:
            raise ConversionError(
                f"checkpoint: expected residual blocks under encoder.down.{i}.block, found none"
            )
        key = w(f"encoder.down.{i}.block.{enc_blocks[i] - 1}.conv2.weight")
        out = _shape(shapes, key)[0]
        if out % ch:
            raise ConversionError(f"checkpoint: {key!r} has {out} output channels, not a multiple of ch {ch}")
        ch_mult.append(out // ch)
    return ch_mult, enc_blocks, dec_blocks


def _check_upsamplers(shapes: Mapping[str, Sequence[int]], config: TokenizerConfig, kind: str) -> None:
    """The decoder's upsamplers reveal each level's temporal factor (output channels ``C * bt * 4``):
    raise ConversionError where one does not follow Open-MAGVIT2's rule that ``config`` encodes."""
    for i in range(1, len(config.ch_mult)):
        key = "decoder.up.{}.upsample.conv1.{}weight".format(i, "" if kind == "image" else "conv_1.")
        out, c = _shape(shapes, key)[0], config.ch * config.ch_mult[i]
        expected = c * 4 * (2 if config.temporal_downsample[i - 1] else 1)
        if out != expected:
            raise ConversionError(
                f"checkpoint: {key!r} has {out} output channels; Open-MAGVIT2's {kind} layout with ch_mult "
                f"{list(config.ch_mult)} expects {expected}"
            )


# ---------------------------------------------------------------------------------------------- report
@dataclass
class ConversionReport:
    """What a conversion did.

    Attributes:
        source: the checkpoint (path or description).
        kind: ``"video"`` or ``"image"`` (Open-MAGVIT2 model the checkpoint holds).
        weights: ``"ema"`` (the ``model_ema.*`` copy) or ``"raw"``.
        name: the published architecture it matches (``open-magvit2-video-128`` ...), or None.
        config: our inferred config (written to ``config.json``).
        consumed: checkpoint tensors converted into model weights.
        inflated: of those, 2D kernels inflated to 3D (image checkpoints).
        source_parameters: elements of the consumed tensors.
        parameters: parameters of the converted model.
        skipped: keys deliberately not converted, grouped by reason.
        stubbed_globals: pickle metadata globals read as inert stand-ins (never executed).
    """

    source: str
    kind: str
    weights: str
    name: str | None
    config: TokenizerConfig
    consumed: int
    inflated: int
    source_parameters: int
    parameters: int
    skipped: dict[str, list[str]] = field(default_factory=dict)
    stubbed_globals: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "source": self.source,
            "kind": self.kind,
            "weights": self.weights,
            "name": self.name,
            "config": self.config.to_dict(),
            "consumed": self.consumed,
            "inflated": self.inflated,
            "source_parameters": self.source_parameters,
            "parameters": self.parameters,
            "skipped": self.skipped,
            "stubbed_globals": self.stubbed_globals,
        }

    def summary(self) -> str:
        """Human-readable lines (what the CLI prints)."""
        c = self.config
        lines = [
            f"source: {self.source}",
            f"model: Open-MAGVIT2 {self.kind} tokenizer ({self.name or 'custom size'}), "
            f"{self.weights} weights",
            f"config: ch {c.ch}, ch_mult {list(c.ch_mult)}, res blocks {list(c.num_res_blocks)} "
            f"(decoder {list(c.decoder_num_res_blocks)}, mid {c.num_mid_blocks}), z {c.z_channels}, "
            f"temporal_downsample {list(c.temporal_downsample)}, time_pooled_norm {c.time_pooled_norm}, "
            f"bit_order {c.quantizer.options.get('bit_order')}",
            f"consumed: {self.consumed} tensors ({self.source_parameters:,} values; "
            f"{self.inflated} 2D kernels inflated to 3D) -> {self.parameters:,} parameters",
        ]
        for reason, keys in self.skipped.items():
            lines.append(f"skipped ({reason}): {len(keys)} keys")
        if not self.skipped:
            lines.append("skipped: none")
        if self.stubbed_globals:
            lines.append(f"metadata read as inert stand-ins: {', '.join(self.stubbed_globals)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- conversion
def _select(
    state: Mapping[str, Tensor], ema: bool | None
) -> tuple[dict[str, Tensor], str, dict[str, list[str]]]:
    """Pick raw or EMA weights under their raw (dotted) names; group every other key by skip reason."""
    raw: dict[str, Tensor] = {}
    ema_flat: dict[str, Tensor] = {}
    skipped: dict[str, list[str]] = {}
    for key, value in state.items():
        if key.startswith(("encoder.", "decoder.")):
            raw[key] = value
        elif key.startswith(EMA_PREFIX) and key not in EMA_COUNTERS:
            ema_flat[key] = value
        elif (reason := _skip_reason(key)) is not None:
            skipped.setdefault(reason, []).append(key)
        else:
            raise ConversionError(
                f"checkpoint: unknown key {key!r}; expected encoder.*, decoder.*, model_ema.*, loss.* "
                "(Open-MAGVIT2 layout)"
            )
    use_ema = bool(ema_flat) if ema is None else ema
    if use_ema and not ema_flat:
        raise ConversionError("checkpoint: --ema asked for the EMA copy, but it holds no model_ema.* weights")
    if not use_ema and not raw:
        raise ConversionError(
            "checkpoint: --no-ema asked for the raw weights, but it holds no encoder.*/decoder.*"
        )
    if not use_ema:
        if ema_flat:
            skipped["EMA copy (raw weights chosen)"] = list(ema_flat)
        return raw, "raw", skipped
    if raw:  # name each EMA tensor after the raw key it copies
        selected = {}
        for key in raw:
            if ema_name(key) not in ema_flat:
                raise ConversionError(f"checkpoint: {key!r} has no EMA copy {ema_name(key)!r}")
            selected[key] = ema_flat.pop(ema_name(key))
        if ema_flat:
            first = next(iter(ema_flat))
            raise ConversionError(
                f"checkpoint: unknown key {first!r} (an EMA tensor with no raw counterpart)"
            )
        skipped["raw weights (EMA chosen)"] = list(raw)
        return selected, "ema", skipped
    selected = {}
    for flat, value in ema_flat.items():
        name = _restore_dots(flat[len(EMA_PREFIX) :])
        if name is None or not name.startswith(("encoder.", "decoder.")):
            raise ConversionError(f"checkpoint: unknown key {flat!r} (not an EMA copy of a tokenizer weight)")
        selected[name] = value
    return selected, "ema", skipped


def _expected_shapes(config: TokenizerConfig) -> dict[str, tuple[int, ...]]:
    """Our model's state-dict names and shapes for ``config`` (built on the meta device: no memory)."""
    with torch.device("meta"):
        model = VideoTokenizer(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _inflate(value: Tensor, shape: tuple[int, ...]) -> Tensor:
    """2D kernel ``(O, I, kh, kw)`` -> 3D ``(O, I, kt, kh, kw)``: zeros, ``value`` in the last time slot."""
    out = value.new_zeros(shape)
    out[:, :, -1] = value
    return out


def convert_state_dict(
    state: Mapping[str, Tensor],
    *,
    ema: bool | None = None,
    time_pooled_norm: bool = False,
    source: str = "state dict",
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Convert an Open-MAGVIT2 state dict (a Lightning checkpoint's ``state_dict``) to ours.

    Args:
        state: name -> tensor (a wrapper prefix such as ``module.`` is removed). Tensors may live on
            the ``meta`` device (a dry run: names and shapes only).
        ema: True: the EMA copy (``model_ema.<name without dots>``); False: the raw weights; None
            (default): the EMA copy when the checkpoint has one, else the raw weights.
        time_pooled_norm: the config's normalisation switch (True reproduces Open-MAGVIT2's video model
            on clips; False is our strictly causal default; identical on one frame).
        source: a description for the report.

    Returns ``(tensors, report)``: our model's full state dict (every key consumed or reported as
    skipped) and the :class:`ConversionReport`. Raises :class:`ConversionError` (a ValueError) naming the
    first offending key for an unknown key, a missing key or a wrong shape, prefixed with ``source``.
    """
    try:
        return _convert(state, ema, time_pooled_norm, source)
    except ConversionError as e:  # name the file, not just "checkpoint"
        raise ConversionError(f"{source}: {str(e).removeprefix('checkpoint: ')}") from None


def _convert(
    state: Mapping[str, Tensor], ema: bool | None, time_pooled_norm: bool, source: str
) -> tuple[dict[str, Tensor], ConversionReport]:
    """:func:`convert_state_dict` without the file name in its errors."""
    state = _strip_prefix(state)
    selected, weights, skipped = _select(state, ema)
    config, kind = infer_config({k: tuple(v.shape) for k, v in selected.items()}, time_pooled_norm)
    expected = _expected_shapes(config)
    tensors: dict[str, Tensor] = {}
    inflated = 0
    for key, value in selected.items():
        ours = _to_ours(key, kind)
        shape = expected.get(ours)
        if shape is None:
            raise ConversionError(f"checkpoint: unknown key {key!r} for the inferred {kind} config")
        if kind == "image" and value.ndim == 4 and len(shape) == 5 and value.shape == shape[:2] + shape[3:]:
            value, inflated = _inflate(value, shape), inflated + 1
        if tuple(value.shape) != shape:
            raise ConversionError(
                f"checkpoint: {key!r} has shape {list(value.shape)}, expected {list(shape)} for the inferred "
                f"{kind} config (ch {config.ch}, ch_mult {list(config.ch_mult)})"
            )
        if not value.is_floating_point():
            raise ConversionError(f"checkpoint: {key!r} expected a float tensor, got {value.dtype}")
        tensors[ours] = value.float()
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise ConversionError(f"checkpoint: expected key for our {missing[0]!r}, the checkpoint lacks it")
    report = ConversionReport(
        source=source,
        kind=kind,
        weights=weights,
        name=_architecture_name(kind, config),
        config=config,
        consumed=len(selected),
        inflated=inflated,
        source_parameters=sum(v.numel() for v in selected.values()),
        parameters=sum(v.numel() for v in tensors.values()),
        skipped=skipped,
    )
    return tensors, report


def load_open_magvit2(
    checkpoint: str | Path | Mapping[str, Tensor],
    *,
    ema: bool | None = None,
    time_pooled_norm: bool = False,
) -> tuple[VideoTokenizer, ConversionReport]:
    """A :class:`VideoTokenizer` (eval mode, CPU) holding an Open-MAGVIT2 checkpoint's weights.

    ``checkpoint``: a Lightning ``.ckpt`` (read with ``torch.load(weights_only=True)``), a
    ``torch.save``-d or safetensors state dict, or a state dict in memory. ``ema`` and
    ``time_pooled_norm`` as in :func:`convert_state_dict`.
    """
    stubbed: list[str] = []
    if isinstance(checkpoint, Mapping):
        state, source = checkpoint, "state dict"
    else:
        state, stubbed = read_state_dict(checkpoint)
        source = str(checkpoint)
    tensors, report = convert_state_dict(state, ema=ema, time_pooled_norm=time_pooled_norm, source=source)
    report.stubbed_globals = stubbed
    model = VideoTokenizer(report.config)
    model.load_state_dict(tensors, strict=True)
    return model.eval(), report


def convert_open_magvit2(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    ema: bool | None = None,
    time_pooled_norm: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert an Open-MAGVIT2 checkpoint into ``out_dir`` (``config.json`` + ``model.safetensors``, which
    :meth:`VideoTokenizer.from_pretrained` loads, and ``conversion.json``, the report).

    Refuses (FileExistsError) to replace an existing conversion unless ``overwrite``.
    """
    out_dir = Path(out_dir)
    if not overwrite and any((out_dir / n).exists() for n in (CONFIG_NAME, WEIGHTS_NAME)):
        raise FileExistsError(
            f"{out_dir} already holds a model; pass overwrite=True (--overwrite) to replace it"
        )
    model, report = load_open_magvit2(checkpoint, ema=ema, time_pooled_norm=time_pooled_norm)
    model.save_pretrained(out_dir)
    (out_dir / REPORT_NAME).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def reverse_bits(ids: Tensor, bits: int) -> Tensor:
    """Token ids with their ``bits`` binary digits reversed (most-significant-first <-> lsb-first).

    Open-MAGVIT2's first release (June 2024) numbered tokens most-significant-first; our converted
    models (``bit_order="lsb"``) give today's ids; ``reverse_bits(ids, 18)`` maps one to the other.
    """
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"reverse_bits: expected integer ids, got dtype {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= 2**bits):
        raise ValueError(
            f"reverse_bits: expected ids in [0, 2**{bits}), got [{int(ids.min())}, {int(ids.max())}]"
        )
    ids = ids.long()
    out = torch.zeros_like(ids)
    for k in range(bits):
        out |= ((ids >> k) & 1) << (bits - 1 - k)
    return out
