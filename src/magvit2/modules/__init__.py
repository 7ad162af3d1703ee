"""Building blocks of the causal video tokenizer: causal 3D convolution with a chunk cache,
per-frame and adaptive GroupNorm, residual blocks, downsampling and depth-to-space upsampling."""

from magvit2.modules.blocks import ResBlock, Upsampler, depth_to_space_3d, downsample
from magvit2.modules.causal import CausalCache, CausalConv3d, swish
from magvit2.modules.norm import AdaptiveGroupNorm, GroupNorm, group_norm_video

__all__ = [
    "AdaptiveGroupNorm",
    "CausalCache",
    "CausalConv3d",
    "GroupNorm",
    "ResBlock",
    "Upsampler",
    "depth_to_space_3d",
    "downsample",
    "group_norm_video",
    "swish",
]
