"""magvit2.evaluation: reconstruction metrics, Fréchet distances (FVD, rFID), codebook statistics and
classical codec baselines (H.264 / H.265 / AV1 through PyAV) with rate-distortion plots."""

from magvit2.evaluation.codebook import (
    CodebookStats,
    bits_per_pixel,
    codebook_usage,
    compressed_bits_per_pixel,
    perplexity,
    token_bits_per_pixel,
)
from magvit2.evaluation.codecs import (
    EncodedClip,
    available_codecs,
    clip_quality,
    encode_at_bpp,
    encode_clip,
    plot_rate_distortion,
    rate_distortion,
    read_clip,
)
from magvit2.evaluation.frechet import FeatureStats, frechet_distance, frechet_distance_from_features
from magvit2.evaluation.fvd import (
    FrechetInceptionDistance,
    FrechetVideoDistance,
    load_torchscript_detector,
)
from magvit2.evaluation.metrics import ms_ssim, psnr, ssim

__all__ = [
    "CodebookStats",
    "EncodedClip",
    "FeatureStats",
    "FrechetInceptionDistance",
    "FrechetVideoDistance",
    "available_codecs",
    "bits_per_pixel",
    "clip_quality",
    "codebook_usage",
    "compressed_bits_per_pixel",
    "encode_at_bpp",
    "encode_clip",
    "frechet_distance",
    "frechet_distance_from_features",
    "load_torchscript_detector",
    "ms_ssim",
    "perplexity",
    "plot_rate_distortion",
    "psnr",
    "rate_distortion",
    "read_clip",
    "ssim",
    "token_bits_per_pixel",
]
