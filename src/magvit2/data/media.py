"""The files a :class:`DataConfig` names, their items, and decoding one sample.

* **Files.** ``DataConfig.paths`` lists files, folders (searched recursively for known extensions) and glob
  patterns; ``exclude`` removes fnmatch patterns. Every file is probed once (header only). A file with one
  frame is an *image*, a file with more is a *video* (an animated GIF is a video). Unreadable files are
  skipped with one warning each and recorded in ``skipped`` (path -> reason).
* **Items.** A video of ``N`` frames holds ``max(1, N // span)`` clip *windows* (``span = (T-1)*stride+1``);
  each window is one item per epoch and the clip's start is drawn uniformly inside the window, so the
  clips of one epoch do not overlap and cover the video. An image file is one image item; when there
  are no image files (or ``video_frames_as_images``) every frame of every video is an image item too.
* **Speed.** ``cache_decoded=True`` decodes every file once at the size it is cropped from (short side
  resized to the training size) and keeps uint8 frames in memory (shared by forked workers); samples are
  then slices. Without the cache each sample seeks to the keyframe before its start and decodes forward.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .augment import apply_color_change, sample_color_change
from .config import DataConfig
from .video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoInfo, VideoReadError, iter_frames, probe

log = logging.getLogger(__name__)

# uint8 level -> float32 in [-1, 1], the same values as video_io.to_tensor (one gather instead of 3 passes)
_UINT8_TO_UNIT = (np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


# --------------------------------------------------------------------------------------- file discovery


def media_in_folder(folder: Path) -> list[Path]:
    """Image and video files (known extensions) anywhere under ``folder``, sorted; hidden files (names
    starting with ``.``, e.g. another process's temporary output) are skipped."""
    known = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    hits = (f for f in folder.rglob("*") if f.suffix.lower() in known and not f.name.startswith("."))
    return sorted(f for f in hits if f.is_file())


def find_files(paths: Sequence[str], exclude: Sequence[str] = ()) -> list[str]:
    """Expand files, folders (recursively, known image/video extensions) and globs; sorted, unique."""
    found: set[str] = set()
    for entry in paths:
        p = Path(entry).expanduser()
        if p.is_dir():
            found.update(str(f) for f in media_in_folder(p))
        elif p.exists():
            found.add(str(p))
        else:
            matches = glob.glob(str(p), recursive=True)
            if not matches:
                log.warning("data path %r matches no file", entry)
            for m in matches:
                mp = Path(m)
                if mp.is_dir():
                    found.update(str(f) for f in media_in_folder(mp))
                elif mp.is_file():
                    found.add(str(mp))

    def excluded(f: str) -> bool:
        return any(fnmatch.fnmatch(f, pat) or fnmatch.fnmatch(Path(f).name, pat) for pat in exclude)

    return sorted(f for f in found if not excluded(f))


# ------------------------------------------------------------------------------------------ media index


def resized_size(
    height: int, width: int, size: tuple[int, int], mode: str, short_side: int | None = None
) -> tuple[int, int]:
    """Size a (height, width) frame is resized to before cropping to ``size`` (h, w).

    The frame is scaled so that it covers ``size``; with ``short_side`` its short side is scaled to at
    least ``short_side`` pixels (crops then show a smaller part of the frame at finer detail).
    """
    h, w = size
    if mode == "resize":
        return h, w
    scale = max(h / height, w / width, (short_side or 0) / min(height, width))
    return max(h, round(height * scale)), max(w, round(width * scale))


@dataclass(frozen=True)
class MediaItem:
    """One item of a stream: a clip window of a video, or one image (a file or a video frame)."""

    file: int  # index into MediaIndex.files
    start: int  # first frame index of the window (images: the frame)
    length: int  # window length in frames (images: 1)


class MediaIndex:
    """The usable files of a :class:`DataConfig`, their items, the optional frame cache and the decoder.

    Attributes: ``files`` (paths), ``infos`` (VideoInfo per file), ``video_items`` / ``image_items``,
    ``skipped`` (path -> reason, in this process), ``too_short`` (videos shorter than a clip -> frames).
    A sample whose decoding fails is replaced by the next item of its epoch order; whether it fails
    depends only on the file and the clip, so results stay the same with any number of workers.
    """

    def __init__(self, config: DataConfig):
        self.config = config
        self.skipped: dict[str, str] = {}
        self.too_short: dict[str, int] = {}
        candidates = find_files(config.paths, config.exclude)
        if not candidates:
            raise ValueError(f"DataConfig.paths {config.paths!r} (exclude {config.exclude!r}) match no file")
        self.files: list[str] = []
        self.infos: list[VideoInfo] = []
        for path in candidates:
            try:
                info = probe(path)
            except VideoReadError as err:
                self._mark_bad(path, str(err))
                continue
            self.files.append(path)
            self.infos.append(info)
        self._cache: dict[int, np.ndarray] = {}
        if config.cache_decoded:
            self._fill_cache()
        self._build_items()

    # -- bookkeeping
    def _mark_bad(self, path: str, reason: str) -> None:
        if path not in self.skipped:
            self.skipped[path] = reason
            log.warning("skipping unreadable data file %s: %s", path, reason)

    @property
    def num_skipped(self) -> int:
        """How many files were skipped (in this process)."""
        return len(self.skipped)

    def _usable(self, i: int) -> bool:
        return self.files[i] not in self.skipped

    def _build_items(self) -> None:
        cfg = self.config
        videos, images, frames_as_images = [], [], []
        for i, info in enumerate(self.infos):
            if not self._usable(i):
                continue
            if info.num_frames <= 1:
                images.append(MediaItem(i, 0, 1))
                continue
            n = max(0, info.num_frames - cfg.hold_out_last)  # frames training may read
            frames_as_images.extend(MediaItem(i, t, 1) for t in range(n))
            if n < cfg.span:
                if self.files[i] not in self.too_short:
                    self.too_short[self.files[i]] = n
                    log.warning(
                        "video %s has %d frames for training (after hold_out_last), fewer than a clip of %d "
                        "frames with stride %d needs (%d): not used as a video",
                        self.files[i],
                        n,
                        cfg.num_frames,
                        cfg.frame_stride,
                        cfg.span,
                    )
                continue
            windows = max(1, n // cfg.span)
            region = n // windows
            videos.extend(MediaItem(i, k * region, region) for k in range(windows))
        use_frames = cfg.video_frames_as_images
        if use_frames is None:
            use_frames = not images
        self.video_items: list[MediaItem] = videos
        self.image_items: list[MediaItem] = images + (frames_as_images if use_frames else [])

    def _fill_cache(self) -> None:
        cfg, total = self.config, 0
        for i, (path, info) in enumerate(zip(self.files, self.infos, strict=True)):
            size = resized_size(info.height, info.width, cfg.size, cfg.resize_mode, cfg.decode_short_side)
            total += info.num_frames * size[0] * size[1] * 3
            if total > cfg.cache_max_mb * 2**20:
                raise ValueError(
                    f"DataConfig.cache_decoded: the decoded frames need more than cache_max_mb="
                    f"{cfg.cache_max_mb} MiB (reached at {path}); raise it or set cache_decoded=False"
                )
            try:
                self._cache[i] = np.stack(list(iter_frames(path, size=size)))
            except VideoReadError as err:
                self._mark_bad(path, str(err))
                continue
            if len(self._cache[i]) != info.num_frames:  # header count off: trust the decoded frames
                n = len(self._cache[i])
                self.infos[i] = VideoInfo(**{**info.__dict__, "num_frames": n, "num_frames_source": "decode"})
            total += (len(self._cache[i]) - info.num_frames) * size[0] * size[1] * 3

    # -- decoding
    def frames(self, file: int, start: int, count: int, stride: int) -> np.ndarray:
        """uint8 frames (count, h', w', 3) of file ``file`` from ``start`` with ``stride``, resized to the
        size they are cropped from. Raises VideoReadError when the file cannot deliver them."""
        info, cfg = self.infos[file], self.config
        if file in self._cache:
            clip = self._cache[file][start : start + (count - 1) * stride + 1 : stride]
        else:
            size = resized_size(info.height, info.width, cfg.size, cfg.resize_mode, cfg.decode_short_side)
            clip = list(
                iter_frames(self.files[file], start=start, stride=stride, max_frames=count, size=size)
            )
            clip = np.stack(clip) if clip else np.zeros((0, 1, 1, 3), np.uint8)
        if len(clip) != count:
            raise VideoReadError(
                f"cannot read video/image {self.files[file]!r}: wanted {count} frames from "
                f"frame {start} with stride {stride}, got {len(clip)}"
            )
        return clip

    def sample(self, item: MediaItem, num_frames: int, rng: np.random.Generator) -> torch.Tensor:
        """Decode one item into float32 (3, T, h, w) in [-1, 1]; random choices come from ``rng``."""
        cfg = self.config
        stride = cfg.frame_stride if num_frames > 1 else 1
        span = (num_frames - 1) * stride + 1
        start = item.start + int(rng.integers(0, item.length - span + 1))
        u_y, u_x, flip = rng.random(), rng.random(), rng.random() < 0.5
        clip = self.frames(item.file, start, num_frames, stride)
        h, w = cfg.size
        hh, ww = clip.shape[1:3]
        if cfg.short_side_max:  # this clip's short side, as a window on the decoded frame
            zoom = (
                cfg.short_side + rng.random() * (cfg.short_side_max - cfg.short_side)
            ) / cfg.short_side_max
            zoom = max(zoom, h / hh, w / ww)  # the window must fit in the frame
            h, w = min(hh, round(cfg.size[0] / zoom)), min(ww, round(cfg.size[1] / zoom))
        if cfg.resize_mode == "random_crop":
            y, x = int(u_y * (hh - h + 1)), int(u_x * (ww - w + 1))
        else:
            y, x = (hh - h) // 2, (ww - w) // 2
        return self._finish(clip[:, y : y + h, x : x + w], flip, rng)

    def sample_pan(self, item: MediaItem, num_frames: int, rng: np.random.Generator) -> torch.Tensor:
        """A still image as a clip float32 (3, T, h, w) in [-1, 1]: the crop window moves by a random
        whole number of pixels per frame along each axis (at most ``pan_speed``, and what the resized
        image leaves room for), from a random start that keeps it inside the image."""
        cfg = self.config
        flip = rng.random() < 0.5
        image = self.frames(item.file, item.start, 1, 1)[0]
        (h, w), steps = cfg.size, max(num_frames - 1, 1)
        t = np.arange(num_frames)[:, None]
        corner = []
        for room in (image.shape[0] - h, image.shape[1] - w):
            fastest = min(cfg.pan_speed, room // steps)
            v = int(rng.integers(-fastest, fastest + 1))
            lo = max(0, -v * steps)
            corner.append(int(rng.integers(lo, room - max(0, v * steps) + 1)) + v * t)
        ys, xs = corner[0][:, 0], corner[1][:, 0]
        clip = np.stack([image[y : y + h, x : x + w] for y, x in zip(ys, xs, strict=True)])
        return self._finish(clip, flip, rng)

    def _finish(self, clip: np.ndarray, flip: bool, rng: np.random.Generator) -> torch.Tensor:
        """uint8 crops (T, h', w', 3) -> float32 (3, T, h, w) in [-1, 1], flipped, resized to the crop
        size (h, w) when (h', w') differs, and colour-changed as configured (drawn from ``rng``)."""
        cfg = self.config
        if cfg.hflip and flip:
            clip = clip[:, :, ::-1]
        out = torch.from_numpy(_UINT8_TO_UNIT[np.transpose(clip, (3, 0, 1, 2))])  # (3, T, h, w)
        if out.shape[2:] != cfg.size:  # a short_side_max window: resized down to the crop size
            out = F.interpolate(out, size=cfg.size, mode="bilinear", antialias=True, align_corners=False)
        if any(cfg.color_jitter):
            out = apply_color_change(out, sample_color_change(rng, cfg.color_jitter))
        return out
