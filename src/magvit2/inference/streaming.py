"""Streaming, tiled inference: frames in, token ids out (and back), with memory flat in video length.

A clip of ``F`` frames is read frame by frame and cut into the tokenizer's causal time chunks (first
chunk ``1 + t*m`` frames, later chunks ``t*m``, ``t`` the temporal factor). Each chunk is padded in
space to multiples of the spatial factor (edge replication), cut into overlapping tiles when it is
larger than the tile size (see :mod:`magvit2.models.tiling`) and run through the encoder with one
:class:`~magvit2.modules.causal.CausalCache` per group of tiles, so a chunk sees exactly the context a
whole-video pass would. The last chunk is padded in time by repeating the last frame up to the next
valid length (``1 + t*k`` frames in all); decoding crops the padding off again, in time and space.

Only one chunk of frames (plus the causal caches, a few frames per layer) is held at a time: peak
memory depends on the chunk length and frame size, not on the number of frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from magvit2.data.video_io import to_tensor, to_uint8
from magvit2.inference.memory import check_fits
from magvit2.inference.refine import DEFAULT_LR, RefineOptions, refine_ids
from magvit2.models import VideoTokenizer, chunk_latent_frames, latent_chunks, video_frames
from magvit2.models.tiling import TilePlan, Tiling, crop_padding, pad_to_multiple
from magvit2.modules.causal import CausalCache
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
        refine_steps, refine_lr: search for better tokens with that many decoder passes per chunk
            (:mod:`magvit2.inference.refine`; 0 = the encoder's tokens). With tiles, each tile is
            refined on its own (memory of one tile's decoder backward pass).
    """

    device: str = "cpu"
    batch_size: int = 4
    max_chunk_frames: int | None = 17
    tile: int | None = None
    overlap: int | None = None
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
    ``(T, H, W, 3)`` of the source size; ``reconstruct`` does both chunk by chunk. ``after_chunk`` is
    called after each chunk (the CLI returns freed memory to the system there).
    """

    def __init__(
        self,
        model: VideoTokenizer,
        options: InferenceOptions | None = None,
        after_chunk: Callable[[], None] | None = None,
    ) -> None:
        self.options = options or InferenceOptions()
        self.device = torch.device(self.options.device)
        self.model = model.to(self.device).eval()
        self.after_chunk = after_chunk or (lambda: None)
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
        if tile is not None:
            tile = tile // self.s * self.s
            overlap = None if overlap is None else min(overlap, tile - 1)
        self.tiling = None if tile is None else Tiling(tile, overlap)
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
        return encoding_name(self.options.refine_steps, self.options.refine_lr)

    def chunk_frames(self, first: bool) -> int | None:
        """Video frames per chunk (first or later chunk); None = unbounded."""
        if self._first is None:
            return None
        return 1 + self.t * (self._first - 1) if first else self.t * self._later

    def _plan(self, h_lat: int, w_lat: int, side: torch.nn.Module) -> TilePlan:
        """The tiles of an ``h_lat`` x ``w_lat`` latent grid for ``side`` (the model's encoder or
        decoder; one tile without ``--tile`` or where that side does not run in tiles)."""
        tiling = self.tiling if self.model.runs_in_tiles(side) else None
        tiling = tiling or Tiling(max(h_lat, w_lat) * self.s, 0)
        return tiling.plan(h_lat, w_lat, self.s)

    def _caches(self, plan: TilePlan) -> list[CausalCache]:
        """One causal cache per group of tiles run together."""
        return [CausalCache() for _ in plan.groups(self.options.batch_size)]

    def check_memory(self, height: int, width: int, frames: int, encode: bool) -> None:
        """Refuse (:class:`~magvit2.inference.memory.FrameTooLargeError`, suggesting a tile size) a
        chunk of ``frames`` frames of this size whose pass is estimated not to fit in the memory
        available (:mod:`magvit2.inference.memory`)."""
        side = self.model.encoder if encode else self.model.decoder
        tiles = self.tiling is not None and self.model.runs_in_tiles(side)
        check_fits(
            self.model, self.device, height, width, frames, encode, self.tiling.tile if tiles else None,
            self.options.batch_size,
        )  # fmt: skip

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
        plan = caches = refine_caches = None
        for chunk, n_real in self._time_chunks(frames):
            video = to_tensor(chunk).unsqueeze(0).to(self.device)
            video, pad_b, pad_r = pad_to_multiple(video, self.s)
            if plan is None:
                self.check_memory(chunk.shape[1], chunk.shape[2], chunk.shape[0], encode=True)
                plan = self._plan(video.shape[-2] // self.s, video.shape[-1] // self.s, self.model.encoder)
                caches = self._caches(plan)
                refine_caches = [CausalCache() for _ in plan.tiles]
            if self.options.refine_steps:
                ids = self._refine_tiles(video, plan, caches, refine_caches, n_real, chunk.shape[1:3])
            else:
                ids = self._encode_tiles(video, plan, caches)
            yield chunk, ids, n_real, (pad_b, pad_r)
            self.after_chunk()

    def encode_stream(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[Tensor, int, tuple[int, int]]]:
        """Encode frames chunk by chunk; yields (ids ``(n, h, w)`` int64 CPU, real frames in the chunk,
        (pad_bottom, pad_right))."""
        for _, ids, n_real, pads in self._encode_chunks(frames):
            yield ids[0].cpu(), n_real, pads

    def _latents(self, video: Tensor, plan: TilePlan, caches: list[CausalCache]) -> list[Tensor]:
        """Padded video ``(1, 3, T, H, W)`` -> each tile's latent ``(1, Z, n, th, tw)``."""
        encoder, batch = self.model.encoder, self.options.batch_size
        with torch.inference_mode():
            return plan.map(video, lambda crops, g: encoder(crops, caches[g]), self.s, batch)

    def _encode_tiles(self, video: Tensor, plan: TilePlan, caches: list[CausalCache]) -> Tensor:
        """Padded video ``(1, 3, T, H, W)`` -> ids ``(1, n, h, w)``."""
        with torch.inference_mode():
            return self.model.quantizer.codes_to_indices(plan.assemble(self._latents(video, plan, caches)))

    def _refine_tiles(
        self,
        video: Tensor,
        plan: TilePlan,
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
        decoded on its own; the tiled decode blends neighbours over the overlaps, so "never worse
        than the encoder" holds per tile, not exactly for the blended frame.
        """
        s, model, options = self.s, self.model, self.options.refine
        latents = self._latents(video, plan, caches)
        h, w = size
        per_tile = []
        for t, latent, cache in zip(plan.tiles, latents, refine_caches, strict=True):
            real_h, real_w = min(t.size_h * s, h - t.top * s), min(t.size_w * s, w - t.left * s)
            crop = plan.crop(video, t, s)
            per_tile.append(refine_ids(model, latent, crop, options, cache, n_real, real_h, real_w)[0])
        return plan.assemble(per_tile)

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
    def _decode_tiles(self, ids: Tensor, plan: TilePlan, caches: list[CausalCache]) -> Tensor:
        """ids ``(1, n, h, w)`` -> float video ``(1, 3, T, h*s, w*s)`` (tiles blended)."""
        model = self.model
        with torch.inference_mode():
            codes = model.quantizer.indices_to_codes(ids).to(model.reference_tensor().dtype)
            run = lambda crops, g: model.decoder(crops, caches[g])
            per_tile = plan.map(codes, run, 1, self.options.batch_size)
            return per_tile[0] if len(per_tile) == 1 else plan.blend(per_tile)

    def decode_chunks(
        self, chunks: Iterable[tuple[Tensor, int]], height: int, width: int
    ) -> Iterator[np.ndarray]:
        """Decode latent chunks ``(n, h, w)`` in order; yields uint8 frames ``(T, height, width, 3)``
        keeping the first ``n_keep`` frames of each chunk (drops the time padding)."""
        plan = caches = None
        for ids, n_keep in chunks:
            ids = ids.to(self.device).unsqueeze(0)
            self.model.quantizer.check_indices(ids)
            if plan is None:
                plan = self._plan(ids.shape[-2], ids.shape[-1], self.model.decoder)
                caches = self._caches(plan)
            video = self._decode_tiles(ids, plan, caches)[0, :, :n_keep, :height, :width]
            yield to_uint8(video)
            self.after_chunk()

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
        plan = caches = None
        for chunk, ids, n_real, (pad_b, pad_r) in self._encode_chunks(frames):
            if sink is not None:
                sink.append(ids[0].cpu())
            if plan is None:
                self.check_memory(chunk.shape[1], chunk.shape[2], chunk.shape[0], encode=False)
                plan = self._plan(ids.shape[-2], ids.shape[-1], self.model.decoder)
                caches = self._caches(plan)
            rec = crop_padding(self._decode_tiles(ids, plan, caches), pad_b, pad_r)
            yield chunk[:n_real], to_uint8(rec[0, :, :n_real])


def _remember_size(frames: Iterable[np.ndarray], sizes: list) -> Iterator[np.ndarray]:
    for frame in frames:
        if not sizes:
            sizes.append(frame.shape[:2])
        yield frame
