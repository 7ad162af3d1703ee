"""Tests of magvit2.data.video_io on real clips/photographs and on generated good and bad files."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from magvit2.data.video_io import (
    VideoReadError,
    VideoWriter,
    iter_chunks,
    iter_frames,
    probe,
    read_image,
    read_video,
    to_tensor,
    to_uint8,
    write_png,
    write_png_frames,
    write_video,
)


def _linear_decode(path, n=None) -> np.ndarray:
    """Independent reference: decode with plain PyAV from the first frame, no seeking."""
    out = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if n is not None and len(out) == n:
                break
    return np.stack(out)


def _index_video(path, n=40, gop=6, size=(32, 48)) -> np.ndarray:
    """Write a video whose frame i is flat grey 5*i (with B-frames and a keyframe every `gop` frames)."""
    frames = np.stack([np.full((*size, 3), 5 * i, np.uint8) for i in range(n)])
    write_video(path, frames, fps=25, crf=1, options={"g": str(gop), "bf": "2", "keyint_min": str(gop)})
    return frames


# ------------------------------------------------------------------------------------------------ probe


def test_probe_real_clip(clips_dir):
    info = probe(clips_dir / "bigbuckbunny.mp4")
    assert (info.width, info.height, info.num_frames) == (1280, 720, 132)
    assert info.fps == Fraction(25) and info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.bit_depth == 8 and not info.has_alpha and not info.is_image
    assert info.num_frames_source == "header"
    assert info.duration == pytest.approx(132 / 25)


def test_probe_images_and_gif(photos_dir):
    astro = probe(photos_dir / "astronaut.png")
    assert astro.is_image and astro.num_frames == 1 and (astro.width, astro.height) == (512, 512)
    assert probe(photos_dir / "logo.png").has_alpha
    gif = probe(photos_dir / "no_time_for_that_tiny.gif")
    assert not gif.is_image and gif.num_frames == 24


def test_probe_decode_count_equals_header(tmp_path):
    _index_video(tmp_path / "v.mp4", n=23)
    assert probe(tmp_path / "v.mp4").num_frames == 23
    assert probe(tmp_path / "v.mp4", count="decode").num_frames == 23
    assert probe(tmp_path / "v.mp4", count="demux").num_frames == 23


# ------------------------------------------------------------------------------------------------ reading


def test_start_stride_max_frames_match_linear_decode(tmp_path):
    path = tmp_path / "idx.mp4"
    _index_video(path, n=40, gop=6)
    ref = _linear_decode(path)
    assert ref.shape == (40, 32, 48, 3)
    # frame content encodes its index: the decoded value of frame i is 5*i (crf 1: within 2 levels)
    assert np.abs(ref.reshape(40, -1).mean(1) - 5 * np.arange(40)).max() < 2
    for start, stride, n in [(0, 1, None), (0, 3, 5), (7, 2, 6), (13, 1, 4), (20, 4, None), (39, 1, 5)]:
        got = read_video(path, start=start, stride=stride, max_frames=n)
        want = ref[start::stride][:n]
        assert got.shape == want.shape, (start, stride, n)
        assert np.array_equal(got, want), (start, stride, n)


def test_seek_on_real_clip_with_keyframes(clips_dir):
    # bikes.mp4 has keyframes every ~30-60 frames: a late start seeks, and must give the same pixels
    path = clips_dir / "bikes.mp4"
    ref = _linear_decode(path, n=215)
    for start in (61, 150, 212):
        assert np.array_equal(read_video(path, start=start, max_frames=3), ref[start : start + 3])


def test_streaming_reads_only_needed_bytes(clips_dir, monkeypatch):
    path = clips_dir / "bigbuckbunny.mp4"
    size = path.stat().st_size
    opened = []
    real_open = av.open

    class Counting(io.FileIO):
        nread = 0

        def readinto(self, b):
            n = super().readinto(b)
            self.nread += n or 0
            return n

    def counting_open(file, *args, **kwargs):
        fh = Counting(str(file), "rb")
        opened.append(fh)
        return real_open(fh, *args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    frames = list(iter_frames(path, max_frames=5))
    assert len(frames) == 5 and frames[0].shape == (720, 1280, 3)
    assert opened[0].nread < 0.35 * size, (opened[0].nread, size)
    # a generator that is not exhausted reads nothing more than what was asked for
    it = iter_frames(path)
    next(it)
    assert opened[1].nread < 0.35 * size
    it.close()


def test_iter_chunks(tmp_path):
    path = tmp_path / "idx.mp4"
    _index_video(path, n=11)
    ref = _linear_decode(path)
    chunks = list(iter_chunks(path, 4))
    assert [c.shape[0] for c in chunks] == [4, 4, 3]
    assert np.array_equal(np.concatenate(chunks), ref)
    assert [c.shape[0] for c in iter_chunks(path, 4, drop_last=True)] == [4, 4]
    assert np.array_equal(np.concatenate(list(iter_chunks(path, 2, start=1, stride=3))), ref[1::3])


def test_resize_on_read(tmp_path):
    path = tmp_path / "idx.mp4"
    _index_video(path, n=3)
    small = read_video(path, size=(16, 20))
    assert small.shape == (3, 16, 20, 3)
    # flat frames stay flat (same value) after resizing
    assert np.abs(small.astype(int) - _linear_decode(path)[:, :16, :20].astype(int)).max() <= 1


def test_images_match_pillow(photos_dir):
    pil = pytest.importorskip("PIL.Image")
    for name in ("astronaut.png", "camera.png", "logo.png", "hubble_deep_field.jpg"):
        got = read_image(photos_dir / name)
        want = np.asarray(pil.open(photos_dir / name).convert("RGBA"))[..., :3]
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        tol = 0 if name.endswith(".png") else 3  # JPEG: decoders may differ by rounding
        assert np.abs(got.astype(int) - want.astype(int)).max() <= tol, name
    camera = read_image(photos_dir / "camera.png")  # grayscale -> R == G == B
    assert np.array_equal(camera[..., 0], camera[..., 1]) and np.array_equal(camera[..., 0], camera[..., 2])


def test_animated_gif_is_a_video(photos_dir):
    pil = pytest.importorskip("PIL.Image")
    path = photos_dir / "no_time_for_that_tiny.gif"
    frames = read_video(path)
    im = pil.open(path)
    assert frames.shape[0] == im.n_frames == probe(path).num_frames
    im.seek(0)
    assert np.array_equal(frames[0], np.asarray(im.convert("RGB")))


def test_generated_rgba_png_drops_alpha(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (9, 7, 4), dtype=np.uint8)
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = 7, 9, "rgba", Fraction(1, 1)
    frame = av.VideoFrame.from_ndarray(rgba, format="rgba")
    (tmp_path / "a.png").write_bytes(b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)]))
    assert probe(tmp_path / "a.png").has_alpha
    assert np.array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])


def test_grayscale_video(tmp_path):
    path = tmp_path / "gray.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 20, 10, "gray"
        s.codec_context.time_base = Fraction(1, 25)
        for i in range(6):
            f = av.VideoFrame.from_ndarray(np.full((10, 20), 40 * i, np.uint8), format="gray")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    info = probe(path)
    assert info.pix_fmt == "gray" and info.num_frames_source == "demux" and info.num_frames == 6
    frames = read_video(path)
    assert frames.shape == (6, 10, 20, 3)
    assert np.array_equal(
        frames, np.broadcast_to((40 * np.arange(6, dtype=np.uint8))[:, None, None, None], frames.shape)
    )


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_ten_bit_video(tmp_path, codec):
    colours = np.array([[200, 30, 60], [10, 240, 90], [128, 128, 128], [250, 250, 5]], np.uint8)
    frames = np.broadcast_to(colours[:, None, None, :], (4, 32, 32, 3)).copy()
    path = tmp_path / f"{codec}_10bit.mp4"
    write_video(path, frames, fps=10, codec=codec, pix_fmt="yuv420p10le", crf=4, preset="ultrafast")
    info = probe(path)
    assert info.bit_depth == 10 and info.pix_fmt == "yuv420p10le"
    got = read_video(path)
    assert got.dtype == np.uint8 and got.shape == frames.shape
    assert np.abs(got.astype(int) - frames.astype(int)).max() <= 4


# ------------------------------------------------------------------------------------------------ writing


def test_lossless_round_trip_random_frames(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (5, 24, 40, 3), dtype=np.uint8)
    write_video(tmp_path / "l.mp4", frames, fps=Fraction(30000, 1001), lossless=True)
    assert np.array_equal(read_video(tmp_path / "l.mp4"), frames)
    assert probe(tmp_path / "l.mp4").fps == Fraction(30000, 1001)


def test_lossy_flat_colours_and_gradient(tmp_path):
    t = np.arange(8)
    frames = np.zeros((8, 32, 64, 3), np.uint8)
    frames[..., 0] = (30 * t)[:, None, None]
    frames[..., 1] = np.linspace(0, 255, 64).astype(np.uint8)[None, None, :]  # horizontal gradient
    frames[..., 2] = 100
    with VideoWriter(tmp_path / "v.mp4", fps=12, width=64, height=32, crf=10) as w:
        w.write_frames(frames)
        assert w.frames_written == 8
    got = read_video(tmp_path / "v.mp4")
    assert got.shape == frames.shape
    assert np.abs(got.astype(int) - frames.astype(int)).mean() < 1.5
    assert np.abs(got.astype(int) - frames.astype(int)).max() <= 8


def test_odd_sizes(tmp_path):
    frames = np.broadcast_to(np.array([90, 160, 220], np.uint8), (3, 31, 33, 3)).copy()
    write_video(tmp_path / "pad.mp4", frames, fps=25)  # yuv420p: padded by one edge row/column
    padded = read_video(tmp_path / "pad.mp4")
    assert padded.shape == (3, 32, 34, 3)
    assert np.abs(padded.astype(int) - 90 - np.array([0, 70, 130])).max() <= 3
    write_video(tmp_path / "exact.mp4", frames, fps=25, pix_fmt="yuv444p", crf=0)
    exact = read_video(tmp_path / "exact.mp4")
    assert exact.shape == frames.shape and np.abs(exact.astype(int) - frames.astype(int)).max() <= 2
    with pytest.raises(ValueError, match="even"):
        VideoWriter(tmp_path / "x.mp4", 25, 33, 31, pad_odd=False)


def test_png_write_read(tmp_path):
    frames = np.random.default_rng(2).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    write_png(tmp_path / "one.png", frames[0])
    assert np.array_equal(read_image(tmp_path / "one.png"), frames[0])
    paths = write_png_frames(tmp_path / "seq", frames)
    assert [p.name for p in paths] == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    assert np.array_equal(np.stack([read_image(p) for p in paths]), frames)


def test_writer_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="expected frame 8x8"):
        with VideoWriter(tmp_path / "v.mp4", 25, 8, 8) as w:
            w.write(np.zeros((8, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "v.mp4", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "v.mp4", [])


# ------------------------------------------------------------------------------------------------ errors


def _bad_files(tmp_path, clips_dir):
    bunny = (clips_dir / "bigbuckbunny.mp4").read_bytes()
    files = {
        "missing": (tmp_path / "missing.mp4", "not found"),
        "empty": (tmp_path / "empty.mp4", "empty"),
        "random": (tmp_path / "random.mp4", "cannot read"),
        "text": (tmp_path / "notes.png", "cannot read"),
        "truncated": (tmp_path / "truncated.mp4", "cannot read"),
        "directory": (tmp_path / "adir.mp4", "directory"),
        "zero_frames": (tmp_path / "zero.mkv", "zero frames"),
        "audio_only": (tmp_path / "audio.m4a", "no video stream"),
    }
    files["empty"][0].write_bytes(b"")
    files["random"][0].write_bytes(np.random.default_rng(0).bytes(20000))
    files["text"][0].write_text("not an image\n" * 50)
    files["truncated"][0].write_bytes(bunny[:200_000])
    files["directory"][0].mkdir()
    with av.open(str(files["zero_frames"][0]), "w") as c:  # a video stream, but not a single frame
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        c.start_encoding()
    with av.open(str(files["audio_only"][0]), "w") as c:
        s = c.add_stream("aac", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 8000, 0
        for p in [*s.encode(f), *s.encode()]:
            c.mux(p)
    return files


def test_unreadable_files_raise_video_read_error(tmp_path, clips_dir):
    for key, (path, reason) in _bad_files(tmp_path, clips_dir).items():
        for fn in (probe, read_video, lambda p: list(iter_frames(p))):
            with pytest.raises(VideoReadError) as exc:
                fn(path)
            msg = str(exc.value)
            assert str(path) in msg, key
            assert reason in msg or key in ("zero_frames",) and "zero frames" in msg, (key, msg)
            assert isinstance(exc.value, ValueError)


def test_truncated_mid_stream_raises(tmp_path):
    # a "faststart" MP4 (index first, the writer's default) cut in half opens but fails while decoding
    frames = np.random.default_rng(3).integers(0, 256, (30, 48, 64, 3), dtype=np.uint8)
    path = tmp_path / "fs.mp4"
    write_video(path, frames, fps=25, crf=30)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert probe(cut).num_frames == 30  # the header still claims every frame
    with pytest.raises(VideoReadError, match="corrupt or truncated") as exc:
        read_video(cut)
    assert str(cut) in str(exc.value)


def test_start_past_end_and_bad_arguments(tmp_path):
    path = tmp_path / "idx.mp4"
    _index_video(path, n=5)
    with pytest.raises(VideoReadError, match="past the last frame"):
        read_video(path, start=7)
    with pytest.raises(ValueError, match="stride"):
        read_video(path, stride=0)
    with pytest.raises(ValueError, match="count"):
        probe(path, count="bogus")


# ------------------------------------------------------------------------------------------- conversions


def test_tensor_conversions():
    frames = np.random.default_rng(4).integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    frames[0, 0, 0] = [0, 255, 128]
    x = to_tensor(frames)
    assert x.shape == (3, 2, 3, 4) and x.dtype == torch.float32
    assert x[0, 0, 0, 0] == -1.0 and x[1, 0, 0, 0] == 1.0
    assert torch.allclose(x, torch.from_numpy(frames.astype(np.float32) / 127.5 - 1).permute(3, 0, 1, 2))
    assert np.array_equal(to_uint8(x), frames)
    assert np.array_equal(to_uint8(torch.stack([x, x])), np.stack([frames, frames]))
    assert to_tensor(frames[0]).shape == (3, 1, 3, 4)
    over = to_uint8(torch.tensor([2.0, -3.0, 0.0]).view(3, 1, 1, 1))
    assert over.tolist() == [[[[255, 0, 128]]]]
    with pytest.raises(ValueError, match="uint8"):
        to_tensor(frames.astype(np.float32))
    with pytest.raises(ValueError, match="tensor"):
        to_uint8(torch.zeros(4, 1, 2, 2))
