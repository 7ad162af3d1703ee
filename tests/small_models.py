"""Small tokenizers for tests that need real weights quickly (imported by test modules; pytest puts
this folder on ``sys.path``)."""

from __future__ import annotations

import torch

from magvit2.models import TokenizerConfig, VideoTokenizer


def small_config(**kw) -> TokenizerConfig:
    """4x temporal, 4x spatial, 6-bit LFQ, 8-16 channels, one block per level; ``kw`` overrides."""
    args = dict(quantizer={"kind": "lfq", "bits": 6}, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1,
                temporal_downsample=(True, True), norm_groups=4)  # fmt: skip
    args.update(kw)
    return TokenizerConfig(**args)


def perturbed(model: VideoTokenizer, seed: int = 0, scale: float = 0.1) -> VideoTokenizer:
    """``model`` in eval mode with every parameter (norm affines included) moved off its initial value."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model.eval()
