"""Video and image I/O on top of PyAV (FFmpeg): probing, streaming decode, writing, tensor conversion.

Every reader returns ``uint8`` RGB frames of shape ``(H, W, 3)`` (or stacks ``(T, H, W, 3)``), whatever
the file stores:

* grayscale, paletted (GIF), 10/12-bit and YUV files are converted to ``rgb24`` by FFmpeg's swscale
  (10-bit is scaled down to 8 bits);
* an alpha channel is dropped: the stored RGB values are kept as they are, not composited on a colour;
* images (PNG, JPEG, BMP, TIFF, WebP, ...) are one-frame videos; an animated GIF is a video.

Files are decoded frame by frame (never the whole file into memory). Every failure to read a file (missing,
not a video, truncated, corrupt, no frames) raises :class:`VideoReadError`, a ``ValueError`` whose message
names the file and what went wrong.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: File name extensions read as still images (a ``.gif`` with several frames is read as a video).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
)
#: File name extensions read as videos.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".ogv", ".y4m"}
)
_IMAGE_FORMATS = ("image2", "gif")  # plus every FFmpeg "*_pipe" image demuxer (png_pipe, jpeg_pipe, ...)


class VideoReadError(ValueError):
    """A file could not be read as a video or image; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a file.

    ``num_frames`` is the container's frame count when the header stores one (MP4/MOV store it exactly),
    otherwise the number of video packets found by reading (demuxing, not decoding) the file; images and
    GIFs are always decoded (which also checks they are valid). ``num_frames_source`` says which
    (``"header"``, ``"demux"`` or ``"decode"``). A damaged file can decode to fewer frames than that
    (reading it then raises :class:`VideoReadError`): ``probe(path, count="decode")`` finds out upfront.
    """

    path: str
    width: int
    height: int
    num_frames: int
    fps: Fraction
    pix_fmt: str
    bit_depth: int
    has_alpha: bool
    is_image: bool
    codec: str
    container: str
    num_frames_source: str

    @property
    def duration(self) -> float:
        """Length in seconds, ``num_frames / fps``."""
        return float(self.num_frames / self.fps) if self.fps else 0.0


def _fail(path: PathLike, what: str, err: BaseException | None = None) -> VideoReadError:
    detail = f": {type(err).__name__}: {err}" if err is not None else ""
    return VideoReadError(f"cannot read video/image {os.fspath(path)!r}: {what}{detail}")


def _open(path: PathLike) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and return (container, first video stream); raise VideoReadError on any failure."""
    p = Path(path)
    if not p.exists():
        raise _fail(path, "file not found")
    if p.is_dir():
        raise _fail(path, "is a directory, expected a file")
    if p.stat().st_size == 0:
        raise _fail(path, "file is empty (0 bytes)")
    try:
        container = av.open(os.fspath(p), mode="r")
    except (av.FFmpegError, OSError, EOFError, UnicodeDecodeError) as err:
        if isinstance(err, EOFError):
            raise _fail(
                path, "file ends before any frame (truncated, or a video with zero frames)", err
            ) from err
        raise _fail(
            path, "not a video or image FFmpeg can open (unknown format, truncated or corrupt)", err
        ) from err
    if not container.streams.video:
        container.close()
        raise _fail(path, "contains no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _fps(stream: av.video.stream.VideoStream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else Fraction(25)


def frame_intervals(path: PathLike, max_frames: int | None = None) -> tuple[float, float] | None:
    """The shortest and longest time between consecutive frames (seconds, from the packets'
    presentation timestamps, nothing decoded) of the first ``max_frames`` frames; None when there are
    fewer than three frames or no timestamps. Equal for a constant frame rate; a variable-rate video
    (a phone's, a screen recording) shows unequal ones, which one fps value cannot keep."""
    container, stream = _open(path)
    try:
        pts = sorted(pk.pts for pk in container.demux(stream) if pk.pts is not None and pk.size > 0)
    except av.FFmpegError:
        return None
    finally:
        container.close()
    pts = pts[: max_frames + 1] if max_frames else pts
    if len(pts) < 3 or stream.time_base is None:
        return None
    steps = [b - a for a, b in zip(pts, pts[1:], strict=False)]
    tb = float(stream.time_base)
    return min(steps) * tb, max(steps) * tb


def is_variable_rate(intervals: tuple[float, float] | None, tolerance: float = 0.1) -> bool:
    """Whether :func:`frame_intervals` differ by more than ``tolerance`` (and a millisecond)."""
    if intervals is None:
        return False
    short, long = intervals
    return long - short > max(tolerance * long, 1e-3)


def _is_image_format(container_name: str) -> bool:
    return container_name.endswith("_pipe") or container_name in _IMAGE_FORMATS


def probe(path: PathLike, count: str = "auto") -> VideoInfo:
    """Read a file's header (and, if needed, its packets) and return a :class:`VideoInfo`.

    ``count``: ``"auto"`` (header count when stored, else count packets), ``"demux"`` (always count
    packets) or ``"decode"`` (decode every frame: exact, and finds corrupt data; slow).
    """
    if count not in ("auto", "demux", "decode"):
        raise ValueError(f"probe(count=...): expected 'auto', 'demux' or 'decode', got {count!r}")
    container, stream = _open(path)
    try:
        ctx = stream.codec_context
        pix_fmt = ctx.pix_fmt or "unknown"
        fmt = av.VideoFormat(pix_fmt) if ctx.pix_fmt else None
        bit_depth = max((c.bits for c in fmt.components), default=8) if fmt else 8
        has_alpha = bool(fmt and (any(c.is_alpha for c in fmt.components) or fmt.has_palette))
        if pix_fmt in ("pal8",):  # palette may carry transparency (GIF, PNG); report it as alpha-capable
            has_alpha = True
        n, source = int(stream.frames or 0), "header"
        if _is_image_format(container.format.name):
            count = "decode"  # images (and GIFs) are small: decode them to know they are valid
        try:
            if count == "decode":
                n, source = sum(1 for _ in container.decode(stream)), "decode"
            elif count == "demux" or n <= 0:
                n, source = sum(1 for pk in container.demux(stream) if pk.size > 0), "demux"
        except av.FFmpegError as err:
            raise _fail(path, f"corrupt data while counting frames ({source})", err) from err
        if n <= 0:
            raise _fail(path, "video stream has zero frames")
        name = container.format.name
        return VideoInfo(
            path=os.fspath(path),
            width=int(ctx.width),
            height=int(ctx.height),
            num_frames=n,
            fps=_fps(stream),
            pix_fmt=pix_fmt,
            bit_depth=int(bit_depth),
            has_alpha=has_alpha,
            is_image=_is_image_format(name) and n == 1,
            codec=ctx.name,
            container=name,
            num_frames_source=source,
        )
    finally:
        container.close()


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None, interpolation: str) -> np.ndarray:
    """One decoded frame -> uint8 RGB (H, W, 3), optionally resized to ``size=(h, w)`` by swscale."""
    if size is not None and (frame.height, frame.width) != tuple(size):
        frame = frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation=interpolation)
    return np.ascontiguousarray(frame.to_ndarray(format="rgb24"))


def _frame_index(frame: av.VideoFrame, t0: int, time_base: Fraction, fps: Fraction) -> int | None:
    if frame.pts is None:
        return None
    return round((frame.pts - t0) * time_base * fps)


def _decode_from(container, stream, path: PathLike, start: int) -> Iterator[tuple[int, av.VideoFrame]]:
    """Yield (index, frame) for decoded frames with index >= ``start``, seeking near ``start`` when
    timestamps allow.

    Indices are counted from the first frame of the file. The seek goes to the keyframe at or before
    ``start`` and decodes forward; it is only trusted when frame timestamps are present and the first
    frame after the seek is not past ``start`` (otherwise the file is decoded from its beginning).
    """
    frames = container.decode(stream)
    first = next(frames, None)
    if first is None:
        return
    if (
        start > 0
        and first.pts is not None
        and stream.time_base
        and not _is_image_format(container.format.name)
    ):
        t0, tb, fps = first.pts, Fraction(stream.time_base), _fps(stream)
        target = t0 + int(Fraction(start) / fps / tb)
        try:
            container.seek(target, stream=stream, backward=True, any_frame=False)
            seeked = container.decode(stream)
            head = next(seeked, None)
            idx = _frame_index(head, t0, tb, fps) if head is not None else None
            if idx is not None and idx <= start:
                yield from _indexed_from(head, seeked, t0, tb, fps, start)
                return
        except av.FFmpegError:
            pass
        log.debug("seek in %s not trusted, decoding from the start", os.fspath(path))
        container.seek(0, stream=stream, backward=True, any_frame=False)  # rewind; decode linearly
        frames = container.decode(stream)
        first = next(frames, None)
        if first is None:
            return
    for index, frame in enumerate(_chain(first, frames)):
        if index >= start:
            yield index, frame


def _chain(head: av.VideoFrame, rest: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
    yield head
    yield from rest


def _indexed_from(head, rest, t0, tb, fps, start) -> Iterator[av.VideoFrame]:
    """After a seek: yield frames from index ``start`` on, numbering by timestamps (then by count)."""
    index = _frame_index(head, t0, tb, fps)
    for frame in _chain(head, rest):
        idx = _frame_index(frame, t0, tb, fps)
        index = idx if idx is not None else index
        if index >= start:
            yield index, frame
        index += 1


def iter_frames(
    path: PathLike,
    start: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
    interpolation: str = "AREA",
) -> Iterator[np.ndarray]:
    """Stream frames ``start, start+stride, ...`` of a video/image as uint8 RGB arrays (H, W, 3).

    At most ``max_frames`` frames are yielded. ``size=(h, w)`` resizes each frame during conversion
    (swscale, ``interpolation`` one of "AREA", "BILINEAR", "BICUBIC", "LANCZOS", ...). Only the
    packets needed are read: the container is closed as soon as the last wanted frame is out.
    Raises :class:`VideoReadError` when the file cannot be read, has no frames, is corrupt where it is
    decoded, or when ``start`` is past its last frame.
    """
    if start < 0 or stride < 1 or (max_frames is not None and max_frames < 0):
        raise ValueError(
            f"iter_frames({os.fspath(path)!r}): need start >= 0, stride >= 1, max_frames >= 0; "
            f"got start={start}, stride={stride}, max_frames={max_frames}"
        )
    if max_frames == 0:
        return
    container, stream = _open(path)
    listed = int(stream.frames or 0)  # frame count in the header (0: unknown)
    yielded, last = 0, -1
    try:
        for index, frame in _decode_from(container, stream, path, start):
            last = index
            if (index - start) % stride:
                continue
            yield _to_rgb(frame, size, interpolation)
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                return
    except av.FFmpegError as err:
        raise _fail(
            path, f"corrupt or truncated data after frame {last} (reading from frame {start})", err
        ) from err
    finally:
        container.close()
    if last < 0:
        raise _fail(path, "no frames decoded" if start == 0 else f"start={start} is past the last frame")
    if last + 1 < listed:
        raise _fail(
            path,
            f"corrupt or truncated data: decoding stopped after frame {last}, "
            f"the header lists {listed} frames",
        )


def iter_chunks(
    path: PathLike,
    chunk_frames: int,
    start: int = 0,
    stride: int = 1,
    max_frames: int | None = None,
    drop_last: bool = False,
    **kwargs,
) -> Iterator[np.ndarray]:
    """Stream a video as uint8 chunks (T, H, W, 3) of ``chunk_frames`` frames (the last may be shorter
    unless ``drop_last``). Other arguments as in :func:`iter_frames`."""
    if chunk_frames < 1:
        raise ValueError(f"iter_chunks: chunk_frames must be >= 1, got {chunk_frames}")
    buf: list[np.ndarray] = []
    for frame in iter_frames(path, start=start, stride=stride, max_frames=max_frames, **kwargs):
        buf.append(frame)
        if len(buf) == chunk_frames:
            yield np.stack(buf)
            buf = []
    if buf and not drop_last:
        yield np.stack(buf)


def read_video(
    path: PathLike, start: int = 0, stride: int = 1, max_frames: int | None = None, **kwargs
) -> np.ndarray:
    """Read frames of a video or image into one uint8 array (T, H, W, 3); arguments as in iter_frames."""
    frames = list(iter_frames(path, start=start, stride=stride, max_frames=max_frames, **kwargs))
    if not frames:
        raise _fail(path, f"no frames selected (start={start}, stride={stride}, max_frames={max_frames})")
    return np.stack(frames)


def read_image(path: PathLike, **kwargs) -> np.ndarray:
    """First frame of an image (or video) as uint8 (H, W, 3)."""
    return next(iter_frames(path, max_frames=1, **kwargs))


# ----------------------------------------------------------------------------------------------- writing


def _check_frame(frame: np.ndarray, where: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{where}: expected a uint8 RGB frame (H, W, 3), got {frame.dtype} {frame.shape}")
    return np.ascontiguousarray(frame)


_X26X = ("libx264", "libx264rgb", "libx265")


def _encoder_options(
    codec: str,
    crf: int | None,
    bitrate: int | None,
    preset: str | None,
    lossless: bool,
    options: dict[str, str] | None,
) -> dict[str, str]:
    """FFmpeg private options of the encoder: ``options`` plus, where the caller left them unset,
    ``qp=0`` (lossless), ``crf`` (x264/x265 without a bitrate), ``preset`` (x264/x265) and a quiet x265."""
    opts = dict(options or {})
    if lossless:
        opts.setdefault("qp", "0")
    elif crf is not None and bitrate is None and codec in _X26X:
        opts.setdefault("crf", str(crf))
    if preset is not None and codec in _X26X:
        opts.setdefault("preset", preset)
    if codec == "libx265":
        opts.setdefault("x265-params", "log-level=error")
    return opts


class VideoWriter:
    """Write uint8 RGB frames (H, W, 3) to a video file; use as a context manager.

    Defaults: H.264 (``libx264``), ``yuv420p`` (plays everywhere), ``crf=18``. Chroma-subsampled pixel
    formats (4:2:0 / 4:2:2) need an even width/height: odd sizes are padded by one replicated edge
    row/column (the file is then up to 1 px larger; ``pad_odd=False`` raises instead). ``pix_fmt="yuv444p"``
    keeps odd sizes exact. ``lossless=True`` selects ``libx264rgb`` with ``qp=0`` in ``rgb24``: frames
    read back bit-exactly. ``bitrate`` (bits/s) replaces ``crf`` when given. ``options`` are passed to
    the encoder as FFmpeg private options (e.g. ``{"tune": "zerolatency"}``). ``faststart`` puts the MP4/MOV
    index in front of the data (playable while downloading).
    """

    def __init__(
        self,
        path: PathLike,
        fps: float | Fraction,
        width: int,
        height: int,
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
        crf: int | None = 18,
        bitrate: int | None = None,
        preset: str | None = "medium",
        lossless: bool = False,
        pad_odd: bool = True,
        faststart: bool = True,
        options: dict[str, str] | None = None,
    ):
        if width < 1 or height < 1:
            raise ValueError(
                f"VideoWriter({os.fspath(path)!r}): width/height must be >= 1, got {width}x{height}"
            )
        if lossless:
            codec, pix_fmt, crf, bitrate = "libx264rgb", "rgb24", None, None
        self.path = os.fspath(path)
        self.width, self.height = int(width), int(height)
        fmt = av.VideoFormat(pix_fmt)
        sub_w, sub_h = fmt.chroma_width(2) != 2, fmt.chroma_height(2) != 2
        self._pad = ((self.height % 2) * sub_h, (self.width % 2) * sub_w)
        if any(self._pad) and not pad_odd:
            raise ValueError(
                f"VideoWriter({self.path!r}): {pix_fmt} needs even sizes, got {width}x{height}; "
                "use pad_odd=True or pix_fmt='yuv444p'"
            )
        opts = _encoder_options(codec, crf, bitrate, preset, lossless, options)
        rate = Fraction(fps).limit_denominator(1001 * 1000)
        fast = faststart and Path(self.path).suffix.lower() in (".mp4", ".mov", ".m4v")
        self._container = av.open(self.path, mode="w", options={"movflags": "+faststart"} if fast else {})
        try:
            stream = self._container.add_stream(codec, rate=rate)
            stream.width, stream.height = self.width + self._pad[1], self.height + self._pad[0]
            stream.pix_fmt = pix_fmt
            stream.codec_context.time_base = 1 / rate
            if bitrate is not None:
                stream.bit_rate = int(bitrate)
            stream.options = opts
        except Exception:
            self._container.close()
            raise
        self._stream = stream
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """Encode one uint8 RGB frame (H, W, 3) of the size given at construction."""
        frame = _check_frame(frame, f"VideoWriter({self.path!r}).write")
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"VideoWriter({self.path!r}).write: expected frame {self.height}x{self.width}, "
                f"got {frame.shape[0]}x{frame.shape[1]}"
            )
        if any(self._pad):
            frame = np.pad(frame, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
        vf.pts = self.frames_written
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1

    def write_frames(self, frames: Iterable[np.ndarray]) -> None:
        """Encode every frame of (T, H, W, 3) or an iterable of (H, W, 3)."""
        for frame in frames:
            self.write(frame)

    def close(self) -> None:
        """Flush the encoder and finish the file (a file with zero frames is not valid: ValueError)."""
        if self._container is None:
            return
        try:
            if self.frames_written:
                for packet in self._stream.encode():
                    self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
        if not self.frames_written:
            raise ValueError(f"VideoWriter({self.path!r}): no frames were written")

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._container is not None:
            self._container.close()
            self._container = None


def write_video(
    path: PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float | Fraction = 25, **kwargs
) -> None:
    """Write uint8 RGB frames (T, H, W, 3) or an iterable of (H, W, 3) to ``path`` (kwargs: VideoWriter)."""
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"write_video({os.fspath(path)!r}): no frames given")
    first = _check_frame(first, f"write_video({os.fspath(path)!r})")
    with VideoWriter(path, fps, width=first.shape[1], height=first.shape[0], **kwargs) as writer:
        writer.write(first)
        writer.write_frames(it)


def encode_png(frame: np.ndarray) -> bytes:
    """Losslessly encode a uint8 RGB frame (H, W, 3) as PNG bytes (FFmpeg's png encoder)."""
    frame = _check_frame(frame, "encode_png")
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
    ctx.time_base = Fraction(1, 1)
    vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
    vf.pts = 0
    return b"".join(bytes(p) for p in [*ctx.encode(vf), *ctx.encode(None)])


def write_png(path: PathLike, frame: np.ndarray) -> None:
    """Write one uint8 RGB frame (H, W, 3) as a PNG file."""
    Path(path).write_bytes(encode_png(frame))


def write_png_frames(
    folder: PathLike, frames: np.ndarray | Iterable[np.ndarray], pattern: str = "frame_{:05d}.png"
) -> list[Path]:
    """Write frames (T, H, W, 3) as ``folder/frame_00000.png, ...``; returns the paths written."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        p = out / pattern.format(i)
        write_png(p, frame)
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------------------- conversions


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (T, H, W, 3) or one frame (H, W, 3) -> float32 tensor (3, T, H, W) in [-1, 1]."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(f"to_tensor: expected uint8 (T, H, W, 3) or (H, W, 3), got {arr.dtype} {arr.shape}")
    if arr.ndim == 3:
        arr = arr[None]
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(3, 0, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """float (3, T, H, W) or (B, 3, T, H, W) in [-1, 1] -> uint8 (T, H, W, 3) or (B, T, H, W, 3).

    Values are clamped to [-1, 1] and rounded to the nearest level: ``to_uint8(to_tensor(x)) == x``.
    """
    if not torch.is_tensor(video) or video.ndim not in (4, 5) or video.shape[-4] != 3:
        shape = tuple(video.shape) if hasattr(video, "shape") else type(video).__name__
        raise ValueError(f"to_uint8: expected a tensor (3, T, H, W) or (B, 3, T, H, W), got {shape}")
    x = video.detach().float().cpu().clamp(-1.0, 1.0).add(1.0).mul(127.5).round().to(torch.uint8)
    x = x.movedim(-4, -1)  # channels last
    return np.ascontiguousarray(x.numpy())
