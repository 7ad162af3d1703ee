"""``magvit2 eval``: reconstruction quality, compression and codebook use over files and folders."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from magvit2.cli.common import (
    add_model_args,
    add_output_args,
    atomic_output,
    discover_inputs,
    make_runner,
    one_line,
)
from magvit2.data.video_io import VideoReadError, iter_frames
from magvit2.evaluation import CodebookStats
from magvit2.inference.metrics import ReconstructionMetrics

EXAMPLES = """examples:
  magvit2 eval --model runs/mine/final clips/ held_out.mp4 --json-out eval.json
  magvit2 eval --model converted/ video.mp4 --max-frames 33 --lpips vgg16_lpips.safetensors
"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` sub-command."""
    p = sub.add_parser(
        "eval",
        help="PSNR, SSIM, (LPIPS), bits per pixel and codebook use over videos/images",
        description="Reconstruct every input with the model and report per-file and mean metrics.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_FOLDER", help="files, folders or globs")
    p.add_argument("--max-frames", type=int, default=None, help="use at most N frames of each clip")
    p.add_argument("--json-out", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--lpips", metavar="FILE", help="LPIPS/VGG16 weights (torchvision or lpips format)")
    add_model_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def _lpips_model(path: str | None):
    if path is None:
        return None
    from magvit2.losses.perceptual import LPIPS

    return LPIPS.from_file(path).eval()


def _lpips(model, src: np.ndarray, rec: np.ndarray) -> float:
    """Sum over frames of LPIPS between uint8 frames ``(T, H, W, 3)``."""
    to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        return float(model(to(src), to(rec)).sum())


def evaluate_file(runner, path: Path, max_frames: int | None, stats: CodebookStats, lpips=None) -> dict:
    """Reconstruct one file; its metrics (mean per-frame PSNR/SSIM/LPIPS, token bpp, token count)."""
    metrics, ids, lpips_sum = ReconstructionMetrics(), [], 0.0
    h = w = 0
    for src, rec in runner.reconstruct(iter_frames(path, max_frames=max_frames), sink=ids):
        h, w = src.shape[1:3]
        metrics.update(src, rec)
        if lpips is not None:
            lpips_sum += _lpips(lpips, src, rec)
    tokens = sum(int(t.numel()) for t in ids)
    for t in ids:
        stats.update(t)
    row = {
        "file": str(path),
        "frames": metrics.frames,
        "psnr": metrics.psnr,
        "ssim": metrics.ssim,
        "bpp": tokens * math.log2(runner.vocabulary) / (metrics.frames * h * w),
        "tokens": tokens,
    }
    if lpips is not None:
        row["lpips"] = lpips_sum / metrics.frames
    return row


def run(args: argparse.Namespace) -> int:
    """Evaluate every input; print a table (and write JSON); exit 1 if any file failed."""
    files = [f for f, _ in discover_inputs(args.inputs)]
    runner = make_runner(args)
    lpips = _lpips_model(args.lpips)
    stats = CodebookStats(runner.vocabulary)
    rows, failed = [], []
    for path in files:
        try:
            rows.append(evaluate_file(runner, path, args.max_frames, stats, lpips))
        except (VideoReadError, ValueError) as err:
            failed.append(str(path))
            print(one_line(path, err), file=sys.stderr)
    if not rows:
        raise ValueError("no input could be evaluated")
    keys = [k for k in ("psnr", "ssim", "lpips", "bpp") if k in rows[0]]
    frames = sum(r["frames"] for r in rows)
    mean = {k: sum(r[k] * r["frames"] for r in rows) / frames for k in keys}
    summary = {
        "files": rows,
        "mean": mean,
        "frames": frames,
        "codebook_usage": stats.usage(),
        "perplexity": stats.perplexity(),
        "vocabulary": runner.vocabulary,
        "failed": failed,
    }
    width = max(len(Path(r["file"]).name) for r in rows)
    print(f"{'file':<{width}}  frames  " + "  ".join(f"{k:>8}" for k in keys))
    for r in rows + [{"file": "mean (per frame)", "frames": frames, **mean}]:
        values = "  ".join(f"{r[k]:>8.4f}" for k in keys)
        print(f"{Path(r['file']).name:<{width}}  {r['frames']:>6}  {values}")
    usage, ppl = summary["codebook_usage"], summary["perplexity"]
    print(f"codebook usage {usage:.4%} of {runner.vocabulary}, perplexity {ppl:.1f}")
    if args.json_out:
        with atomic_output(Path(args.json_out), args.overwrite) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    return 1 if failed else 0
