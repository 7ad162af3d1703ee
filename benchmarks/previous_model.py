"""The previous built-in model, loadable from a folder for comparison (not part of the package).

That model encoded with four feedback stages: the encoder's latent is quantized and decoded, and a
feedback network (an encoder of the same shape whose input is the video and that reconstruction, 6
channels) adds a correction to the latent; each stage has its own network and decodes the latent
corrected by the stages before it. Decoding is the plain decoder. Some weights of the file are stored in
8 bits (``NAME`` int8 and ``NAME.int8_scale``, one float32 scale per output channel).

Extract it from the repository's history into a folder, then load it::

    mkdir -p previous
    git show b623235:src/magvit2/pretrained/default/model.safetensors > previous/model.safetensors
    git show b623235:src/magvit2/pretrained/default/config.json > previous/config.json

    from previous_model import PreviousModel        # with benchmarks/ on sys.path
    model = PreviousModel.from_folder("previous")
    ids = model.encode(video)                       # (B, 3, 1+4k, H, W) in [-1, 1] -> (B, 1+k, H/8, W/8)
    rec = model.decode(ids)

``benchmarks/throughput.py --previous previous`` times it beside the built-in model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from magvit2.models import Decoder, Encoder, TokenizerConfig, latent_chunks, video_frames
from magvit2.modules import CausalCache
from magvit2.quantizers import build_quantizer

SCALE_SUFFIX = ".int8_scale"
FEEDBACK_KEYS = ("feedback", "feedback_stages", "feedback_last_repeats")


def dequantize(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Each int8 tensor with a ``.int8_scale`` beside it -> float32 ``q * scale`` (per output channel)."""
    out = {k: v for k, v in state.items() if not k.endswith(SCALE_SUFFIX)}
    for key, scale in state.items():
        if key.endswith(SCALE_SUFFIX):
            name = key[: -len(SCALE_SUFFIX)]
            q = state[name]
            out[name] = q.float() * scale.float().view(-1, *[1] * (q.ndim - 1))
    return out


def quantize(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Weights (2 or more dims) under ``prefix`` -> int8 with a per-output-channel scale (as stored)."""
    out = {}
    for name, w in state.items():
        if not (name.startswith(prefix + ".") and w.is_floating_point() and w.ndim >= 2):
            out[name] = w
            continue
        scale = w.flatten(1).abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny) / 127
        out[name] = torch.round(w / scale.view(-1, *[1] * (w.ndim - 1))).clamp(-127, 127).to(torch.int8)
        out[name + SCALE_SUFFIX] = scale
    return out


class PreviousModel(nn.Module):
    """Encoder, feedback networks (``feedback``, ``more_feedback.{i}``; weight names as in the file),
    quantizer and decoder of a feedback model."""

    def __init__(self, config: TokenizerConfig, stages: int, last_repeats: int = 1) -> None:
        super().__init__()
        self.config, self.last_repeats = config, last_repeats
        fb_config = replace(config, in_channels=2 * config.in_channels)
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.quantizer = build_quantizer(config.quantizer)
        self.feedback = Encoder(fb_config)
        self.more_feedback = nn.ModuleList(Encoder(fb_config) for _ in range(stages - 1))

    @classmethod
    def from_folder(cls, folder: str | Path) -> PreviousModel:
        """Load ``config.json`` + ``model.safetensors`` (int8 tensors dequantized), in eval mode."""
        folder = Path(folder)
        meta = json.loads((folder / "config.json").read_text())
        meta = {k: v for k, v in meta.items() if k not in ("format_version", "model")}
        if not meta.get("feedback"):
            raise ValueError(f"{folder}/config.json: not a feedback model; load it with VideoTokenizer")
        stages, repeats = meta.get("feedback_stages", 1), meta.get("feedback_last_repeats", 1)
        config = TokenizerConfig.from_dict({k: v for k, v in meta.items() if k not in FEEDBACK_KEYS})
        model = cls(config, stages, repeats)
        model.load_state_dict(dequantize(load_file(str(folder / "model.safetensors"))))
        return model.eval()

    def save_folder(self, folder: str | Path, int8: str | None = "more_feedback") -> Path:
        """Write the folder :meth:`from_folder` reads (weights under ``int8`` stored in 8 bits)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stages = {"feedback_stages": 1 + len(self.more_feedback), "feedback_last_repeats": self.last_repeats}
        meta = {
            "format_version": 1,
            "model": "VideoTokenizer",
            **self.config.to_dict(),
            "feedback": True,
            **stages,
        }
        (folder / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(quantize(state, int8) if int8 else state, str(folder / "model.safetensors"))
        return folder

    def latent(self, x: Tensor, caches: list[CausalCache] | None = None) -> Tensor:
        """The feedback loop on one chunk ``(B, 3, T, H, W)``: the encoder's latent, then each stage
        decodes the current latent's tokens and adds its network's correction. ``caches``: one per
        stage (the decoder runs once per stage, each run keeps its own causal state)."""
        nets = [self.feedback, *self.more_feedback]
        nets += [nets[-1]] * (self.last_repeats - 1)
        caches = caches or [None] * (len(nets) + 1)
        u = self.encoder(x, caches[0])
        for stage, net in enumerate(nets):
            codes = self.quantizer.indices_to_codes(self.quantizer.codes_to_indices(u)).to(u.dtype)
            rec = self.decoder(codes, caches[stage + 1])
            u = u + net(torch.cat([x, rec], dim=1), caches[stage + 1])
        return u

    @torch.inference_mode()
    def encode(self, video: Tensor, max_chunk_frames: int | None = None) -> Tensor:
        """Token ids ``(B, 1+k, h, w)`` of a video ``(B, 3, 1+t*k, H, W)`` in [-1, 1]."""
        t = self.config.temporal_factor
        bounds = latent_chunks(1 + (video.shape[2] - 1) // t, t, max_chunk_frames)
        stages = len(self.more_feedback) + self.last_repeats
        caches = [CausalCache() for _ in range(stages + 1)] if len(bounds) > 1 else None
        parts = [self.latent(video[:, :, video_frames(a, t) : video_frames(b, t)], caches) for a, b in bounds]
        return self.quantizer.codes_to_indices(torch.cat(parts, dim=2))

    @torch.inference_mode()
    def decode(self, ids: Tensor) -> Tensor:
        """Token ids ``(B, n, h, w)`` -> video ``(B, 3, 1+t*(n-1), H, W)``."""
        return self.decoder(self.quantizer.indices_to_codes(ids).to(self.decoder.conv_in.weight.dtype))
