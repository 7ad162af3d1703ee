"""Training data: endless, resumable streams of random clips and images, and the batches of each step.

Design (all of it deterministic given ``DataConfig.seed``; files and items: :mod:`magvit2.data.media`):

* **Two streams** (videos, images), each an endless sequence of epochs. Epoch ``e`` visits the items in
  the order of a permutation drawn from ``(seed, stream, e)``; rank ``r`` of ``W`` takes the positions
  ``r, r+W, r+2W, ...`` of the first ``W * (N // W)`` positions, so no item is seen twice across ranks in
  an epoch. Sample ``i`` of a rank's stream is a pure function of ``(seed, stream, epoch, position)``:
  the clip start, the crop offsets and the flip come from a generator seeded with those numbers. Results
  are therefore independent of worker processes, and resuming only needs the step count. A file that
  fails while decoding a sample is skipped (recorded in ``skipped``) and that sample is replaced by the
  next item of the epoch order; if no usable file is left, a ``ValueError`` says so.
* **Joint batches.** Step ``s`` is a dict ``{"video": (Bv, 3, T, H, W) or None, "image": (Bi, 3, 1, H, W)
  or None, "step": s}``, float32 in [-1, 1]. ``joint_mode="mixed"``: every step holds
  ``Bi = round(batch_size * image_ratio)`` images and ``Bv = batch_size - Bi`` videos.
  ``joint_mode="alternate"``: a fraction ``image_ratio`` of the steps (evenly spread: step ``s`` is an image
  step when ``floor((s+1) r) > floor(s r)``) is a batch of ``image_batch_size`` images, the others a batch
  of ``batch_size`` videos. The step's stream indices are computed in O(1) from ``s``.
* **Resume.** :class:`BatchStream` counts the batches handed out; ``state_dict()`` stores that count and
  ``load_state_dict()`` makes the next iteration continue with exactly the batch an uninterrupted run
  would have produced next.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from fractions import Fraction

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import DataConfig
from .media import MediaIndex, MediaItem
from .video_io import VideoReadError

log = logging.getLogger(__name__)

VIDEO_STREAM, IMAGE_STREAM = 0, 1


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

    def _items(self) -> list[MediaItem]:
        raise NotImplementedError

    def _sample(self, item: MediaItem, rng: np.random.Generator) -> torch.Tensor:
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

    def _items(self) -> list[MediaItem]:
        return self.index.video_items

    def _sample(self, item: MediaItem, rng: np.random.Generator) -> torch.Tensor:
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

    def _items(self) -> list[MediaItem]:
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
    does not depend on ``num_workers`` (default: ``config.num_workers``). The loader draws its worker
    seeds from its own generator (seeded with ``config.seed`` and ``start_step``), never from torch's
    global RNG, so building it leaves a restored RNG state untouched (exact resume).
    """
    workers = dataset.config.num_workers if num_workers is None else num_workers
    generator = torch.Generator().manual_seed((dataset.config.seed * 1_000_003 + start_step) % 2**63)
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=_StepSampler(start_step, stop_step),
        num_workers=workers,
        collate_fn=_passthrough,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
        generator=generator,
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
