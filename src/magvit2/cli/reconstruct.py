"""``magvit2 reconstruct``: tokenize and detokenize a clip chunk by chunk; print PSNR, SSIM, bits per
pixel and the token count; optionally write the reconstruction and a side-by-side comparison."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from pathlib import Path

import numpy as np

from magvit2.cli.common import (
    add_model_args,
    add_output_args,
    add_refine_args,
    at_least,
    atomic_output,
    make_runner,
    one_line,
    progress,
)
from magvit2.cli.detokenize import exact_size_writer, output_kind
from magvit2.config_io import resolve_path
from magvit2.data.video_io import VideoWriter, iter_frames, probe, write_png
from magvit2.evaluation import bits_per_pixel
from magvit2.inference.memory import FrameTooLargeError
from magvit2.inference.metrics import ReconstructionMetrics

EXAMPLE = """examples:
  magvit2 reconstruct clip.mp4 -o rec.mp4 --model my_tokenizer/ --max-frames 33
  magvit2 reconstruct clip.mp4 --json --model my_tokenizer/
  magvit2 reconstruct photo.png -o rec.png --compare cmp.png --model my_tokenizer/
  magvit2 reconstruct big.mp4 --tile 256 --compare tiled.png --model my_tokenizer/   (tiled vs source)
  magvit2 reconstruct clip.mp4 -o rec.mp4 --refine-steps 30   (searched tokens: slower, closer)"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reconstruct`` sub-command."""
    p = sub.add_parser(
        "reconstruct",
        help="tokenize + detokenize a clip; print PSNR, SSIM, bits per pixel, tokens",
        description="Round-trip a video or image through the tokenizer, streaming chunk by chunk.\n\n"
        + EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="a video or image file")
    p.add_argument("-o", "--output", default=None, metavar="VIDEO", help="write the reconstruction here")
    p.add_argument("--max-frames", type=at_least(1), default=None, metavar="N", help="use at most N frames")
    p.add_argument("--json", action="store_true", help="print JSON (keys psnr, ssim, bpp, tokens, ...)")
    p.add_argument(
        "--compare",
        default=None,
        metavar="OUT.png|OUT.mp4",
        help="write source | reconstruction | error x4 side by side (.png: one frame, video: all)",
    )
    p.add_argument(
        "--compare-frame", type=at_least(0), default=0, metavar="K", help="frame of a .png --compare (0)"
    )
    p.add_argument(
        "--crf", type=at_least(0, 51), default=18, help="H.264 quality of video outputs (0 = best .. 51, 18)"
    )
    add_model_args(p)
    add_refine_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def side_by_side(src: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """uint8 ``(..., H, W, 3)`` source and reconstruction -> ``(..., H, 3W, 3)``: source,
    reconstruction and their absolute difference amplified 4x."""
    err = np.clip(np.abs(src.astype(np.int16) - rec.astype(np.int16)) * 4, 0, 255).astype(np.uint8)
    return np.concatenate([src, rec, err], axis=-2)


def _check_outputs(args: argparse.Namespace, path: Path, n_frames: int) -> list[Path]:
    """The output paths (``-o``, ``--compare``), refused before any work when they cannot be written as
    asked: existing without --overwrite, a folder, a .png for several frames, a frame past the end."""
    outs = [Path(p) for p in (args.output, args.compare) if p is not None]
    for out in outs:
        if output_kind(out) == "frames":
            raise ValueError(f"{out}: reconstruct writes a video file or a .png, not a folder")
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out}: output exists (pass --overwrite to replace it)")
    if args.output and output_kind(Path(args.output)) == "png" and n_frames != 1:
        raise ValueError(f"{args.output}: a .png holds one frame, this clip has {n_frames}; use .mp4")
    if args.compare and output_kind(Path(args.compare)) == "png" and 0 < n_frames <= args.compare_frame:
        k = args.compare_frame
        raise ValueError(f"--compare-frame {k}: {path} has {n_frames} frames (0..{n_frames - 1})")
    return outs


def _stream(args, runner, path: Path, fps, outs: list[Path], n_frames: int, metrics, ids: list) -> tuple:
    """Reconstruct ``path`` chunk by chunk into ``outs`` (videos written as they come, a .png from its
    frame), updating ``metrics`` and collecting the token chunks in ``ids`` -> the frame (height, width)."""
    h = w = None
    pngs: dict[Path, np.ndarray] = {}
    with contextlib.ExitStack() as stack:
        tmps = {out: stack.enter_context(atomic_output(out, args.overwrite)) for out in outs}
        writers: dict[Path, VideoWriter] = {}
        bar = stack.enter_context(progress(n_frames, "frame", path.name, args.quiet))
        for src, rec in runner.reconstruct(iter_frames(path, max_frames=args.max_frames), sink=ids):
            h, w = src.shape[1:3]
            first = metrics.frames
            metrics.update(src, rec)
            for out in outs:
                frames = rec if out == Path(args.output or "") else side_by_side(src, rec)
                if output_kind(out) == "png":
                    k = args.compare_frame if out == Path(args.compare or "") else 0
                    if first <= k < metrics.frames:
                        pngs[out] = frames[k - first]
                    continue
                if out not in writers:
                    writer = exact_size_writer(tmps[out], fps, frames.shape[1], frames.shape[2], args.crf)
                    writers[out] = stack.enter_context(writer)
                writers[out].write_frames(frames)
            bar.update(len(src))
        for out in outs:
            if output_kind(out) == "png":
                if out not in pngs:
                    k = args.compare_frame
                    raise ValueError(f"{out}: --compare-frame {k} is past the clip's last frame")
                write_png(tmps[out], pngs[out])
        for writer in writers.values():
            writer.close()
    return h, w


def run(args: argparse.Namespace) -> int:
    """Stream the clip through encoder and decoder, writing outputs and accumulating metrics."""
    path = Path(resolve_path(args.input))
    info = probe(path)
    n_frames = min(info.num_frames, args.max_frames or info.num_frames)
    outs = _check_outputs(args, path, n_frames)
    runner = make_runner(args)
    metrics, ids = ReconstructionMetrics(), []
    try:
        h, w = _stream(args, runner, path, info.fps, outs, n_frames, metrics, ids)
    except FrameTooLargeError as err:
        raise FrameTooLargeError(one_line(path, err)) from err
    tokens, bits = sum(int(t.numel()) for t in ids), math.log2(runner.vocabulary)
    result = {
        "psnr": round(metrics.psnr, 4),
        "ssim": None if math.isnan(metrics.ssim) else round(metrics.ssim, 6),  # None: frames under 11 px
        "bpp": bits_per_pixel(tokens, runner.vocabulary, metrics.frames, h, w),
        "tokens": tokens,
        "frames": metrics.frames,
        "height": h,
        "width": w,
        "token_grid": [sum(t.shape[0] for t in ids), *ids[0].shape[1:]],
        "bits_per_token": bits,
    }
    if args.json:
        print(json.dumps(result))
    else:
        ssim = "n/a" if result["ssim"] is None else format(result["ssim"], ".4f")
        print(
            f"{path.name}: {metrics.frames} frames {w}x{h}  PSNR {result['psnr']:.2f} dB  SSIM {ssim}  "
            f"{result['bpp']:.4f} bits/pixel  {tokens} tokens "
            f"({'x'.join(map(str, result['token_grid']))}, {bits:g} bits each)"
        )
    return 0
