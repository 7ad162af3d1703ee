"""Codec baselines on a real clip: target bpp is hit, quality rises with rate, the RD plot is a real PNG."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from magvit2.evaluation.codecs import (
    CODECS,
    _sei_bytes,
    available_codecs,
    clip_quality,
    encode_at_bpp,
    encode_clip,
    plot_rate_distortion,
    rate_distortion,
    read_clip,
)

AVAILABLE = available_codecs()
CODEC_PARAMS = [
    pytest.param(c, marks=pytest.mark.skipif(c not in AVAILABLE, reason=f"no {c} in PyAV")) for c in CODECS
]


@pytest.fixture(autouse=True, scope="module")
def _quiet_svt():
    """SVT-AV1 prints its configuration for every encode unless SVT_LOG is low."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SVT_LOG", "1")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def clip(clips_dir):
    frames, fps = read_clip(clips_dir / "carphone_pristine.mp4", num_frames=9)
    return frames, fps


def test_read_clip(clip, clips_dir):
    frames, fps = clip
    assert frames.shape == (9, 144, 176, 3) and frames.dtype == np.uint8
    assert fps == pytest.approx(30000 / 1001)
    later, _ = read_clip(clips_dir / "carphone_pristine.mp4", num_frames=2, start=3)
    np.testing.assert_array_equal(later, frames[3:5])
    assert frames.std() > 20  # real content, not a blank clip


def test_pyav_ships_the_three_encoders():
    assert AVAILABLE.get("h264") == "libx264"
    assert AVAILABLE.get("h265") == "libx265"
    assert AVAILABLE.get("av1") in ("libsvtav1", "libaom-av1")


@pytest.mark.parametrize("codec", CODEC_PARAMS)
def test_target_bpp_is_hit(clip, codec):
    frames, fps = clip
    for target in (0.1, 0.3):
        enc = encode_at_bpp(frames, codec, target, fps=fps)
        assert abs(enc.bpp / target - 1) <= 0.10, (codec, target, enc.bpp, enc.crf)
        assert enc.bpp == pytest.approx(enc.num_bytes * 8 / (9 * 144 * 176))
        assert enc.frames.shape == frames.shape and enc.frames.dtype == np.uint8
        q = clip_quality(frames, enc.frames)
        assert 24.0 < q["psnr"] < 45.0 and 0.7 < q["ssim"] < 1.0, q


@pytest.mark.parametrize("codec", CODEC_PARAMS)
def test_bpp_falls_and_psnr_falls_with_crf(clip, codec):
    frames, fps = clip
    spec = CODECS[codec]
    crfs = np.linspace(spec.crf_min + 10, spec.crf_max - 5, 4).round()
    encs = [encode_clip(frames, codec, float(c), fps=fps) for c in crfs]
    bpps = [e.bpp for e in encs]
    psnrs = [clip_quality(frames, e.frames)["psnr"] for e in encs]
    assert all(a > b for a, b in pairwise(bpps)), bpps
    assert all(a > b for a, b in pairwise(psnrs)), psnrs


def test_sei_units_are_not_counted():
    sps = b"\x00\x00\x00\x01" + bytes([0x67]) + b"\x11" * 9  # H.264 SPS, 14 bytes
    sei = b"\x00\x00\x01" + bytes([0x06]) + b"\x22" * 20  # H.264 SEI, 24 bytes with start code
    idr = b"\x00\x00\x01" + bytes([0x65]) + b"\x33" * 50
    assert _sei_bytes(sps + sei + idr, CODECS["h264"]) == 24
    hevc_sei = b"\x00\x00\x01" + bytes([39 << 1, 0x01]) + b"\x44" * 30  # prefix SEI, 35 bytes
    hevc_vps = b"\x00\x00\x01" + bytes([32 << 1, 0x01]) + b"\x55" * 10
    assert _sei_bytes(hevc_vps + hevc_sei, CODECS["h265"]) == 35
    assert _sei_bytes(sps + sei, CODECS["av1"]) == 0


def test_rate_distortion_and_plot(clip, tmp_path):
    frames, fps = clip
    codecs = [c for c in CODECS if c in AVAILABLE]
    points = rate_distortion(frames, [0.08, 0.2, 0.5], codecs=codecs, fps=fps)
    assert len(points) == 3 * len(codecs)
    for codec in codecs:
        pts = sorted((p for p in points if p["codec"] == codec), key=lambda p: p["bpp"])
        assert [p["target_bpp"] for p in pts] == [0.08, 0.2, 0.5]
        assert all(abs(p["bpp"] / p["target_bpp"] - 1) <= 0.10 for p in pts), pts
        assert all(a["psnr"] < b["psnr"] and a["ssim"] < b["ssim"] for a, b in pairwise(pts)), pts
    tokenizer = [{"label": "magvit2 (test)", "bpp": 0.1, "psnr": 27.0, "ssim": 0.85}]
    path = plot_rate_distortion(points, tokenizer, tmp_path / "rd" / "plot.png", title="carphone")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(path)
    assert img.shape[0] >= 300 and img.shape[1] >= 600
    rgb = img[..., :3].reshape(-1, 3)
    assert len(np.unique((rgb * 255).astype(np.uint8), axis=0)) > 50  # lines, markers, text: not blank
    assert (rgb.min(axis=1) < 0.5).mean() > 0.005


def test_errors(clip):
    frames, _ = clip
    with pytest.raises(ValueError, match="codec must be one of"):
        encode_clip(frames, "mpeg2", 30)
    with pytest.raises(ValueError, match="even height and width"):
        encode_clip(frames[:, :143], "h264", 30)
    with pytest.raises(ValueError, match="uint8"):
        encode_clip(frames.astype(np.float32), "h264", 30)
    with pytest.raises(ValueError, match="target_bpp"):
        encode_at_bpp(frames, "h264", 0.0)
