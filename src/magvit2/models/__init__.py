"""The video tokenizer: config, presets, encoder/decoder networks and the ``VideoTokenizer`` API."""

from magvit2.models.config import TokenizerConfig
from magvit2.models.networks import Decoder, Encoder
from magvit2.models.presets import PRESETS, get_preset, preset_names
from magvit2.models.tokenizer import TokenizerOutput, VideoTokenizer, latent_chunks

__all__ = [
    "PRESETS",
    "Decoder",
    "Encoder",
    "TokenizerConfig",
    "TokenizerOutput",
    "VideoTokenizer",
    "get_preset",
    "latent_chunks",
    "preset_names",
]
