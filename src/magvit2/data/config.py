"""How training samples and batches are made: :class:`DataConfig`, plain data (YAML section ``data``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from .augment import check_strengths

RESIZE_MODES = ("random_crop", "center_crop", "resize")
JOINT_MODES = ("mixed", "alternate")


@dataclass
class DataConfig:
    """Where the training data is and how samples and batches are made.

    paths: files, folders (recursive) and glob patterns. exclude: fnmatch patterns matched against the
    full path and the file name. num_frames: frames per clip, ``1 + temporal_factor * k``.
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
    hold_out_last: the last this many frames of every video are never read for training (neither as
    clips nor as images), so that ``validation`` can score them (``validation.start_frame``).
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
    hold_out_last: int = 0
    cache_decoded: bool = False
    cache_max_mb: float = 4096.0
    num_workers: int = 0
    seed: int = 0
    temporal_factor: int = 4

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
        k = self.temporal_factor
        if self.num_frames < 1 or (self.num_frames - 1) % k:
            raise ValueError(
                f"DataConfig.num_frames must be 1 + {k}*k (1, {1 + k}, {1 + 2 * k}, ...), "
                f"got {self.num_frames}"
            )
        if self.frame_stride < 1:
            raise ValueError(f"DataConfig.frame_stride must be >= 1, got {self.frame_stride}")
        if self.hold_out_last < 0:
            raise ValueError(f"DataConfig.hold_out_last must be >= 0, got {self.hold_out_last}")
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
