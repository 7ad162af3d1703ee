"""Training data: random clips of ``1 + 4k`` frames and images from folders of videos and images.

Design (all of it deterministic given ``DataConfig.seed``):

* **Files.** ``DataConfig.paths`` lists files, folders (searched recursively for known extensions) and glob
  patterns; ``exclude`` removes fnmatch patterns. Every file is probed once (header only). A file with one
  frame is an *image*, a file with more is a *video* (an animated GIF is a video). Unreadable files are
  skipped with one warning each and recorded in ``skipped`` (path -> reason); a file that fails later,
  while decoding a sample, is skipped the same way and that sample is replaced by the next item of the
  epoch order. If no usable file is left, a ``ValueError`` says so.
* **Items.** A video of ``N`` frames holds ``max(1, N // span)`` clip *windows* (``span = (T-1)*stride+1``);
  each window is one item per epoch and the clip's start is drawn uniformly inside the window, so the
  clips of one epoch do not overlap and cover the video. An image file is one image item; when there
  are no image files (or ``video_frames_as_images``) every frame of every video is an image item too.
* **Two streams** (videos, images), each an endless sequence of epochs. Epoch ``e`` visits the items in
  the order of a permutation drawn from ``(seed, stream, e)``; rank ``r`` of ``W`` takes the positions
  ``r, r+W, r+2W, ...`` of the first ``W * (N // W)`` positions, so no item is seen twice across ranks in
  an epoch. Sample ``i`` of a rank's stream is a pure function of ``(seed, stream, epoch, position)``:
  the clip start, the crop offsets and the flip come from a generator seeded with those numbers. Results
  are therefore independent of worker processes, and resuming only needs the step count.
* **Joint batches.** Step ``s`` is a dict ``{"video": (Bv, 3, T, H, W) or None, "image": (Bi, 3, 1, H, W)
  or None, "step": s}``, float32 in [-1, 1]. ``joint_mode="mixed"``: every step holds
  ``Bi = round(batch_size * image_ratio)`` images and ``Bv = batch_size - Bi`` videos.
  ``joint_mode="alternate"``: a fraction ``image_ratio`` of the steps (evenly spread: step ``s`` is an image
  step when ``floor((s+1) r) > floor(s r)``) is a batch of ``image_batch_size`` images, the others a batch
  of ``batch_size`` videos. The step's stream indices are computed in O(1) from ``s``.
* **Resume.** :class:`BatchStream` counts the batches handed out; ``state_dict()`` stores that count and
  ``load_state_dict()`` makes the next iteration continue with exactly the batch an uninterrupted run
  would have produced next.
* **Speed.** ``cache_decoded=True`` decodes every file once at the size it is cropped from (short side
  resized to the training size) and keeps uint8 frames in memory (shared by forked workers); samples are
  then slices. Without the cache each sample seeks to the keyframe before its start and decodes forward.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from .augment import apply_color_change, check_strengths, sample_color_change
from .video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoInfo, VideoReadError, iter_frames, probe

log = logging.getLogger(__name__)

VIDEO_STREAM, IMAGE_STREAM = 0, 1
RESIZE_MODES = ("random_crop", "center_crop", "resize")
# uint8 level -> float32 in [-1, 1], the same values as video_io.to_tensor (one gather instead of 3 passes)
_UINT8_TO_UNIT = (np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)).astype(np.float32)
JOINT_MODES = ("mixed", "alternate")


@dataclass
class DataConfig:
    """Where the training data is and how samples and batches are made.

    paths: files, folders (recursive) and glob patterns. exclude: fnmatch patterns matched against the
    full path and the file name. num_frames: frames per clip, ``1 + temporal_downsample * k``.
    frame_stride: distance between sampled frames. resolution: output size, int (square) or (h, w).
    resize_mode: "random_crop" (short side resized to the target, then a random crop), "center_crop"
    (same with a centred crop) or "resize" (stretched to (h, w)). short_side: with the crop modes,
    resize the short side to at least this many pixels first (None: just enough to cover the crop).
    short_side_max: with "random_crop" and short_side, each clip's short side is drawn uniformly from
    [short_side, short_side_max] (frames are decoded at short_side_max and each clip's window is
    resized down to the crop: one clip shows more of the frame, the next finer detail).
    batch_size: samples per step (videos +
    images in "mixed" mode, videos in "alternate" mode). image_ratio: fraction of samples (mixed) or of
    steps (alternate) that are images. image_batch_size: images per image step in "alternate" mode
    (default batch_size). video_frames_as_images: also use video frames as images (None: only when there
    are no image files). hflip: random horizontal flips. color_jitter: strengths [brightness, contrast,
    saturation, hue] of one random colour change per clip, as torchvision's ColorJitter (all 0: none;
    see magvit2.data.augment). pan_images: fraction of video clips made from a still image instead, by a
    crop window that moves a whole number of pixels per frame (a camera pan over a photograph; needs
    image items). pan_speed: the fastest pan, pixels per frame along each axis (at the resized scale).
    cache_decoded: decode everything once into memory
    (cache_max_mb caps it). num_workers: DataLoader worker processes. seed: the whole order and every
    random choice derive from it.
    """

    paths: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    num_frames: int = 17
    frame_stride: int = 1
    resolution: int | tuple[int, int] = 128
    resize_mode: str = "random_crop"
    short_side: int | None = None
    short_side_max: int | None = None
    batch_size: int = 8
    image_ratio: float = 0.0
    joint_mode: str = "mixed"
    image_batch_size: int | None = None
    video_frames_as_images: bool | None = None
    hflip: bool = False
    color_jitter: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    pan_images: float = 0.0
    pan_speed: int = 2
    cache_decoded: bool = False
    cache_max_mb: float = 4096.0
    num_workers: int = 0
    seed: int = 0
    temporal_downsample: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.paths, str | os.PathLike):
            self.paths = [os.fspath(self.paths)]
        self.paths = [os.fspath(p) for p in self.paths]
        self.color_jitter = [float(v) for v in self.color_jitter]
        if isinstance(self.resolution, Sequence):
            self.resolution = tuple(int(v) for v in self.resolution)
        self.validate()

    @property
    def size(self) -> tuple[int, int]:
        """Output (height, width)."""
        r = self.resolution
        return (int(r), int(r)) if isinstance(r, int) else (int(r[0]), int(r[1]))

    @property
    def decode_short_side(self) -> int | None:
        """The short side frames are decoded (and cached) at."""
        return self.short_side_max or self.short_side

    @property
    def span(self) -> int:
        """Frames of the source video covered by one clip: (num_frames - 1) * frame_stride + 1."""
        return (self.num_frames - 1) * self.frame_stride + 1

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        k = self.temporal_downsample
        if self.num_frames < 1 or (self.num_frames - 1) % k:
            raise ValueError(
                f"DataConfig.num_frames must be 1 + {k}*k (1, {1 + k}, {1 + 2 * k}, ...), "
                f"got {self.num_frames}"
            )
        if self.frame_stride < 1:
            raise ValueError(f"DataConfig.frame_stride must be >= 1, got {self.frame_stride}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"DataConfig.resolution must be a positive int or (h, w), got {self.resolution}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(
                f"DataConfig.resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}"
            )
        if self.joint_mode not in JOINT_MODES:
            raise ValueError(f"DataConfig.joint_mode must be one of {JOINT_MODES}, got {self.joint_mode!r}")
        if not 0.0 <= self.image_ratio <= 1.0:
            raise ValueError(f"DataConfig.image_ratio must be in [0, 1], got {self.image_ratio}")
        if self.batch_size < 1 or (self.image_batch_size is not None and self.image_batch_size < 1):
            raise ValueError(
                f"DataConfig.batch_size/image_batch_size must be >= 1, got {self.batch_size}/"
                f"{self.image_batch_size}"
            )
        if self.num_workers < 0:
            raise ValueError(f"DataConfig.num_workers must be >= 0, got {self.num_workers}")
        check_strengths(self.color_jitter, "DataConfig.color_jitter")
        if self.short_side_max is not None and (
            self.resize_mode != "random_crop" or not self.short_side or self.short_side_max < self.short_side
        ):
            raise ValueError(
                "DataConfig.short_side_max needs resize_mode 'random_crop' and short_side <= "
                f"short_side_max, got {self.resize_mode!r}, short_side {self.short_side}, "
                f"short_side_max {self.short_side_max}"
            )
        if not 0.0 <= self.pan_images <= 1.0 or self.pan_speed < 0:
            raise ValueError(
                f"DataConfig.pan_images must be in [0, 1] and pan_speed >= 0, got {self.pan_images}, "
                f"{self.pan_speed}"
            )

    def to_dict(self) -> dict:
        """Plain dict (for configs / checkpoints)."""
        return asdict(self)


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
class _Item:
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
                images.append(_Item(i, 0, 1))
                continue
            frames_as_images.extend(_Item(i, t, 1) for t in range(info.num_frames))
            if info.num_frames < cfg.span:
                if self.files[i] not in self.too_short:
                    self.too_short[self.files[i]] = info.num_frames
                    log.warning(
                        "video %s has %d frames, fewer than a clip of %d frames with stride %d needs "
                        "(%d): not used as a video",
                        self.files[i],
                        info.num_frames,
                        cfg.num_frames,
                        cfg.frame_stride,
                        cfg.span,
                    )
                continue
            windows = max(1, info.num_frames // cfg.span)
            region = info.num_frames // windows
            videos.extend(_Item(i, k * region, region) for k in range(windows))
        use_frames = cfg.video_frames_as_images
        if use_frames is None:
            use_frames = not images
        self.video_items: list[_Item] = videos
        self.image_items: list[_Item] = images + (frames_as_images if use_frames else [])

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

    def sample(self, item: _Item, num_frames: int, rng: np.random.Generator) -> torch.Tensor:
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

    def sample_pan(self, item: _Item, num_frames: int, rng: np.random.Generator) -> torch.Tensor:
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


# ----------------------------------------------------------------------------------------------- streams


class _Order:
    """Maps a rank's sample index to (epoch, position, item) for one stream."""

    def __init__(self, num_items: int, seed: int, stream: int, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.n, self.seed, self.stream, self.rank, self.world = num_items, seed, stream, rank, world_size
        if num_items >= world_size:
            self.per_rank = num_items // world_size
        else:  # fewer items than ranks: each rank still gets one per epoch (items repeat across ranks)
            log.warning("only %d items for %d ranks: items repeat across ranks", num_items, world_size)
            self.per_rank = 1
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """The item order of ``epoch`` (the same on every rank)."""
        if epoch not in self._perms:
            if len(self._perms) >= 4:
                self._perms.pop(next(iter(self._perms)))
            self._perms[epoch] = np.random.default_rng([self.seed, self.stream, epoch, 0x5EED]).permutation(
                self.n
            )
        return self._perms[epoch]

    def locate(self, index: int) -> tuple[int, int]:
        """Rank-local sample index -> (epoch, position in the epoch's permutation)."""
        epoch, k = divmod(index, self.per_rank)
        return epoch, (k * self.world + self.rank) % self.n

    def rng(self, epoch: int, position: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.stream, epoch, position, attempt])


class _StreamDataset(Dataset):
    """Map-style dataset over one stream: index i (any i >= 0) -> float32 (3, T, H, W) in [-1, 1].

    ``len()`` is the number of samples per epoch on this rank; indices past it are later epochs.
    """

    stream: int = VIDEO_STREAM

    def __init__(
        self, config: DataConfig, rank: int = 0, world_size: int = 1, index: MediaIndex | None = None
    ):
        self.config = config
        self.index = index if index is not None else MediaIndex(config)
        items = self._items()
        if not items:
            raise ValueError(self._empty_message())
        self.order = _Order(len(items), config.seed, self.stream, rank, world_size)

    def _items(self) -> list[_Item]:
        raise NotImplementedError

    def _sample(self, item: _Item, rng: np.random.Generator) -> torch.Tensor:
        return self.index.sample(item, self.num_frames, rng)

    def _empty_message(self) -> str:
        raise NotImplementedError

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    @property
    def skipped(self) -> dict[str, str]:
        """Files skipped as unreadable (path -> reason) in this process."""
        return self.index.skipped

    def __len__(self) -> int:
        return self.order.per_rank

    def __getitem__(self, index: int) -> torch.Tensor:
        if index < 0:
            raise IndexError(f"sample index must be >= 0, got {index}")
        items = self._items()
        epoch, position = self.order.locate(int(index))
        n = len(items)
        for attempt in range(n):  # an item whose file fails is replaced by the next ones of the epoch
            pos = (position + attempt) % n
            item = items[self.order.permutation(epoch)[pos]]
            try:
                return self._sample(item, self.order.rng(epoch, position, attempt))
            except VideoReadError as err:
                self.index._mark_bad(self.index.files[item.file], str(err))
        raise ValueError(
            f"every data file of {self.config.paths!r} for this stream is unreadable "
            f"({self.index.num_skipped} skipped: {sorted(self.index.skipped)[:5]} ...)"
        )


class VideoClipDataset(_StreamDataset):
    """Random clips (3, num_frames, H, W), float32 in [-1, 1], from the videos of ``config.paths``."""

    stream = VIDEO_STREAM

    def _items(self) -> list[_Item]:
        return self.index.video_items

    def _sample(self, item: _Item, rng: np.random.Generator) -> torch.Tensor:
        """The item's clip, or with probability ``pan_images`` a pan over a random image item."""
        images = self.index.image_items
        if self.config.pan_images and images and rng.random() < self.config.pan_images:
            return self.index.sample_pan(images[int(rng.integers(len(images)))], self.num_frames, rng)
        return self.index.sample(item, self.num_frames, rng)

    def _empty_message(self) -> str:
        images = len(self.index.image_items)
        hint = (
            f"; {images} image(s) found: images train on image steps (data.image_ratio > 0, or "
            "data.pan_images for video steps made of pans over them)"
            if images
            else ""
        )
        return (
            f"no usable video with at least {self.config.span} frames in {self.config.paths!r} "
            f"({self.index.num_skipped} file(s) skipped as unreadable or too short{hint})"
        )


class ImageDataset(_StreamDataset):
    """Images (3, 1, H, W), float32 in [-1, 1]: image files, and video frames when configured."""

    stream = IMAGE_STREAM

    @property
    def num_frames(self) -> int:
        return 1

    def _items(self) -> list[_Item]:
        return self.index.image_items

    def _empty_message(self) -> str:
        return (
            f"no usable image in {self.config.paths!r} (video_frames_as_images="
            f"{self.config.video_frames_as_images}; {self.index.num_skipped} file(s) skipped)"
        )


# ------------------------------------------------------------------------------------------ joint batches


class JointBatchDataset(Dataset):
    """Map-style dataset over training steps: ``ds[s]`` is the batch dict of step ``s`` on this rank.

    ``{"video": (Bv, 3, T, H, W) or None, "image": (Bi, 3, 1, H, W) or None, "step": s}``; see the module
    docstring for the mixed / alternate designs. Use with :func:`make_loader` or :class:`BatchStream`.
    """

    def __init__(
        self, config: DataConfig, rank: int = 0, world_size: int = 1, index: MediaIndex | None = None
    ):
        self.config = config
        self.rank, self.world_size = rank, world_size
        self.index = index if index is not None else MediaIndex(config)
        self.ratio = Fraction(config.image_ratio).limit_denominator(10_000)
        self.image_batch_size = config.image_batch_size or config.batch_size
        if config.joint_mode == "mixed":
            self.n_image = round(config.batch_size * config.image_ratio)
            self.n_video = config.batch_size - self.n_image
            if config.image_ratio > 0 and self.n_image == 0:
                log.warning(
                    "image_ratio=%s with batch_size=%d gives 0 images per step in 'mixed' mode; use "
                    "joint_mode='alternate'",
                    config.image_ratio,
                    config.batch_size,
                )
        else:
            self.n_image = self.image_batch_size if self.ratio > 0 else 0
            self.n_video = config.batch_size if self.ratio < 1 else 0
        self.videos = VideoClipDataset(config, rank, world_size, self.index) if self.n_video else None
        self.images = ImageDataset(config, rank, world_size, self.index) if self.n_image else None

    @property
    def skipped(self) -> dict[str, str]:
        """Files skipped as unreadable (path -> reason) in this process."""
        return self.index.skipped

    def __len__(self) -> int:
        """Steps in one epoch of the video stream (of the image stream when there are no videos)."""
        if self.videos is not None:
            per_step = self.n_video if self.config.joint_mode == "mixed" else self.n_video / (1 - self.ratio)
            return max(1, math.floor(len(self.videos) / per_step))
        per_step = self.n_image if self.config.joint_mode == "mixed" else self.n_image * self.ratio
        return max(1, math.floor(len(self.images) / per_step))

    def plan(self, step: int) -> tuple[range, range]:
        """Stream indices (video range, image range) used by ``step``."""
        if self.config.joint_mode == "mixed":
            return (
                range(step * self.n_video, (step + 1) * self.n_video),
                range(step * self.n_image, (step + 1) * self.n_image),
            )
        r = self.ratio
        images_before = math.floor(step * r)
        is_image = math.floor((step + 1) * r) > images_before
        if is_image:
            return range(0), range(images_before * self.n_image, (images_before + 1) * self.n_image)
        videos_before = step - images_before
        return range(videos_before * self.n_video, (videos_before + 1) * self.n_video), range(0)

    def __getitem__(self, step: int) -> dict:
        if step < 0:
            raise IndexError(f"step must be >= 0, got {step}")
        video_ids, image_ids = self.plan(int(step))
        video = torch.stack([self.videos[i] for i in video_ids]) if len(video_ids) else None
        image = torch.stack([self.images[i] for i in image_ids]) if len(image_ids) else None
        return {"video": video, "image": image, "step": int(step)}


class _StepSampler(Sampler):
    """Yields step numbers start, start+1, ... (stop excluded; endless when stop is None)."""

    def __init__(self, start: int = 0, stop: int | None = None):
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[int]:
        s = self.start
        while self.stop is None or s < self.stop:
            yield s
            s += 1

    def __len__(self) -> int:
        if self.stop is None:
            raise TypeError("endless step sampler has no length")
        return max(0, self.stop - self.start)


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def _passthrough(batch):
    return batch


def make_loader(
    dataset: JointBatchDataset,
    start_step: int = 0,
    stop_step: int | None = None,
    num_workers: int | None = None,
) -> DataLoader:
    """DataLoader yielding the batch dicts of steps ``start_step, start_step+1, ...`` in order.

    Worker processes each build whole steps; the DataLoader returns them in step order, so the output
    does not depend on ``num_workers`` (default: ``config.num_workers``).
    """
    workers = dataset.config.num_workers if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=_StepSampler(start_step, stop_step),
        num_workers=workers,
        collate_fn=_passthrough,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


class BatchStream:
    """Endless, resumable iterator of joint batches for one rank.

    ``for batch in stream`` yields step dicts; ``stream.step`` counts the batches handed out.
    ``state_dict()`` -> ``{"step", "seed", "rank", "world_size", "num_video_items", "num_image_items"}``;
    ``load_state_dict()`` restores ``step`` so that the next iteration yields exactly the batch an
    uninterrupted run would have yielded next. ``max_steps`` ends the iteration at that step.
    """

    def __init__(
        self,
        config: DataConfig,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        max_steps: int | None = None,
        dataset: JointBatchDataset | None = None,
    ):
        self.dataset = dataset if dataset is not None else JointBatchDataset(config, rank, world_size)
        self.config = config
        self.step = int(start_step)
        self.max_steps = max_steps

    @property
    def skipped(self) -> dict[str, str]:
        return self.dataset.skipped

    def __iter__(self) -> Iterator[dict]:
        for batch in make_loader(self.dataset, start_step=self.step, stop_step=self.max_steps):
            self.step = batch["step"] + 1
            yield batch

    def _fingerprint(self) -> dict:
        ds = self.dataset
        return {
            "seed": self.config.seed,
            "rank": ds.rank,
            "world_size": ds.world_size,
            "num_video_items": len(ds.index.video_items),
            "num_image_items": len(ds.index.image_items),
        }

    def state_dict(self) -> dict:
        """The data position: the number of batches consumed, plus what identifies the order."""
        return {"step": self.step, **self._fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state["step"]``; warn if the seed / rank layout / file set changed."""
        mine = self._fingerprint()
        changed = {k: (state[k], v) for k, v in mine.items() if k in state and state[k] != v}
        if changed:
            log.warning(
                "data state was saved with different settings (saved, now): %s; the order differs "
                "from the interrupted run",
                changed,
            )
        self.step = int(state["step"])
