"""The video tokenizer: config, presets, encoder/decoder networks and the ``VideoTokenizer`` API."""

from magvit2.models.config import TokenizerConfig
from magvit2.models.networks import Decoder, Encoder
from magvit2.models.presets import PRESETS, get_preset, preset_names
from magvit2.models.tokenizer import (
    TokenizerOutput,
    VideoTokenizer,
    chunk_latent_frames,
    latent_chunks,
    video_frames,
)

__all__ = [
    "PRESETS",
    "Decoder",
    "Encoder",
    "TokenizerConfig",
    "TokenizerOutput",
    "VideoTokenizer",
    "chunk_latent_frames",
    "get_preset",
    "latent_chunks",
    "preset_names",
    "video_frames",
]
