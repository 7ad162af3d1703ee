"""Long refinement distillation of the built-in encoder against fixed targets (decoder frozen).

``benchmarks/distill.py`` compares distillation with a reconstruction-only control over a few dozen
steps. This one runs one arm for long, to see where distillation levels off and whether more encoder
capacity helps:

1. Targets: ``--target-batches`` batches of 8 random 9-frame 128x128 crops of bigbuckbunny.mp4 (a
   training clip, frames resized to 144x256) and the tokens ``--target-steps`` refinement steps find
   for them with the built-in model, made 4 batches per seed (seeds 100, 101, ...) and cached in
   ``--targets`` (reused by later runs).
2. ``--steps`` Adam steps on batches of 4 of those clips, training only the encoder:
   ``distill_only``: ``distillation_loss(z, refined codes)`` (no decoder pass: about 3x cheaper a step);
   ``with_reconstruction``: ``+ mean (x - x^)^2`` through the frozen decoder (straight-through).
   ``--extra-encoder-blocks N`` appends N residual blocks at the latent resolution to the encoder's
   middle, their last convolution zero (the model starts exactly as the built-in one).
3. Every ``--every`` steps: one-pass PSNR on the first 33 frames of carphone_pristine.mp4 (held out),
   raw weights and an EMA (0.99) of them; the JSON reports each against the built-in model's (same run).
   At the start and the end: bikes.mp4 (held out too; its first 33 frames, mean of per-frame PSNR, as
   ``magvit2 reconstruct`` reports it), so that a gain on carphone is checked on other content.

    PYTHONPATH=src python benchmarks/distill_long.py --arm distill_only --steps 1500
    PYTHONPATH=src python benchmarks/distill_long.py --arm distill_only --extra-encoder-blocks 4
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from distill import CLIPS, make_targets, one_pass_psnr

from magvit2.config_io import resolve_path
from magvit2.data.video_io import read_video
from magvit2.losses.distillation import distillation_loss
from magvit2.models import VideoTokenizer
from magvit2.modules.blocks import ResBlock


def load_targets(path: Path, batches: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips ``(N, 3, 9, 128, 128)`` and refined codes ``(N, Z, 3, 16, 16)``, from ``path`` or made."""
    if path.is_file():
        return torch.load(path, weights_only=True)  # tensors only: never unpickle code
    teacher = VideoTokenizer.from_pretrained("default").float().eval().requires_grad_(False)
    parts = [make_targets(teacher, 4, steps, seed=100 + s) for s in range(-(-batches // 4))]
    videos = torch.cat([v for v, _ in parts])
    codes = torch.cat([teacher.quantizer.indices_to_codes(ids).float() for _, ids in parts])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save((videos, codes), path)
    return videos, codes


def student(extra_blocks: int) -> VideoTokenizer:
    """The built-in model, decoder frozen, with ``extra_blocks`` identity-initialised encoder blocks."""
    model = VideoTokenizer.from_pretrained("default").float()
    cfg, width = model.config, model.config.ch * model.config.ch_mult[-1]
    for _ in range(extra_blocks):
        block = ResBlock(width, width, cfg.norm_groups, cfg.norm_eps, cfg.time_pooled_norm)
        for p in block.conv2.parameters():
            torch.nn.init.zeros_(p)  # h = 0: the block passes its input through
        model.encoder.mid_block.append(block)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("encoder."))
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arm", choices=["distill_only", "with_reconstruction"], default="distill_only")
    p.add_argument("--extra-encoder-blocks", type=int, default=0)
    p.add_argument("--target-batches", type=int, default=24, help="batches of 8 clips (multiple of 4)")
    p.add_argument("--target-steps", type=int, default=5)
    p.add_argument("--targets", default="runs/distill_targets.pt", help="cache of the targets")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seeds the extra blocks and the batch order")
    p.add_argument("--out", default="distill_long.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    videos, targets = load_targets(Path(args.targets), args.target_batches, args.target_steps)
    carphone = read_video(Path(resolve_path(f"{CLIPS}/carphone_pristine.mp4")), max_frames=33)
    torch.manual_seed(args.seed)
    model = student(args.extra_encoder_blocks)
    bikes = read_video(Path(resolve_path(f"{CLIPS}/bikes.mp4")), max_frames=33)
    start_psnr, bikes_start = one_pass_psnr(model.eval(), carphone), one_pass_psnr(model, bikes, "frames", 17)
    model.train()
    ema = copy.deepcopy(model.encoder).eval()
    opt = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=args.lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(args.seed)
    points, start = [], time.time()
    for step in range(1, args.steps + 1):
        pick = torch.randint(0, videos.shape[0], (4,), generator=g)
        video = videos[pick]
        latent = model.encoder(video)
        loss = distillation_loss(latent, targets[pick], binary=True)
        if args.arm == "with_reconstruction":
            codes = torch.sign(latent).detach() + latent - latent.detach()  # LFQ's straight-through
            loss = loss + F.mse_loss(model.decoder(codes), video)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, q in zip(ema.parameters(), model.encoder.parameters(), strict=True):
                e.lerp_(q, 0.01)
        if step % args.every == 0 or step == args.steps:
            raw = one_pass_psnr(model.eval(), carphone)
            trained, model.encoder = model.encoder, ema
            smoothed = one_pass_psnr(model, carphone)
            model.encoder = trained
            model.train()
            seconds = round(time.time() - start)
            points.append({"step": step, "raw": round(raw, 3), "ema": round(smoothed, 3),
                           "loss": round(float(loss.detach()), 4), "seconds": seconds})  # fmt: skip
            print(json.dumps(points[-1]), flush=True)
    best = max(max(q["raw"], q["ema"]) for q in points)
    bikes_raw = one_pass_psnr(model.eval(), bikes, "frames", 17)
    model.encoder = ema
    bikes_ema = one_pass_psnr(model, bikes, "frames", 17)
    result = {
        "settings": vars(args),
        "encoder_parameters": sum(q.numel() for q in model.encoder.parameters()),
        "start_psnr": round(start_psnr, 3),
        "points": points,
        "best_psnr": best,
        "best_gain_db": round(best - start_psnr, 3),
        "bikes_start": round(bikes_start, 3),
        "bikes_final": {"raw": round(bikes_raw, 3), "ema": round(bikes_ema, 3)},
        "bikes_gain_db": round(max(bikes_raw, bikes_ema) - bikes_start, 3),
    }
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
