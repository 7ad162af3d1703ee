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
    add_refine_args,
    at_least,
    atomic_output,
    check_output,
    discover_inputs,
    make_runner,
    one_line,
    progress,
)
from magvit2.data.video_io import VideoReadError, iter_frames, probe
from magvit2.evaluation import CodebookStats, bits_per_pixel
from magvit2.inference.metrics import ReconstructionMetrics

EXAMPLES = """examples:
  magvit2 eval --model runs/mine/final clips/ held_out.mp4 --json-out eval.json
  magvit2 eval --model converted/ video.mp4 --max-frames 33 --lpips vgg16_lpips.safetensors
  magvit2 eval clips/ --fvd i3d_torchscript.pt --fvd-frames 16 --rfid inception-2015-12-05.pt
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
    p.add_argument("--max-frames", type=at_least(1), default=None, help="use at most N frames of each clip")
    p.add_argument("--json-out", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--lpips", metavar="FILE", help="LPIPS/VGG16 weights (torchvision or lpips format)")
    p.add_argument("--fvd", metavar="FILE", help="I3D TorchScript file (i3d_torchscript.pt): report FVD")
    p.add_argument(
        "--fvd-frames",
        type=int,
        default=16,
        metavar="N",
        help="FVD clip length: each video is cut into non-overlapping N-frame clips (default 16)",
    )
    p.add_argument(
        "--rfid", metavar="FILE", help="Inception TorchScript file (inception-2015-12-05.pt): report rFID"
    )
    add_model_args(p)
    add_refine_args(p)
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


class DetectorScores:
    """FVD over fixed-length clips and rFID over frames, fed with uint8 source/reconstruction chunks.

    ``update(src, rec)`` takes frames ``(T, H, W, 3)`` uint8 of one video in order; FVD cuts each video
    into non-overlapping ``clip_frames``-frame clips (a shorter tail is dropped), rFID uses every frame.
    """

    def __init__(self, fvd_path: str | None, rfid_path: str | None, clip_frames: int, device) -> None:
        from magvit2.evaluation.fvd import FrechetInceptionDistance, FrechetVideoDistance

        if clip_frames < 1:
            raise ValueError(f"--fvd-frames: expected a positive clip length, got {clip_frames}")
        rng = (0.0, 255.0)
        self.fvd = FrechetVideoDistance(fvd_path, rng, device) if fvd_path else None
        self.rfid = FrechetInceptionDistance(rfid_path, rng, device) if rfid_path else None
        self.clip_frames = clip_frames
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    @staticmethod
    def _tensor(frames: np.ndarray) -> torch.Tensor:
        """uint8 ``(T, H, W, 3)`` -> float ``(1, 3, T, H, W)`` in [0, 255]."""
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float()

    def update(self, src: np.ndarray, rec: np.ndarray) -> None:
        """Add one chunk of a video (frames ``(T, H, W, 3)`` uint8)."""
        if self.rfid is not None:
            self.rfid.update(
                real=self._tensor(src)[0].transpose(0, 1), fake=self._tensor(rec)[0].transpose(0, 1)
            )
        if self.fvd is None:
            return
        self._pending.append((src, rec))
        frames = sum(s.shape[0] for s, _ in self._pending)
        if frames < self.clip_frames:
            return
        src_all = np.concatenate([s for s, _ in self._pending])
        rec_all = np.concatenate([r for _, r in self._pending])
        whole = frames - frames % self.clip_frames
        for start in range(0, whole, self.clip_frames):
            end = start + self.clip_frames
            self.fvd.update(real=self._tensor(src_all[start:end]), fake=self._tensor(rec_all[start:end]))
        self._pending = [(src_all[whole:], rec_all[whole:])] if whole < frames else []

    def end_video(self) -> None:
        """Drop the tail of the current video that is shorter than one FVD clip."""
        self._pending = []

    def scores(self) -> dict:
        """``{"fvd": ..., "rfid": ...}`` for the detectors given; needs at least 2 clips / frames."""
        out = {}
        for key, metric, unit in (("fvd", self.fvd, "clips"), ("rfid", self.rfid, "frames")):
            if metric is None:
                continue
            if metric.real.num_items < 2:
                raise ValueError(
                    f"--{key}: needs at least 2 {unit}, got {metric.real.num_items} "
                    f"(FVD clips are --fvd-frames {self.clip_frames} frames long)"
                )
            out[key] = metric.compute()
            out[f"{key}_{unit}"] = metric.real.num_items
        return out


def evaluate_file(
    runner, path: Path, max_frames: int | None, stats: CodebookStats, lpips=None, detectors=None, bar=None
) -> dict:
    """Reconstruct one file; its metrics (mean per-frame PSNR/SSIM/LPIPS, token bpp, token count).
    ``bar``: a progress bar advanced by the frames done."""
    metrics, ids, lpips_sum = ReconstructionMetrics(), [], 0.0
    h = w = 0
    for src, rec in runner.reconstruct(iter_frames(path, max_frames=max_frames), sink=ids):
        if bar is not None:
            bar.update(len(src))
        h, w = src.shape[1:3]
        metrics.update(src, rec)
        if lpips is not None:
            lpips_sum += _lpips(lpips, src, rec)
        if detectors is not None:
            detectors.update(src, rec)
    if detectors is not None:
        detectors.end_video()
    tokens = sum(int(t.numel()) for t in ids)
    for t in ids:
        stats.update(t)
    row = {
        "file": str(path),
        "frames": metrics.frames,
        "psnr": metrics.psnr,
        "ssim": None if math.isnan(metrics.ssim) else metrics.ssim,  # None: frames under 11 px
        "bpp": bits_per_pixel(tokens, runner.vocabulary, metrics.frames, h, w),
        "tokens": tokens,
    }
    if lpips is not None:
        row["lpips"] = lpips_sum / metrics.frames
    return row


def _frame_mean(rows: list[dict], key: str) -> float | None:
    """Mean of ``key`` over all frames of the rows that have it (None: no row has it)."""
    have = [r for r in rows if r[key] is not None]
    return sum(r[key] * r["frames"] for r in have) / sum(r["frames"] for r in have) if have else None


def _total_frames(files: list[Path], max_frames: int | None) -> int | None:
    """Frames the progress bar expects (from the containers' headers; None when one is unknown)."""
    total = 0
    for path in files:
        try:
            n = probe(path).num_frames
        except (VideoReadError, ValueError, OSError):
            n = 0
        if n <= 0:
            return None
        total += min(n, max_frames or n)
    return total


def run(args: argparse.Namespace) -> int:
    """Evaluate every input; print a table (and write JSON); exit 1 if any file failed."""
    files = [f for f, _ in discover_inputs(args.inputs)]
    if args.json_out:
        check_output(Path(args.json_out), args.overwrite)  # before the work, not after it
    runner = make_runner(args)
    lpips = _lpips_model(args.lpips)
    detectors = None
    if args.fvd or args.rfid:
        detectors = DetectorScores(args.fvd, args.rfid, args.fvd_frames, runner.device)
    stats = CodebookStats(runner.vocabulary)
    rows, failed = [], []
    with progress(_total_frames(files, args.max_frames), "frame", "eval", args.quiet) as bar:
        for path in files:
            bar.set_postfix_str(path.name, refresh=False)
            try:
                rows.append(evaluate_file(runner, path, args.max_frames, stats, lpips, detectors, bar))
            except (VideoReadError, ValueError) as err:
                failed.append(str(path))
                bar.write(f"magvit2 eval: error: {one_line(path, err)}", file=sys.stderr)
    if not rows:
        raise ValueError("no input could be evaluated")
    if failed:
        print(f"magvit2 eval: {len(failed)} of {len(files)} inputs failed (listed above)", file=sys.stderr)
    summary = _summary(rows, failed, stats, runner.vocabulary, detectors)
    _print_table(summary)
    if args.json_out:
        with atomic_output(Path(args.json_out), args.overwrite) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    return 1 if failed else 0


def _summary(
    rows: list[dict],
    failed: list[str],
    stats: CodebookStats,
    vocabulary: int,
    detectors: DetectorScores | None,
) -> dict:
    """What ``--json-out`` holds: per-file rows, their per-frame means, codebook use, FVD/rFID."""
    keys = [k for k in ("psnr", "ssim", "lpips", "bpp") if k in rows[0]]
    summary = {
        "files": rows,
        "mean": {k: _frame_mean(rows, k) for k in keys},
        "frames": sum(r["frames"] for r in rows),
        "codebook_usage": stats.usage(),
        "perplexity": stats.perplexity(),
        "vocabulary": vocabulary,
        "failed": failed,
    }
    if detectors is not None:
        summary.update(detectors.scores())
    return summary


def _print_table(summary: dict) -> None:
    """One line per file and the per-frame mean, then codebook use and FVD/rFID (stdout)."""
    rows, mean = summary["files"], summary["mean"]
    keys = list(mean)
    width = max(len(Path(r["file"]).name) for r in rows)
    print(f"{'file':<{width}}  frames  " + "  ".join(f"{k:>8}" for k in keys))
    for r in rows + [{"file": "mean (per frame)", "frames": summary["frames"], **mean}]:
        values = "  ".join("     n/a" if r[k] is None else f"{r[k]:>8.4f}" for k in keys)
        print(f"{Path(r['file']).name:<{width}}  {r['frames']:>6}  {values}")
    usage, ppl = summary["codebook_usage"], summary["perplexity"]
    print(f"codebook usage {usage:.4%} of {summary['vocabulary']}, perplexity {ppl:.1f}")
    for key in ("fvd", "rfid"):
        if key in summary:
            unit = "clips" if key == "fvd" else "frames"
            print(f"{key.upper()} {summary[key]:.2f} over {summary[f'{key}_{unit}']} {unit}")
