"""``VideoTokenizer``: one causal network that tokenizes images and videos, whole or in time chunks."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from magvit2.fileio import set_default_permissions
from magvit2.models.checks import state_dict_mismatch
from magvit2.models.config import TokenizerConfig
from magvit2.models.networks import Decoder, Encoder
from magvit2.models.presets import get_preset
from magvit2.models.tiling import TilePlan, Tiling
from magvit2.modules import CausalCache
from magvit2.quantizers import QuantizerOutput, build_quantizer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


@dataclass
class TokenizerOutput:
    """What :meth:`VideoTokenizer.forward` returns.

    Attributes:
        reconstruction: decoded video ``(B, 3, T, H, W)`` (or image ``(B, 3, H, W)``), differentiable.
        quantizer: the quantizer's output (codes, token ids, auxiliary losses, usage statistics).
        latent: the encoder's output before quantization ``(B, Z, n, h, w)`` (``n = 1`` for images).
    """

    reconstruction: Tensor
    quantizer: QuantizerOutput
    latent: Tensor | None = None


def latent_chunks(n_latent: int, temporal_factor: int, max_chunk_frames: int | None) -> list[tuple[int, int]]:
    """Split ``n_latent`` latent frames into ``[start, stop)`` ranges of at most ``max_chunk_frames``
    video frames each.

    The first chunk holds ``1 + t*m`` video frames (``1 + m`` latent frames), later chunks ``t*m``
    (``m`` latent frames), with ``t`` the temporal factor and ``m`` as large as fits. A
    ``max_chunk_frames`` that is not of that form is rounded down to it; a chunk always holds at least
    one latent frame (so later chunks hold at least ``t`` video frames even if ``max_chunk_frames < t``).
    """
    if max_chunk_frames is None:
        return [(0, n_latent)]
    first, later = chunk_latent_frames(max_chunk_frames, temporal_factor)
    bounds, start, stop = [], 0, min(first, n_latent)
    while start < n_latent:
        bounds.append((start, stop))
        start, stop = stop, min(stop + later, n_latent)
    return bounds


def chunk_latent_frames(max_chunk_frames: int, temporal_factor: int) -> tuple[int, int]:
    """Latent frames ``(first, later)`` of the first and of every later time chunk that holds at most
    ``max_chunk_frames`` video frames (see :func:`latent_chunks`)."""
    if not isinstance(max_chunk_frames, int) or isinstance(max_chunk_frames, bool) or max_chunk_frames < 1:
        raise ValueError(f"max_chunk_frames: expected None or an int >= 1, got {max_chunk_frames!r}")
    return 1 + (max_chunk_frames - 1) // temporal_factor, max(1, max_chunk_frames // temporal_factor)


def video_frames(latent_index: int, temporal_factor: int) -> int:
    """Number of video frames that latent frames ``[0, latent_index)`` decode to."""
    return 0 if latent_index == 0 else 1 + temporal_factor * (latent_index - 1)


#: Folder of the models shipped inside the package.
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def resolve_pretrained(name_or_dir: str | Path) -> Path:
    """A model folder: an existing directory as given, else a built-in model's name (``"default"``)."""
    path = Path(name_or_dir)
    if path.is_dir():
        return path
    builtin = PRETRAINED_DIR / str(name_or_dir)
    if str(name_or_dir) == builtin.name and (builtin / CONFIG_NAME).is_file():
        return builtin
    known = (
        sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG_NAME).is_file())
        if PRETRAINED_DIR.is_dir()
        else []
    )
    raise ValueError(
        f"{name_or_dir}: not a model directory (config.json + model.safetensors from save_pretrained) "
        f"and not a built-in model; built-in models: {known or 'none in this installation'}"
    )


class VideoTokenizer(nn.Module):
    """Causal 3D CNN tokenizer (MAGVIT-v2 / Open-MAGVIT2) for videos and images.

    A float video ``(B, 3, 1+t*k, H, W)`` in [-1, 1] (``t`` = temporal factor, ``H`` and ``W``
    multiples of the spatial factor ``s``) becomes ``(B, 1+k, H/s, W/s)`` int64 token ids; an image
    ``(B, 3, H, W)`` is a one-frame video and gives ``(B, 1, H/s, W/s)``. Every layer is causal in
    time, so latent frame ``j`` depends only on frames ``<= t*j`` and a video can be processed in
    time chunks (``max_chunk_frames``) with the same result as a whole-video pass.

    ``forward`` is the architecture: encode, quantize, decode (differentiable, for training).
    ``encode``/``decode``/``encode_codes``/``decode_codes``/``encode_latent`` run the same parts in
    inference mode; their arguments choose time chunks (``max_chunk_frames``) and spatial tiles
    (``tile``, ``overlap``; :meth:`enable_tiling` sets a default).
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        if not isinstance(config, TokenizerConfig):
            raise ValueError(f"VideoTokenizer: expected a TokenizerConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantizer = build_quantizer(config.quantizer)
        #: tile size and overlap that encode/decode use when not given one (:meth:`enable_tiling`).
        self.tiling: Tiling | None = None

    # ------------------------------------------------------------------ construction and files
    @classmethod
    def from_config(cls, name_or_config: str | dict | TokenizerConfig) -> VideoTokenizer:
        """Build a randomly initialised tokenizer from a preset name, a config dict or a config."""
        if isinstance(name_or_config, str):
            config = get_preset(name_or_config)
        elif isinstance(name_or_config, dict):
            config = TokenizerConfig.from_dict(name_or_config)
        elif isinstance(name_or_config, TokenizerConfig):
            config = name_or_config
        else:
            raise ValueError(
                "VideoTokenizer.from_config: expected a preset name, a dict or a TokenizerConfig, "
                f"got {type(name_or_config).__name__}"
            )
        return cls(config)

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (every parameter and persistent buffer).

        ``dtype`` (e.g. ``torch.float16``) stores floating tensors in that type to halve the file;
        :meth:`from_pretrained` loads them back into the model's float32 parameters.
        """
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"VideoTokenizer.save_pretrained: expected a floating dtype, got {dtype}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "model": "VideoTokenizer", **self.config.to_dict()}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        cast = lambda v: v.to(dtype) if dtype is not None and v.is_floating_point() else v
        tensors = {k: cast(v.detach()).contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        set_default_permissions(directory / WEIGHTS_NAME)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> VideoTokenizer:
        """Load a tokenizer written by :meth:`save_pretrained` (safetensors; never pickle).

        ``directory="default"`` (when no such folder exists here) loads the built-in model shipped
        inside the package (``magvit2/pretrained/default``).
        """
        directory = resolve_pretrained(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise ValueError(f"VideoTokenizer.from_pretrained: expected {p} to exist, it does not")
        try:
            meta = json.loads(config_path.read_text())
        except ValueError as err:
            raise ValueError(f"{config_path}: not valid JSON ({err})") from err
        version = meta.pop("format_version", FORMAT_VERSION)
        meta.pop("model", None)
        if version != FORMAT_VERSION:
            raise ValueError(f"{config_path}: expected format_version {FORMAT_VERSION}, got {version}")
        try:
            model = cls(TokenizerConfig.from_dict(meta))
        except ValueError as err:
            raise ValueError(f"{config_path}: {err}") from err
        try:
            state = load_file(str(weights_path), device=str(device))
        except Exception as err:  # safetensors raises its own error type (not an OSError)
            raise ValueError(f"{weights_path}: not a readable safetensors file (truncated?): {err}") from err
        mismatch = state_dict_mismatch(model.state_dict(), state)
        if mismatch:
            raise ValueError(f"{weights_path}: weights do not match {config_path.name}; {mismatch}")
        model.load_state_dict(state)
        return model.to(device).eval()

    # ------------------------------------------------------------------ properties
    @property
    def temporal_factor(self) -> int:
        """Video frames per latent frame (after the first frame)."""
        return self.config.temporal_factor

    @property
    def spatial_factor(self) -> int:
        """Pixels per token along height and width."""
        return self.config.spatial_factor

    @property
    def codebook_size(self) -> int:
        """Number of distinct token ids."""
        return self.quantizer.codebook_size

    @property
    def z_channels(self) -> int:
        """Channels of the latent and of the codes."""
        return self.config.z_channels

    def last_layer_weight(self) -> Tensor:
        """Weight of the decoder's last conv (for the adaptive GAN-loss weight)."""
        return self.decoder.conv_out.conv_1.weight

    def reference_tensor(self) -> Tensor:
        """A floating weight or buffer of the model: its dtype and device are the model's (a model with
        no network still has its block-mean code's tables)."""
        tensors = itertools.chain(self.parameters(), self.buffers())
        return next((t for t in tensors if t.is_floating_point()), torch.empty(0))

    # ------------------------------------------------------------------ input checks
    def _check_video(self, x: Tensor, where: str) -> tuple[Tensor, bool]:
        """Validate a video/image; return it 5-D in the model's dtype, and whether it was an image."""
        t, s, c = self.temporal_factor, self.spatial_factor, self.config.in_channels
        expected = f"a float video (B, {c}, 1+{t}k, H, W) or image (B, {c}, H, W), H and W multiples of {s}"
        if not isinstance(x, Tensor):
            raise ValueError(f"VideoTokenizer.{where}: expected {expected}; got {type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"VideoTokenizer.{where}: expected {expected}; got dtype {x.dtype}")
        if x.ndim not in (4, 5):
            raise ValueError(f"VideoTokenizer.{where}: expected {expected}; got shape {tuple(x.shape)}")
        if x.shape[1] != c:
            raise ValueError(
                f"VideoTokenizer.{where}: expected {c} channels in dim 1; got shape {tuple(x.shape)}"
            )
        image = x.ndim == 4
        if image:
            x = x.unsqueeze(2)
        frames, h, w = x.shape[2:]
        if (frames - 1) % t:
            raise ValueError(
                f"VideoTokenizer.{where}: expected 1+{t}k frames (1, {1 + t}, {1 + 2 * t}, ...); got {frames}"
            )
        if h % s or w % s or h == 0 or w == 0:
            raise ValueError(
                f"VideoTokenizer.{where}: expected height and width multiples of {s}; got {h}x{w}"
            )
        return x.to(self.reference_tensor().dtype), image

    def _check_codes(self, codes: Tensor, where: str) -> tuple[Tensor, bool]:
        z = self.z_channels
        if not isinstance(codes, Tensor) or not codes.is_floating_point() or codes.ndim not in (4, 5):
            got = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            dtype = codes.dtype if isinstance(codes, Tensor) else None
            raise ValueError(
                f"VideoTokenizer.{where}: expected float codes (B, {z}, n, h, w) or (B, {z}, h, w); "
                f"got {got} dtype {dtype}"
            )
        if codes.shape[1] != z:
            raise ValueError(
                f"VideoTokenizer.{where}: expected {z} code channels in dim 1; got shape {tuple(codes.shape)}"
            )
        image = codes.ndim == 4
        return (codes.unsqueeze(2) if image else codes), image

    def _check_ids(self, ids: Tensor, where: str) -> tuple[Tensor, bool]:
        if not isinstance(ids, Tensor) or ids.ndim not in (3, 4):
            got = tuple(ids.shape) if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(
                f"VideoTokenizer.{where}: expected int64 token ids (B, n, h, w) or (B, h, w); got {got}"
            )
        if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
            raise ValueError(f"VideoTokenizer.{where}: expected integer token ids; got dtype {ids.dtype}")
        self.quantizer.check_indices(ids)
        image = ids.ndim == 3
        return (ids.unsqueeze(1) if image else ids), image

    def _check_chunking(
        self, max_chunk_frames: int | None, n_latent: int, where: str
    ) -> list[tuple[int, int]]:
        bounds = latent_chunks(n_latent, self.temporal_factor, max_chunk_frames)
        if len(bounds) > 1 and self.config.time_pooled_norm:
            raise ValueError(
                f"VideoTokenizer.{where}: max_chunk_frames needs a causal model; this one has "
                "time_pooled_norm=True (statistics pooled over time), expected max_chunk_frames=None"
            )
        return bounds

    # ------------------------------------------------------------------ the architecture
    def forward(self, video: Tensor) -> TokenizerOutput:
        """Encode, quantize, decode (differentiable, for training): the reconstruction (same shape as
        ``video``), the quantizer's output and the latent."""
        x, image = self._check_video(video, "forward")
        latent = self.encoder(x)
        q = self.quantizer(latent)
        rec = self.decoder(q.codes)
        return TokenizerOutput(rec[:, :, 0] if image else rec, q, latent)

    # ------------------------------------------------------------------ tiling
    def enable_tiling(self, tile: int = 256, overlap: int | None = None) -> None:
        """Encode and decode frames larger than ``tile`` pixels in overlapping tiles of that size
        (``overlap`` pixels, default a quarter of the tile; :mod:`magvit2.models.tiling`), so memory
        depends on the tile, not on the frame. The ``tile``/``overlap`` arguments of the encode and
        decode methods override this setting for one call.

        For ``norm="channel"`` models the tokens equal a whole-frame pass when half the overlap
        covers the encoder's receptive field; for ``norm="group"`` models each tile normalises with
        its own statistics (an approximation). Decoded tiles are blended with linear ramps. A side
        that cannot run in tiles (:meth:`runs_in_tiles`) takes whole frames.
        """
        self.tiling = Tiling(tile, overlap)

    def disable_tiling(self) -> None:
        """Encode and decode whole frames (the default)."""
        self.tiling = None

    def runs_in_tiles(self, side: nn.Module) -> bool:
        """Whether ``side`` (``self.encoder`` or ``self.decoder``) runs in spatial tiles when asked:
        only with a network, and with a block-mean code (if any) whose values depend on each block
        alone (no chroma shared between tokens, no detail patterns). Otherwise it takes whole frames:
        a side with no network needs only a few copies of the frame (:mod:`magvit2.inference.memory`)."""
        code = side.block_mean
        local = code is None or (code.chroma_share == 1 and not code.detail_bits)
        return hasattr(side, "conv_in") and local

    def _tile_plan(
        self, tile: int | None, overlap: int | None, h: int, w: int, side: nn.Module
    ) -> TilePlan | None:
        """Tiles of an ``h`` x ``w`` latent grid (``tile`` given, else :meth:`enable_tiling`'s), or
        None when the frame fits in one tile or ``side`` does not run in tiles."""
        tiling = self.tiling if tile is None else Tiling(tile, overlap)
        if tiling is None or not self.runs_in_tiles(side):
            return None
        plan = tiling.plan(h, w, self.spatial_factor)
        return plan if len(plan.tiles) > 1 else None

    # ------------------------------------------------------------------ inference
    def _video_chunks(self, x: Tensor, bounds: list[tuple[int, int]]) -> Iterator[Tensor]:
        """The video frames ``(B, C, t_i, H, W)`` of each latent range ``[a, b)`` in ``bounds``."""
        t = self.temporal_factor
        for a, b in bounds:
            yield x[:, :, video_frames(a, t) : video_frames(b, t)]

    @torch.inference_mode()
    def encode_latent(
        self,
        video: Tensor,
        max_chunk_frames: int | None = None,
        tile: int | None = None,
        overlap: int | None = None,
    ) -> Tensor:
        """Continuous encoder output before quantization: ``(B, Z, 1+k, h, w)`` (``(B, Z, 1, h, w)``
        for an image). Arguments as in :meth:`encode`."""
        x, _ = self._check_video(video, "encode_latent")
        n_latent = 1 + (x.shape[2] - 1) // self.temporal_factor
        bounds = self._check_chunking(max_chunk_frames, n_latent, "encode")
        s = self.spatial_factor
        plan = self._tile_plan(tile, overlap, x.shape[3] // s, x.shape[4] // s, self.encoder)
        chunked = len(bounds) > 1  # one cache per tile carries each tile's causal state across chunks
        caches = [CausalCache() if chunked else None for _ in (plan.tiles if plan else [None])]
        if plan is None:
            parts = [self.encoder(chunk, caches[0]) for chunk in self._video_chunks(x, bounds)]
        else:
            run = lambda crops, i: self.encoder(crops, caches[i])
            parts = [plan.encode(chunk, run) for chunk in self._video_chunks(x, bounds)]
        return torch.cat(parts, dim=2) if chunked else parts[0]

    @torch.inference_mode()
    def encode(
        self,
        video: Tensor,
        max_chunk_frames: int | None = None,
        tile: int | None = None,
        overlap: int | None = None,
    ) -> Tensor:
        """Token ids, int64 ``(B, 1+k, H/s, W/s)`` for a video ``(B, 3, 1+t*k, H, W)`` in [-1, 1];
        ``(B, 1, H/s, W/s)`` for an image ``(B, 3, H, W)``.

        ``max_chunk_frames``: process at most that many frames at a time (first chunk ``1 + t*m``,
        later chunks ``t*m`` frames, rounded down; see :func:`latent_chunks`); the ids equal a
        whole-video pass and peak memory does not grow with the video's length.
        ``tile``/``overlap``: process the frame in overlapping tiles of that many pixels (default:
        as :meth:`enable_tiling` set, else whole frames).
        """
        return self.quantizer.codes_to_indices(self.encode_latent(video, max_chunk_frames, tile, overlap))

    @torch.inference_mode()
    def encode_codes(
        self,
        video: Tensor,
        max_chunk_frames: int | None = None,
        tile: int | None = None,
        overlap: int | None = None,
    ) -> Tensor:
        """Quantized codes ``(B, Z, 1+k, h, w)`` (for LFQ: +-1) of a video or image."""
        ids = self.encode(video, max_chunk_frames, tile, overlap)
        return self.quantizer.indices_to_codes(ids).to(self.reference_tensor().dtype)

    @torch.inference_mode()
    def decode_codes(
        self,
        codes: Tensor,
        max_chunk_frames: int | None = None,
        tile: int | None = None,
        overlap: int | None = None,
    ) -> Tensor:
        """Codes ``(B, Z, 1+k, h, w)`` -> video ``(B, 3, 1+t*k, h*s, w*s)``; image codes
        ``(B, Z, h, w)`` -> image ``(B, 3, h*s, w*s)``. Arguments as in :meth:`decode`."""
        q, image = self._check_codes(codes, "decode_codes")
        q = q.to(self.reference_tensor().dtype)
        out = self._decode_chunked(lambda a, b: q[:, :, a:b], q.shape, max_chunk_frames, tile, overlap)
        return out[:, :, 0] if image else out

    @torch.inference_mode()
    def decode(
        self,
        ids: Tensor,
        max_chunk_frames: int | None = None,
        tile: int | None = None,
        overlap: int | None = None,
    ) -> Tensor:
        """Token ids ``(B, 1+k, h, w)`` -> video ``(B, 3, 1+t*k, h*s, w*s)`` (float, about [-1, 1]);
        ids ``(B, h, w)`` -> image ``(B, 3, h*s, w*s)``. ``max_chunk_frames`` counts output frames;
        ``tile``/``overlap`` in output pixels (overlapping tiles blended with linear ramps)."""
        ids, image = self._check_ids(ids, "decode")
        dtype = self.reference_tensor().dtype
        get = lambda a, b: self.quantizer.indices_to_codes(ids[:, a:b]).to(dtype)
        b, n, h, w = ids.shape
        out = self._decode_chunked(get, (b, self.z_channels, n, h, w), max_chunk_frames, tile, overlap)
        return out[:, :, 0] if image else out

    def _decode_chunked(self, get_codes, shape, max_chunk_frames, tile, overlap) -> Tensor:
        """Decode latent frames (``get_codes(a, b)``: codes of latent frames ``[a, b)``; ``shape``:
        ``(B, Z, n, h, w)`` of all of them) chunk by chunk and tile by tile into one output video."""
        batch, _, n_latent, h, w = shape
        bounds = self._check_chunking(max_chunk_frames, n_latent, "decode")
        plan = self._tile_plan(tile, overlap, h, w, self.decoder)
        chunked = len(bounds) > 1
        caches = [CausalCache() if chunked else None for _ in (plan.tiles if plan else [None])]

        def decode(a: int, b: int) -> Tensor:
            q = get_codes(a, b)
            if plan is None:
                return self.decoder(q, caches[0])
            return plan.decode(q, lambda crops, i: self.decoder(crops, caches[i]))

        if not chunked:
            return decode(0, n_latent)
        t, s, weight = self.temporal_factor, self.spatial_factor, self.reference_tensor()
        frames = video_frames(n_latent, t)
        out = weight.new_empty(batch, self.config.in_channels, frames, h * s, w * s)
        for a, b in bounds:
            out[:, :, video_frames(a, t) : video_frames(b, t)] = decode(a, b)
        return out
