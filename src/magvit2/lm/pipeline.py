"""An LM folder with its tokenizer: pixels in (prompt clips), tokens through the LM, pixels out; the
pieces ``magvit2 lm generate`` and ``magvit2 lm eval`` are made of."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from magvit2.data.media import resized_size
from magvit2.data.video_io import probe, read_video, to_tensor
from magvit2.lm.sampling import SamplingOptions, sample, sample_long
from magvit2.lm.trainer import UNIGRAM_NAME, load_tokenizer
from magvit2.lm.transformer import VideoLM
from magvit2.models import VideoTokenizer, video_frames

#: frames per causal chunk when the tokenizer encodes or decodes (memory flat in the clip's length)
CHUNK_FRAMES = 17


@dataclass
class LoadedLM:
    """An LM, the facts its folder records, and the tokenizer whose tokens it models."""

    model: VideoLM
    meta: dict
    tokenizer: VideoTokenizer
    directory: Path

    @property
    def t(self) -> int:
        return self.tokenizer.temporal_factor

    @property
    def pixel_size(self) -> tuple[int, int]:
        """(H, W) in pixels of the LM's token grid."""
        s, c = self.tokenizer.spatial_factor, self.model.config
        return c.height * s, c.width * s

    def encode(self, video: Tensor) -> Tensor:
        """Video ``(B, 3, 1 + t*(n-1), H, W)`` in [-1, 1] -> ids ``(B, n, h, w)``."""
        device = self.tokenizer.reference_tensor().device
        return self.tokenizer.encode(video.to(device), max_chunk_frames=CHUNK_FRAMES)

    def decode(self, ids: Tensor) -> Tensor:
        """ids ``(B, n, h, w)`` -> video ``(B, 3, 1 + t*(n-1), H, W)`` in [-1, 1] (clamped)."""
        device = self.tokenizer.reference_tensor().device
        return self.tokenizer.decode(ids.to(device), max_chunk_frames=CHUNK_FRAMES).float().clamp(-1, 1)

    def unigram_counts(self) -> Tensor:
        """How often each id occurred in the training tokens ``(vocabulary,)``."""
        from safetensors.torch import load_file

        path = self.directory / UNIGRAM_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (written by magvit2 lm train with the final weights)")
        sparse = load_file(str(path))
        counts = torch.zeros(self.model.config.vocabulary, dtype=torch.int64)
        counts[sparse["ids"]] = sparse["counts"]
        return counts

    def class_id(self, name: str | None) -> Tensor | None:
        """``--class``: a class name or index -> ``(1,)`` id, None for unconditional."""
        if name is None:
            return None
        names, n = self.meta.get("class_names", []), self.model.config.num_classes
        if not n:
            raise ValueError(f"{self.directory}: an unconditional LM; --class needs a class-conditional one")
        index = names.index(name) if name in names else int(name) if name.isdigit() else -1
        if not 0 <= index < n:
            raise ValueError(f"--class {name}: expected a class name {names} or an index 0..{n - 1}")
        return torch.tensor([index])


def load_lm(directory: str | Path, device: str = "cpu", tokenizer: str | None = None) -> LoadedLM:
    """An LM folder and its tokenizer (the one it records, or ``tokenizer``); a tokenizer whose
    fingerprint differs from the recorded one is refused."""
    directory = Path(directory)
    model, meta = VideoLM.from_pretrained(directory, device)
    name = tokenizer or meta.get("tokenizer", "default")
    tok, fingerprint = load_tokenizer(name, device)
    if fingerprint != meta.get("tokenizer_fingerprint"):
        raise ValueError(
            f"{directory}: this LM was trained on the tokens of tokenizer {meta.get('tokenizer')} "
            f"(fingerprint {meta.get('tokenizer_fingerprint')}); {name} has fingerprint {fingerprint} "
            "(--model)"
        )
    return LoadedLM(model, meta, tok, directory)


def read_clip(path: str | Path, frames: int | None, height: int, width: int, start: int = 0) -> np.ndarray:
    """Frames of a video, scaled to cover ``height x width`` and centre-cropped -> uint8 ``(T, H, W, 3)``."""
    info = probe(path)
    size = resized_size(info.height, info.width, (height, width), "center_crop")
    video = read_video(path, start=start, max_frames=frames, size=size)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return video[:, top : top + height, left : left + width]


def whole_latent_frames(frames: int, t: int) -> int:
    """Video frames -> the latent frames that hold them whole (``1 + (F - 1) // t``)."""
    return 1 + (frames - 1) // t


def prompt_ids(lm: LoadedLM, path: str | Path, prompt_frames: int) -> tuple[Tensor, np.ndarray]:
    """The first ``prompt_frames`` frames of a clip (rounded down to whole latent frames) ->
    (ids ``(1, P, h, w)``, the frames used, uint8)."""
    n = whole_latent_frames(prompt_frames, lm.t)
    frames = read_clip(path, video_frames(n, lm.t), *lm.pixel_size)
    if len(frames) < video_frames(n, lm.t):
        raise ValueError(f"{path}: {len(frames)} frames, --prompt-frames asks for {prompt_frames}")
    return lm.encode(to_tensor(frames)[None]), frames


def generate(
    lm: LoadedLM,
    frames: int,
    prompt: Tensor | None = None,
    classes: Tensor | None = None,
    options: SamplingOptions | None = None,
    seed: int = 0,
    window: int | None = None,
    context: int | None = None,
    steps: int = 12,
) -> tuple[Tensor, Tensor]:
    """``frames`` latent frames, the prompt's first -> (video ``(1, 3, F, H, W)``, ids ``(1, frames, h, w)``).

    Up to ``window`` latent frames (default: the longest trained window) in one pass; longer videos
    slide the window, re-encoding the last ``context`` (default half the window) latent frames.
    A masked LM decodes the frames after the prompt in ``steps`` parallel steps instead
    (:func:`magvit2.lm.masked.generate_prompted`).
    """
    options = options or SamplingOptions()
    if lm.model.config.kind == "masked":
        from magvit2.lm.masked import generate_prompted

        return generate_prompted(lm, frames, prompt, classes, options, seed, steps)
    generator = torch.Generator(device=next(lm.model.parameters()).device).manual_seed(seed)
    window = window or lm.model.config.max_frames
    device = next(lm.model.parameters()).device
    classes = classes.to(device) if classes is not None else None
    if frames <= window:
        ids = sample(lm.model, frames, prompt, classes, options, generator)
        return lm.decode(ids), ids
    return sample_long(
        lm.model, frames, window, context or max(1, window // 2), lm.encode, lm.decode, lm.t,
        prompt, classes, options, generator,
    )  # fmt: skip
