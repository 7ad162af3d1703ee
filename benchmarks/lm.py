"""Speed and memory of the video LM (:mod:`magvit2.lm`), printed as JSON.

    PYTHONPATH=src python benchmarks/lm.py                  # the demo's size (6M parameters, 8x8 grid)
    PYTHONPATH=src python benchmarks/lm.py --device cuda --dim 1024 --depth 24 --heads 16 --grid 16
    PYTHONPATH=src python benchmarks/lm.py --smoke          # a tiny model, a few seconds (the tests run it)

Measured in one run: training tokens/s (forward, backward and AdamW step on windows of ``--frames``
latent frames); sampling tokens/s continuing a prompt of ``--prompt-frames`` latent frames with and
without the KV cache, and their ratio; peak memory of one training step against the sequence length
(CUDA: the allocator's peak; CPU: the process's resident memory sampled every millisecond, above
what it held before the step).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import torch

from magvit2.lm import LMConfig, SamplingOptions, VideoLM, sample


def rss_bytes() -> int:
    """Resident memory of this process (Linux)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def peak_memory(fn, device: torch.device) -> float:
    """MiB at the peak of ``fn()`` above what was in use before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base, peak, done = rss_bytes(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(0, peak[0] - base) / 2**20


def train_step(model: VideoLM, opt, ids: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    (-model(ids).mean()).backward()
    opt.step()


def timed(fn, repeats: int, device: torch.device) -> float:
    """Seconds per call (after one warm-up call)."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="a tiny model and few repeats (seconds)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--bits", type=int, default=18, help="LFQ bits of the vocabulary (split in two halves)")
    p.add_argument("--grid", type=int, default=8, help="tokens per side of a latent frame")
    p.add_argument("--frames", type=int, default=8, help="latent frames of a training window")
    p.add_argument("--batch", type=int, default=8, help="windows per training step")
    p.add_argument("--prompt-frames", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=64, help="tokens sampled in the speed test")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for training and sampling")
    args = p.parse_args()
    if args.threads or args.smoke:
        torch.set_num_threads(args.threads or 1)
    if args.smoke:
        args.dim, args.depth, args.heads, args.bits, args.grid = 32, 2, 2, 6, 2
        args.frames, args.batch, args.prompt_frames, args.new_tokens, args.repeats = 4, 2, 2, 8, 1
    device = torch.device(args.device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    autocast.__enter__()
    torch.manual_seed(0)
    cfg = LMConfig(vocabulary=2**args.bits, height=args.grid, width=args.grid, max_frames=args.frames,
                   dim=args.dim, depth=args.depth, heads=args.heads)  # fmt: skip
    model = VideoLM(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocabulary, (args.batch, args.frames, args.grid, args.grid), device=device)
    step_s = timed(lambda: train_step(model, opt, ids), args.repeats, device)
    model.eval()
    prompt = ids[:1, : args.prompt_frames]
    per_frame = args.grid**2
    frames = args.prompt_frames + -(-args.new_tokens // per_frame)
    speeds = {}
    for name, cache in (("cache", True), ("no_cache", False)):

        def run(cache=cache):  # noqa: E306
            sample(model, frames, prompt, options=SamplingOptions(top_k=100),
                   generator=torch.Generator(device=device).manual_seed(0), use_cache=cache)  # fmt: skip

        speeds[name] = (frames - args.prompt_frames) * per_frame / timed(run, args.repeats, device)
    model.train()
    memory = {}
    for f in sorted({1, max(1, args.frames // 4), max(1, args.frames // 2), args.frames}):
        window = ids[:, :f]
        memory[str(f * per_frame)] = round(peak_memory(lambda w=window: train_step(model, opt, w), device), 1)
    result = {
        "device": str(device),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": {
            "dim": args.dim,
            "depth": args.depth,
            "heads": args.heads,
            "vocabulary_bits": args.bits,
            "split_tokens": cfg.complete().split_tokens,
            "grid": args.grid,
        },  # fmt: skip
        "train_window": {
            "latent_frames": args.frames,
            "tokens": args.frames * per_frame,
            "batch": args.batch,
        },
        "train_tokens_per_s": args.batch * args.frames * per_frame / step_s,
        "sample_prompt_tokens": args.prompt_frames * per_frame,
        "sample_tokens_per_s": speeds,
        "kv_cache_speedup": speeds["cache"] / speeds["no_cache"],
        "peak_memory_kind": "allocated MiB" if device.type == "cuda" else "resident MiB above the start",
        "peak_memory": memory,
        "precision": "bf16 autocast" if args.bf16 else "fp32",
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
