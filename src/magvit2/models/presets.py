"""Named tokenizer configurations (plain data)."""

from __future__ import annotations

import copy
from typing import Any

from magvit2.models.config import TokenizerConfig

#: Preset name -> keyword arguments of :class:`TokenizerConfig` (``quantizer`` as a dict).
PRESETS: dict[str, dict[str, Any]] = {
    # Small enough to train on 2 CPU cores (4,615,109 parameters; 22.6 GFLOP per 17x64x64 clip
    # forward); 4x temporal, 8x spatial, LFQ 18 bits. Few channels at full resolution, where every
    # 3x3x3 conv (and the decoder's last depth-to-space conv) is expensive; the parameters sit at 1/4
    # and 1/8 resolution where they are cheap; the decoder is heavier than the encoder.
    "tiny": {
        "quantizer": {"kind": "lfq", "bits": 18},
        "ch": 16,
        "ch_mult": [1, 2, 4, 4],
        "num_res_blocks": [1, 1, 1, 2],
        "num_mid_blocks": 2,
        "decoder_num_res_blocks": [1, 1, 2, 2],
        "temporal_downsample": [False, True, True],
        "norm_groups": 8,
    },
    # The built-in default model's architecture (9,161,013 parameters): 4x temporal, 8x spatial, LFQ 18
    # bits, channel LayerNorm (no statistic spans a frame: flat colours keep their level, tiles match
    # whole frames). 24 channels at full resolution, 96 at 1/8; the decoder has one more block per
    # level than the encoder, which keeps encoding cheap.
    "small": {
        "quantizer": {"kind": "lfq", "bits": 18},
        "ch": 24,
        "ch_mult": [1, 2, 3, 4],
        "num_res_blocks": [1, 1, 2, 2],
        "num_mid_blocks": 2,
        "decoder_num_res_blocks": [1, 2, 2, 2],
        "temporal_downsample": [False, True, True],
        "norm": "channel",
    },
    # The MAGVIT-v2 video tokenizer of the paper's figure, exactly as Open-MAGVIT2's video model
    # (ch 128, ch_mult 1,2,2,4, 4 res blocks, LFQ 18 bits): 370,547,349 parameters.
    "magvit2-video": {
        "quantizer": {"kind": "lfq", "bits": 18},
        "ch": 128,
        "ch_mult": [1, 2, 2, 4],
        "num_res_blocks": 4,
        "temporal_downsample": [False, True, True],
        "norm_groups": 32,
    },
    # Open-MAGVIT2's published video tokenizer as `magvit2 convert open-magvit2` writes it: the layout
    # above, token ids numbered as Open-MAGVIT2's (channel 0 = least significant bit). Set
    # time_pooled_norm=True to reproduce its time-pooled GroupNorm exactly (then not causal).
    "open-magvit2-video-128": {
        "quantizer": {"kind": "lfq", "bits": 18, "options": {"bit_order": "lsb"}},
        "ch": 128,
        "ch_mult": [1, 2, 2, 4],
        "num_res_blocks": 4,
        "temporal_downsample": [False, True, True],
        "norm_groups": 32,
        "time_pooled_norm": False,
    },
    # Loong's tokenizer: causal 3D CNN with clustering VQ, 65x128x128 -> 17x16x16 (8x spatial, 4x
    # temporal), about 246M parameters. Its exact layout and codebook are not published: we keep the
    # MAGVIT-v2 layout with 2 residual blocks per encoder level, 2 mid blocks and a heavier decoder
    # (2, 3, 3, 3), and 65,536 codes of dimension 8: 246,487,691 network parameters + 524,288
    # codebook entries = 247,011,979 (+0.4%).
    "loong-246m": {
        "quantizer": {"kind": "cvq", "codebook_size": 65536, "dim": 8},
        "ch": 128,
        "ch_mult": [1, 2, 2, 4],
        "num_res_blocks": [2, 2, 2, 2],
        "num_mid_blocks": 2,
        "decoder_num_res_blocks": [2, 3, 3, 3],
        "temporal_downsample": [False, True, True],
        "norm_groups": 32,
    },
}


def preset_names() -> list[str]:
    """Names accepted by :func:`get_preset`."""
    return sorted(PRESETS)


def get_preset(name: str) -> TokenizerConfig:
    """A fresh :class:`TokenizerConfig` for preset ``name``."""
    if name not in PRESETS:
        raise ValueError(f"unknown tokenizer preset {name!r}; expected one of {preset_names()}")
    return TokenizerConfig.from_dict(copy.deepcopy(PRESETS[name]))
