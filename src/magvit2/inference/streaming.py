"""Streaming, tiled inference: frames in, token ids out (and back), with memory flat in video length.

A clip of ``F`` frames is read frame by frame and cut into the tokenizer's causal time chunks (first
chunk ``1 + t*m`` frames, later chunks ``t*m``, ``t`` the temporal factor). Each chunk is padded in
space to multiples of the spatial factor (edge replication), cut into overlapping tiles when it is
larger than the tile size (see :mod:`magvit2.inference.tiling`) and run through the encoder with one
:class:`~magvit2.modules.causal.CausalCache` per group of tiles, so a chunk sees exactly the context a
whole-video pass would. The last chunk is padded in time by repeating the last frame up to the next
valid length (``1 + t*k`` frames in all); decoding crops the padding off again, in time and space.

Only one chunk of frames (plus the causal caches, a few frames per layer) is held at a time: peak
memory depends on the chunk length and frame size, not on the number of frames.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from magvit2.data.video_io import to_tensor, to_uint8
from magvit2.inference.global_norm import StopPass, WholeFrameNorm, copy_cache
from magvit2.inference.memory import check_fits
from magvit2.inference.refine import DEFAULT_LR, RefineOptions, refine_ids
from magvit2.inference.tiling import (
    Tile,
    crop_padding,
    decode_tiled,
    encode_tiled,
    pad_to_multiple,
    plan_tiles,
)
from magvit2.models import VideoTokenizer, chunk_latent_frames, latent_chunks, video_frames
from magvit2.modules.causal import CausalCache
from magvit2.modules.norm import _latent_stats
from magvit2.tokens import encoding_name, model_fingerprint


@dataclass(frozen=True)
class InferenceOptions:
    """How to run the tokenizer on real inputs.

    Attributes:
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``).
        batch_size: tiles run through the network in one forward pass.
        max_chunk_frames: video frames per causal time chunk (rounded down to ``1+t*m`` / ``t*m``);
            ``None`` = whole clips at once (memory then grows with the clip's length).
        tile: tile size in pixels (rounded down to a multiple of the spatial factor); frames larger
            than this in height or width are processed in overlapping tiles. ``None`` = never tile.
        overlap: overlap between neighbouring tiles in pixels; ``None`` = a quarter of the tile.
        whole_frame_norm: with tiles, every norm uses statistics of the whole frame, gathered layer by
            layer before the real pass (:mod:`magvit2.inference.global_norm`; exact, costs one partial
            pass per norm layer); False = each tile uses its own statistics (one pass, visible seams).
        refine_steps, refine_lr: search for better tokens with that many decoder passes per chunk
            (:mod:`magvit2.inference.refine`; 0 = the encoder's tokens). With tiles, each tile is
            refined on its own (memory of one tile's decoder backward pass).
    """

    device: str = "cpu"
    batch_size: int = 4
    max_chunk_frames: int | None = 17
    tile: int | None = None
    overlap: int | None = None
    whole_frame_norm: bool = True
    refine_steps: int = 0
    refine_lr: float = DEFAULT_LR

    def __post_init__(self) -> None:
        self.refine  # noqa: B018 - validates the refinement options
        if self.batch_size < 1:
            raise ValueError(f"batch_size (--batch-size) must be >= 1, got {self.batch_size}")
        if self.max_chunk_frames is not None and self.max_chunk_frames < 1:
            raise ValueError(
                f"max_chunk_frames (--max-chunk-frames) must be >= 1, got {self.max_chunk_frames}"
            )
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"tile (--tile) must be >= 1 pixel, got {self.tile}")
        if self.overlap is not None and self.overlap < 0:
            raise ValueError(f"overlap (--tile-overlap) must be >= 0 pixels, got {self.overlap}")

    @property
    def refine(self) -> RefineOptions:
        """``refine_steps`` and ``refine_lr`` as :class:`RefineOptions` (validated)."""
        return RefineOptions(self.refine_steps, self.refine_lr)


@dataclass
class EncodedClip:
    """Token ids of one clip and the facts needed to decode it back to the source's frames.

    ``ids``: int64 ``(T', h, w)`` on the CPU; ``frames``/``height``/``width``: the source before
    padding; ``pad_bottom``/``pad_right``: spatial padding in pixels.
    """

    ids: Tensor
    frames: int
    height: int
    width: int
    pad_bottom: int
    pad_right: int


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library if it is glibc (has ``malloc_trim`` and ``mallopt``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError):
        return None
    return libc


def _libc_trim():
    """glibc's ``malloc_trim`` or None (other C libraries)."""
    libc = _glibc()
    return None if libc is None else libc.malloc_trim


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def bound_heap_growth(threshold: int = 256 * 1024) -> bool:
    """Serve every allocation of ``threshold`` bytes or more with its own mmap (glibc; process-wide).

    glibc raises its mmap threshold each time a large block is freed, so chunk-sized buffers (decoded
    frames, activations) move onto the heap, where they fragment: the peak resident size of a long
    streamed job then creeps up with the video's length although nothing is kept. A fixed threshold
    returns such buffers to the system as soon as they are freed, at the cost of fresh zeroed pages
    for each (1.3-2x the time). ``magvit2`` streaming commands call this once at start when given
    ``--flat-memory``; Python users streaming long videos may call it too; never where gradients are
    taken (training 1.7x slower). Returns False where it does not apply. (benchmarks/long_video.py,
    40 min of 128x128 video: peak 1.40x the 10-second run's without, 1.11x with.)
    """
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; no-op elsewhere).

    Called once per chunk: without it, glibc's per-thread arenas (PyAV's decoder threads, torch's
    intra-op threads) fragment and the resident size creeps up with the video's length although
    nothing is kept (measured: +30% over 2,400 frames without, flat with it).
    """
    trim = _libc_trim()
    if trim is not None:
        trim(0)


def padded_frames(frames: int, temporal_factor: int) -> int:
    """The valid frame count ``1 + t*k >= frames`` a clip of ``frames`` frames is padded to."""
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {frames}")
    return 1 + temporal_factor * -(-(frames - 1) // temporal_factor)


def latent_frames(frames: int, temporal_factor: int) -> int:
    """Latent frames (token grid length ``T'``) of a clip of ``frames`` frames."""
    return 1 + (padded_frames(frames, temporal_factor) - 1) // temporal_factor


class TokenizerRunner:
    """Runs a :class:`VideoTokenizer` on streams of uint8 frames ``(H, W, 3)``.

    ``encode_frames`` gives an :class:`EncodedClip`; ``decode_clip`` yields uint8 frame chunks
    ``(T, H, W, 3)`` of the source size; ``reconstruct`` does both chunk by chunk.
    """

    def __init__(self, model: VideoTokenizer, options: InferenceOptions | None = None) -> None:
        self.options = options or InferenceOptions()
        self.device = torch.device(self.options.device)
        self.model = model.to(self.device).eval()
        self.t = model.temporal_factor
        self.s = model.spatial_factor
        mcf = self.options.max_chunk_frames
        # latent frames of the first chunk and of each later one (None: whole clips)
        self._first, self._later = (None, None) if mcf is None else chunk_latent_frames(mcf, self.t)
        tile, overlap = self.options.tile, self.options.overlap
        if tile is not None and tile < self.s:
            raise ValueError(f"tile (--tile) must be at least the spatial factor, {self.s} px; got {tile}")
        if tile is not None and overlap is not None and overlap >= tile:
            raise ValueError(f"overlap (--tile-overlap) must be below the tile, {tile} px; got {overlap}")
        self.tile = None if tile is None else tile // self.s * self.s
        if self.tile is not None:
            ov = overlap if overlap is not None else self.tile // 4
            self.overlap = min(ov // self.s * self.s, self.tile - self.s)
        else:
            self.overlap = 0
        self._fingerprint: str | None = None

    # ------------------------------------------------------------------ facts
    @property
    def fingerprint(self) -> str:
        """The model fingerprint recorded in token files (config + weights hash)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model.config.to_dict(), self.model.state_dict())
        return self._fingerprint

    @property
    def vocabulary(self) -> int:
        return self.model.codebook_size

    @property
    def encoding(self) -> str:
        """How this runner finds tokens, as token files record it (``encoder`` or ``refined ...``)."""
        model = self.model
        total = model.config.feedback_passes if model.feedback is not None else 0
        stages = (len(model.feedback_nets()), total)
        return encoding_name(self.options.refine_steps, self.options.refine_lr, stages)

    def chunk_frames(self, first: bool) -> int | None:
        """Video frames per chunk (first or later chunk); None = unbounded."""
        if self._first is None:
            return None
        return 1 + self.t * (self._first - 1) if first else self.t * self._later

    def _tiles(self, h_lat: int, w_lat: int) -> list[Tile]:
        if self.tile is None:
            return plan_tiles(h_lat, w_lat, max(h_lat, w_lat), 0)
        return plan_tiles(h_lat, w_lat, self.tile // self.s, self.overlap // self.s)

    def _groups(self, n_tiles: int) -> list[range]:
        b = self.options.batch_size
        return [range(i, min(i + b, n_tiles)) for i in range(0, n_tiles, b)]

    def check_memory(self, height: int, width: int, frames: int, encode: bool) -> None:
        """Refuse (:class:`~magvit2.inference.memory.FrameTooLargeError`, suggesting a tile size) a
        chunk of ``frames`` frames of this size whose pass is estimated not to fit in the memory
        available (:mod:`magvit2.inference.memory`)."""
        check_fits(self.model, self.device, height, width, frames, encode, self.tile, self.options.batch_size)

    # ------------------------------------------------------------------ chunking
    def _time_chunks(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, int]]:
        """Group frames into model chunks ``(T, H, W, 3)``; the last is padded by repeating its last
        frame. Yields (chunk, number of real frames in it)."""
        buf: list[np.ndarray] = []
        first = True
        size = None
        for frame in frames:
            if size is None:
                size = frame.shape
            elif frame.shape != size:
                raise ValueError(f"frame size changed mid-stream from {size[:2]} to {frame.shape[:2]}")
            buf.append(frame)
            want = self.chunk_frames(first)
            if want is not None and len(buf) == want:
                yield np.stack(buf), want
                buf, first = [], False
        if buf:
            n = len(buf)
            target = padded_frames(n, self.t) if first else self.t * -(-n // self.t)
            buf.extend([buf[-1]] * (target - n))
            yield np.stack(buf), n

    # ------------------------------------------------------------------ encode
    def _encode_chunks(
        self, frames: Iterable[np.ndarray]
    ) -> Iterator[tuple[np.ndarray, Tensor, int, tuple[int, int]]]:
        """Encode frames chunk by chunk; yields (source chunk ``(T, H, W, 3)`` uint8, ids ``(1, n, h, w)``
        on the device, real frames in the chunk, (pad_bottom, pad_right))."""
        tiles = caches = refine_caches = None
        for chunk, n_real in self._time_chunks(frames):
            video = to_tensor(chunk).unsqueeze(0).to(self.device)
            video, pad_b, pad_r = pad_to_multiple(video, self.s)
            if tiles is None:
                self.check_memory(chunk.shape[1], chunk.shape[2], chunk.shape[0], encode=True)
                tiles = self._tiles(video.shape[-2] // self.s, video.shape[-1] // self.s)
                caches = [CausalCache() for _ in self._groups(len(tiles))]
                refine_caches = [CausalCache() for _ in tiles]
            if self.options.refine_steps:
                ids = self._refine_tiles(video, tiles, caches, refine_caches, n_real, chunk.shape[1:3])
            else:
                ids = self._encode_tiles(video, tiles, caches)
            yield chunk, ids, n_real, (pad_b, pad_r)
            release_free_memory()

    def encode_stream(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[Tensor, int, tuple[int, int]]]:
        """Encode frames chunk by chunk; yields (ids ``(n, h, w)`` int64 CPU, real frames in the chunk,
        (pad_bottom, pad_right))."""
        for _, ids, n_real, pads in self._encode_chunks(frames):
            yield ids[0].cpu(), n_real, pads

    def _run_tiles(self, net, crops, tiles, caches, fn, latent_stats=None) -> list[Tensor]:
        """Run ``fn(batch, cache)`` on the tile crops in groups of ``batch_size``; with several tiles
        and ``whole_frame_norm`` the norms use whole-frame statistics (:class:`WholeFrameNorm`)."""
        groups = self._groups(len(tiles))
        holder: list[WholeFrameNorm] = []

        def one_pass(real: bool) -> list[Tensor]:
            outs: list[Tensor] = []
            for group, cache in zip(groups, caches, strict=True):
                if holder:
                    holder[0].begin([tiles[i] for i in group])
                if real:
                    outs.extend(fn(torch.cat([crops[i] for i in group]), cache).split(1))
                    continue
                try:
                    fn(torch.cat([crops[i] for i in group]), copy_cache(cache, net.modules()))
                except StopPass:
                    pass
            return outs

        if len(tiles) == 1 or not self.options.whole_frame_norm:
            return one_pass(True)
        with WholeFrameNorm(net) as norm:
            holder.append(norm)
            norm.latent_stats = latent_stats
            recorded = True
            while recorded:  # one norm layer per record pass, in call order
                norm.start(record=True)
                one_pass(False)
                recorded = norm.finish()
            norm.start(record=False)
            return one_pass(True)

    def _tile_crops(self, video: Tensor, tiles: list[Tile]) -> list[Tensor]:
        """Padded video ``(1, 3, T, H, W)`` -> each tile's pixels ``(1, 3, T, th*s, tw*s)``."""
        s = self.s
        return [
            video[..., t.top * s : (t.top + t.size_h) * s, t.left * s : (t.left + t.size_w) * s]
            for t in tiles
        ]

    def _owned_ids(self, video: Tensor, per_tile: list[Tensor]) -> Tensor:
        """Per-tile ids ``(1, n, th, tw)`` -> the frame's grid ``(1, n, h, w)``, each position from the
        tile that owns it (:func:`~magvit2.inference.tiling.encode_tiled`)."""
        if len(per_tile) == 1:
            return per_tile[0]
        return encode_tiled(video, lambda _crop, i: per_tile[i], self.s, self.tile, self.overlap)

    def _encoding_net(self) -> torch.nn.Module:
        """The modules one encoding step runs (whose norms tiling must give whole-frame statistics):
        the encoder, or the whole model when its feedback network runs too."""
        return self.model if self.model.feeds_back else self.model.encoder

    def _encode_tiles(self, video: Tensor, tiles: list[Tile], caches: list[CausalCache]) -> Tensor:
        """Padded video ``(1, 3, T, H, W)`` -> ids ``(1, n, h, w)``."""
        model = self.model
        with torch.inference_mode():
            per_tile = self._run_tiles(
                self._encoding_net(),
                self._tile_crops(video, tiles),
                tiles,
                caches,
                lambda x, c: model.quantizer.codes_to_indices(model.latent(x, c)),
            )
            return self._owned_ids(video, per_tile)

    def _refine_tiles(
        self,
        video: Tensor,
        tiles: list[Tile],
        caches: list[CausalCache],
        refine_caches: list[CausalCache],
        n_real: int,
        size: tuple[int, int],
    ) -> Tensor:
        """Padded video ``(1, 3, T, H, W)`` -> refined ids ``(1, n, h, w)``.

        Each tile's tokens are searched for against that tile's pixels (its real frames and pixels,
        not the padding) with the decoder run on the tile alone and a causal cache of its own, so
        memory is that of one tile's decoder backward pass. Every latent position then takes its
        token from the tile that owns it, as in plain tiled encoding. The search measures each tile
        decoded on its own; the tiled decode blends neighbours over the overlaps (and, with
        ``whole_frame_norm``, uses whole-frame statistics), so "never worse than the encoder" holds
        per tile, not exactly for the blended frame.
        """
        s, model, options = self.s, self.model, self.options.refine
        crops = self._tile_crops(video, tiles)
        with torch.inference_mode():
            latents = self._run_tiles(self._encoding_net(), crops, tiles, caches, model.latent)
        h, w = size
        per_tile = []
        for t, crop, latent, cache in zip(tiles, crops, latents, refine_caches, strict=True):
            real_h, real_w = min(t.size_h * s, h - t.top * s), min(t.size_w * s, w - t.left * s)
            ids, _ = refine_ids(model, latent, crop, options, cache, n_real, real_h, real_w)
            per_tile.append(ids)
        return self._owned_ids(video, per_tile)

    def encode_frames(self, frames: Iterable[np.ndarray]) -> EncodedClip:
        """Encode a whole clip (streamed) -> :class:`EncodedClip`."""
        sizes: list[tuple[int, int]] = []
        parts, total, pads = [], 0, (0, 0)
        for ids, n_real, chunk_pads in self.encode_stream(_remember_size(frames, sizes)):
            parts.append(ids)
            total += n_real
            pads = chunk_pads
        if not parts:
            raise ValueError("no frames to encode")
        return EncodedClip(torch.cat(parts), total, sizes[0][0], sizes[0][1], pads[0], pads[1])

    # ------------------------------------------------------------------ decode
    def _decode_tiles(self, ids: Tensor, tiles: list[Tile], caches: list[CausalCache]) -> Tensor:
        """ids ``(1, n, h, w)`` -> float video ``(1, 3, T, h*s, w*s)`` (tiles blended)."""
        model = self.model
        with torch.inference_mode():
            dtype = model.last_layer_weight().dtype
            crops = [ids[..., t.top : t.top + t.size_h, t.left : t.left + t.size_w] for t in tiles]
            latent_stats = None
            if len(tiles) > 1:
                codes = model.quantizer.indices_to_codes(ids).to(dtype)
                latent_stats = _latent_stats(codes, model.config.norm_eps, model.config.time_pooled_norm)
            per_tile = self._run_tiles(
                model.decoder,
                crops,
                tiles,
                caches,
                lambda x, c: model.decoder(model.quantizer.indices_to_codes(x).to(dtype), c),
                latent_stats,
            )
            if len(tiles) == 1:
                return per_tile[0]
            return decode_tiled(
                ids, lambda _ids, i: per_tile[i], self.s, self.tile, self.overlap, margin=self.overlap // 4
            )

    def decode_chunks(
        self, chunks: Iterable[tuple[Tensor, int]], height: int, width: int
    ) -> Iterator[np.ndarray]:
        """Decode latent chunks ``(n, h, w)`` in order; yields uint8 frames ``(T, height, width, 3)``
        keeping the first ``n_keep`` frames of each chunk (drops the time padding)."""
        tiles = caches = None
        for ids, n_keep in chunks:
            ids = ids.to(self.device).unsqueeze(0)
            self.model.quantizer.check_indices(ids)
            if tiles is None:
                tiles = self._tiles(ids.shape[-2], ids.shape[-1])
                caches = [CausalCache() for _ in self._groups(len(tiles))]
            video = self._decode_tiles(ids, tiles, caches)[0, :, :n_keep, :height, :width]
            yield to_uint8(video)
            release_free_memory()

    def latent_chunks(self, n_latent: int) -> list[tuple[int, int]]:
        """``[a, b)`` latent ranges of the decode chunks (the model's own :func:`latent_chunks`)."""
        return latent_chunks(n_latent, self.t, self.options.max_chunk_frames)

    def decode_clip(self, clip: EncodedClip) -> Iterator[np.ndarray]:
        """Yield the clip's frames as uint8 chunks ``(T, height, width, 3)``, ``clip.frames`` in all."""
        n_latent = clip.ids.shape[0]
        if latent_frames(clip.frames, self.t) != n_latent:
            raise ValueError(
                f"{clip.frames} frames need {latent_frames(clip.frames, self.t)} latent frames with "
                f"temporal factor {self.t}, the ids have {n_latent}"
            )
        h, w = clip.ids.shape[-2:]
        if (h * self.s - clip.pad_bottom, w * self.s - clip.pad_right) != (clip.height, clip.width):
            raise ValueError(
                f"token grid {h}x{w} (x{self.s} = {h * self.s}x{w * self.s} pixels) minus padding "
                f"{clip.pad_bottom}x{clip.pad_right} does not give the recorded size "
                f"{clip.height}x{clip.width}"
            )

        first = self.chunk_frames(first=True)
        self.check_memory(clip.height, clip.width, min(clip.frames, first or clip.frames), encode=False)

        def chunks():
            done = 0
            for a, b in self.latent_chunks(n_latent):
                n_frames = video_frames(b, self.t) - video_frames(a, self.t)
                keep = min(n_frames, clip.frames - done)
                done += keep
                yield clip.ids[a:b], keep

        yield from self.decode_chunks(chunks(), clip.height, clip.width)

    def reconstruct(
        self, frames: Iterable[np.ndarray], sink: list | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Encode and decode chunk by chunk; yields (source uint8 ``(T, H, W, 3)``, reconstruction of
        the same shape). Appends each chunk's ids ``(n, h, w)`` to ``sink`` when given."""
        tiles = caches = None
        for chunk, ids, n_real, (pad_b, pad_r) in self._encode_chunks(frames):
            if sink is not None:
                sink.append(ids[0].cpu())
            if tiles is None:
                self.check_memory(chunk.shape[1], chunk.shape[2], chunk.shape[0], encode=False)
                tiles = self._tiles(ids.shape[-2], ids.shape[-1])
                caches = [CausalCache() for _ in self._groups(len(tiles))]
            rec = crop_padding(self._decode_tiles(ids, tiles, caches), pad_b, pad_r)
            yield chunk[:n_real], to_uint8(rec[0, :, :n_real])


def _remember_size(frames: Iterable[np.ndarray], sizes: list) -> Iterator[np.ndarray]:
    for frame in frames:
        if not sizes:
            sizes.append(frame.shape[:2])
        yield frame
