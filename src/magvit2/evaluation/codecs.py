"""Classical codec baselines (H.264, H.265, AV1 through PyAV) at a target bits per pixel, and RD plots.

A clip (uint8 frames ``(T, H, W, 3)``, H and W even) is converted to YUV 4:2:0, encoded in memory with a
PyAV codec context (no container, so no container overhead), decoded back to RGB and scored.

Rate: ``bpp = bytes * 8 / (T * H * W)`` of the elementary stream (all packets), *excluding* SEI NAL units
(H.264 type 6, H.265 types 39/40). Those carry no picture data: x264 writes its version and full option
string there (~700 bytes) and x265 even more (~2.3 kB), which would dominate the size of a short,
low-rate clip. Parameter sets (SPS/PPS/VPS, the AV1 sequence header) are counted.

Hitting a target bpp: constant-bitrate modes are unreliable on clips of a few frames, so
:func:`encode_at_bpp` bisects the constant-quality parameter (CRF; fractional in quarter steps for
x264/x265, integer for SVT-AV1) until the measured bpp is within ``tolerance`` (relative) of the target,
and returns the closest encode found. Targets outside the codec's range give the nearest end
(``EncodedClip.bpp`` tells what was reached).

SVT-AV1 prints its configuration to stderr; set the environment variable ``SVT_LOG=1`` to silence it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from magvit2.data.video_io import probe, read_video
from magvit2.evaluation.metrics import psnr, ssim

__all__ = [
    "CODECS",
    "CodecSpec",
    "EncodedClip",
    "available_codecs",
    "read_clip",
    "encode_clip",
    "encode_at_bpp",
    "clip_quality",
    "rate_distortion",
    "plot_rate_distortion",
]


@dataclass(frozen=True)
class CodecSpec:
    """How to run one codec: encoder candidates (first available wins), decoder candidates, CRF range."""

    encoders: tuple[str, ...]
    decoders: tuple[str, ...]
    crf_min: float
    crf_max: float
    crf_step: float
    options: tuple[tuple[str, str], ...]
    sei_nal_types: tuple[int, ...]
    hevc_nal_header: bool = False


CODECS: dict[str, CodecSpec] = {
    "h264": CodecSpec(("libx264",), ("h264",), 0.0, 51.0, 0.25, (("preset", "medium"),), (6,)),
    "h265": CodecSpec(
        ("libx265",),
        ("hevc",),
        0.0,
        51.0,
        0.25,
        (("preset", "medium"), ("x265-params", "log-level=error:info=0")),
        (39, 40),
        hevc_nal_header=True,
    ),
    "av1": CodecSpec(
        ("libsvtav1", "libaom-av1"), ("libdav1d", "av1", "libaom-av1"), 1.0, 63.0, 1.0, (("preset", "6"),), ()
    ),
}


@dataclass
class EncodedClip:
    """Result of one encode: decoded frames (T, H, W, 3) uint8, counted bytes, bpp and the settings."""

    codec: str
    encoder: str
    crf: float
    frames: np.ndarray
    num_bytes: int
    bpp: float


def _first_available(names: Iterable[str], mode: str) -> str | None:
    """First codec name in ``names`` that this PyAV build can open for 'w' (encode) or 'r' (decode)."""
    for name in names:
        try:
            av.Codec(name, mode)
        except Exception:  # PyAV raises different error types for unknown codecs across versions
            continue
        return name
    return None


def available_codecs() -> dict[str, str]:
    """Our codec names ('h264', 'h265', 'av1') that can be encoded and decoded here -> encoder name."""
    found = {}
    for key, spec in CODECS.items():
        enc, dec = _first_available(spec.encoders, "w"), _first_available(spec.decoders, "r")
        if enc is not None and dec is not None:
            found[key] = enc
    return found


def read_clip(path: str | Path, num_frames: int | None = None, start: int = 0) -> tuple[np.ndarray, float]:
    """Decode frames ``start .. start+num_frames`` of a video file -> (uint8 (T, H, W, 3) RGB, fps):
    the library's reader (any pixel format converted, errors naming the file) plus the stream's rate."""
    frames = read_video(path, start=start, max_frames=num_frames)
    return frames, float(probe(path).fps)


def _check_clip(frames: np.ndarray) -> None:
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
    ):
        got = getattr(frames, "shape", None), getattr(frames, "dtype", type(frames))
        raise ValueError(f"codecs: expected frames as a uint8 numpy array (T, H, W, 3), got {got}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(
            f"codecs: YUV 4:2:0 needs even height and width, got {frames.shape[1]}x{frames.shape[2]}"
        )


def _sei_bytes(data: bytes, spec: CodecSpec) -> int:
    """Bytes (start codes included) of the SEI NAL units in an Annex-B H.264/H.265 packet."""
    if not spec.sei_nal_types:
        return 0
    starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
    total = 0
    for i, s in enumerate(starts):
        end = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
        if s >= len(data):
            continue
        nal_type = (data[s] >> 1) & 0x3F if spec.hevc_nal_header else data[s] & 0x1F
        if nal_type in spec.sei_nal_types:
            total += end - s + 3
    return total


def encode_clip(
    frames: np.ndarray, codec: str, crf: float, fps: float = 25.0, preset: str | None = None
) -> EncodedClip:
    """Encode ``frames`` (T, H, W, 3) uint8 with ``codec`` ('h264', 'h265', 'av1') at quality ``crf``.

    Returns the decoded frames (T, H, W, 3) uint8 and the counted stream size (SEI excluded) and bpp.
    """
    _check_clip(frames)
    if codec not in CODECS:
        raise ValueError(f"encode_clip: codec must be one of {sorted(CODECS)}, got {codec!r}")
    spec = CODECS[codec]
    encoder = _first_available(spec.encoders, "w")
    decoder = _first_available(spec.decoders, "r")
    if encoder is None or decoder is None:
        raise ValueError(
            f"encode_clip: this PyAV build has no encoder/decoder for {codec!r} ({spec.encoders})"
        )
    t, h, w, _ = frames.shape
    ctx = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    rate = Fraction(fps).limit_denominator(1001)
    ctx.time_base, ctx.framerate = 1 / rate, rate
    options = dict(spec.options)
    if preset is not None:
        options["preset"] = preset
    options["crf"] = f"{crf:g}"
    ctx.options = options
    packets = []
    for i, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(
            format="yuv420p"
        )
        frame.pts = i
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    payload = [bytes(p) for p in packets]
    num_bytes = sum(len(p) - _sei_bytes(p, spec) for p in payload)
    if ctx.extradata:
        num_bytes += len(ctx.extradata)

    dec = av.CodecContext.create(decoder, "r")
    if ctx.extradata:
        dec.extradata = ctx.extradata
    decoded = []
    for p in packets:
        decoded.extend(dec.decode(p))
    decoded.extend(dec.decode(None))
    out = np.stack([f.to_ndarray(format="rgb24") for f in decoded])
    if out.shape != frames.shape:
        raise ValueError(f"encode_clip: {encoder} round trip gave {out.shape}, expected {frames.shape}")
    return EncodedClip(codec, encoder, float(crf), out, num_bytes, num_bytes * 8 / (t * h * w))


def _log_err(bpp: float, target: float) -> float:
    return abs(math.log(max(bpp, 1e-12) / target))


def encode_at_bpp(
    frames: np.ndarray,
    codec: str,
    target_bpp: float,
    fps: float = 25.0,
    tolerance: float = 0.05,
    preset: str | None = None,
    max_steps: int = 16,
) -> EncodedClip:
    """Encode at the CRF whose bpp is closest to ``target_bpp`` (bisection, see the module docstring).

    Stops as soon as ``|bpp / target - 1| <= tolerance``; otherwise returns the closest encode tried.
    """
    if not target_bpp > 0:
        raise ValueError(f"encode_at_bpp: target_bpp must be > 0, got {target_bpp}")
    spec = CODECS.get(codec)
    if spec is None:
        raise ValueError(f"encode_at_bpp: codec must be one of {sorted(CODECS)}, got {codec!r}")
    tried: dict[float, EncodedClip] = {}

    def run(q: float) -> EncodedClip:
        if q not in tried:
            tried[q] = encode_clip(frames, codec, q, fps=fps, preset=preset)
        return tried[q]

    def hit(r: EncodedClip) -> bool:
        return abs(r.bpp / target_bpp - 1) <= tolerance

    lo, hi = spec.crf_min, spec.crf_max
    for _ in range(max_steps):
        if hi - lo <= spec.crf_step:
            break
        q = round((lo + hi) / 2 / spec.crf_step) * spec.crf_step
        r = run(q)
        if hit(r):
            return r
        lo, hi = (q, hi) if r.bpp > target_bpp else (lo, q)
    for q in (lo, hi):
        run(q)
    return min(tried.values(), key=lambda r: _log_err(r.bpp, target_bpp))


def clip_quality(reference: np.ndarray, decoded: np.ndarray) -> dict[str, float]:
    """PSNR (mean of per-frame, dB) and SSIM (RGB, mean over frames) of two uint8 clips (T, H, W, 3)."""
    x = torch.from_numpy(reference).permute(3, 0, 1, 2)[None]
    y = torch.from_numpy(decoded).permute(3, 0, 1, 2)[None]
    return {"psnr": float(psnr(x, y, 255.0)), "ssim": float(ssim(x, y, 255.0))}


def rate_distortion(
    clip: np.ndarray,
    bpps: Sequence[float],
    codecs: Sequence[str] = ("h264", "h265", "av1"),
    fps: float = 25.0,
    tolerance: float = 0.05,
    progress: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Encode ``clip`` (T, H, W, 3) uint8 with every codec at every target bpp.

    Returns one dict per (codec, target): ``codec, encoder, crf, target_bpp, bpp, psnr, ssim``.
    """
    points = []
    for codec in codecs:
        for target in bpps:
            enc = encode_at_bpp(clip, codec, target, fps=fps, tolerance=tolerance)
            point = {
                "codec": codec,
                "encoder": enc.encoder,
                "crf": enc.crf,
                "target_bpp": float(target),
                "bpp": enc.bpp,
                **clip_quality(clip, enc.frames),
            }
            points.append(point)
            if progress is not None:
                progress(point)
    return points


def plot_rate_distortion(
    points: Sequence[dict],
    tokenizer_points: Sequence[dict] = (),
    path: str | Path = "rate_distortion.png",
    title: str | None = None,
) -> Path:
    """Save a PNG with PSNR vs bpp and SSIM vs bpp: one line per codec, tokenizer points as stars.

    points: dicts with ``codec, bpp, psnr, ssim`` (from :func:`rate_distortion`); tokenizer_points: dicts
    with ``bpp, psnr, ssim`` and optionally ``label``. Uses matplotlib's Agg canvas (no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, key, label in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for codec in dict.fromkeys(p["codec"] for p in points):
            pts = sorted((p for p in points if p["codec"] == codec), key=lambda p: p["bpp"])
            ax.plot([p["bpp"] for p in pts], [p[key] for p in pts], marker="o", label=codec)
        for i, tp in enumerate(tokenizer_points):
            ax.plot(
                [tp["bpp"]],
                [tp[key]],
                marker="*",
                markersize=14,
                linestyle="none",
                color=f"C{(i + 5) % 10}",
                markeredgecolor="black",
                label=tp.get("label", "tokenizer"),
            )
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
