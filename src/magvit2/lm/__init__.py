"""Language models over video tokens: a decoder-only transformer (:class:`VideoLM`) with factorised
sub-token embeddings and heads, 3D positions, a KV cache, sampling with temperature / top-k / top-p /
classifier-free guidance, Loong's progressive training, loss re-weighting and sliding-window
generation; and a bidirectional masked model (:class:`MaskedVideoLM`: MaskGIT decoding in N steps, COMMIT
conditional tasks); trained on the Parquet shards of ``magvit2 tokenize`` (``magvit2 lm train``)."""

from magvit2.lm.config import LMConfig, LMTrainConfig, load_lm_train_config
from magvit2.lm.masked import DecodeOptions, MaskedVideoLM, decode
from magvit2.lm.sampling import SamplingOptions, sample, sample_long
from magvit2.lm.transformer import KVCache, VideoLM

__all__ = [
    "DecodeOptions",
    "KVCache",
    "LMConfig",
    "LMTrainConfig",
    "MaskedVideoLM",
    "SamplingOptions",
    "VideoLM",
    "decode",
    "load_lm_train_config",
    "sample",
    "sample_long",
]
