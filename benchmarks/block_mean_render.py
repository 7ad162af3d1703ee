"""How close the block-mean code's rendering alone comes to the source (JSON), on the validation clips
the built-in model is chosen on: each variant's PSNR and its gain over the 4x8x8 block average (the
reference, in the same run).

Variants (``magvit2.modules.block_mean``; the quantized means of ``--bits``, no learned correction):

* ``block_average``: the reference (``magvit2.evaluation.baselines.block_average``): exact means,
  bicubic upsampling, each mean on all frames of its group;
* ``space_bicubic``: the same with quantized means; ``space_backprojected``: plus back-projection
  (``render_blocks``);
* ``slope_A``: plus the line in time with ``mean_slope = A`` (what ``TokenizerConfig.mean_slope``
  chooses between);
* ``slope_bits``: the line's factor chosen per block and group by 2 more bits
  (``TokenizerConfig.mean_slope_bits = 2``);
* ``shared_chroma``: the built-in model's layout without its detail patterns: luma at 6 bits per
  token, chroma at 6 + 6 bits per 2x2 tokens (``mean_chroma_share = 2``), a line in time at 0.75;
  ``shared_chroma_detail``: plus the 9-bit detail patterns, fitted on ``--fit-clips`` training clips
  as ``scripts/train_default.py`` fits them (the built-in model's code);
* ``per_frame_exact_backprojected``: exact means of every frame (not of groups of 4), rendered in
  space: about what any rendering in time could reach;
* ``per_frame_exact_least_squares``: the same means through the best linear interpolator from 5x5
  block neighbourhoods, fitted to ``--fit-images`` training images: whether a better fixed filter
  than bicubic + back-projection exists.

    PYTHONPATH=src python benchmarks/block_mean_render.py --trainset data/trainset
    PYTHONPATH=src python benchmarks/block_mean_render.py --smoke      # seconds: smooth random clips
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from einops import rearrange

from magvit2.data.synthetic import ClipSynth, SynthConfig
from magvit2.modules.block_mean import BlockMeanCode, fit_detail, group_means, render_blocks, upsample_blocks

SPATIAL, TEMPORAL, NEIGHBOURHOOD = 8, 4, 5


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over clips of the PSNR of ``a`` against ``b`` (both ``(B, 3, T, H, W)`` in [-1, 1])."""
    mse = (a.clamp(-1, 1) - b).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(4 / mse.clamp_min(1e-10))).mean())


def per_frame(render, video: torch.Tensor) -> torch.Tensor:
    """``render`` ``(N, 3, h, w) -> (N, 3, H, W)`` applied to every frame's exact block means."""
    small = rearrange(group_means(video, 1, SPATIAL, True), "b c t h w -> (b t) c h w")
    return rearrange(render(small), "(b t) c h w -> b c t h w", b=video.shape[0])


def neighbourhoods(means: torch.Tensor) -> torch.Tensor:
    """Block means ``(N, C, h, w)`` -> ``(N*C*h*w, K*K)`` neighbourhoods (edges replicated)."""
    r = NEIGHBOURHOOD // 2
    x = F.pad(rearrange(means, "n c h w -> (n c) 1 h w"), (r, r, r, r), mode="replicate")
    return rearrange(F.unfold(x, NEIGHBOURHOOD), "b k l -> (b l) k")


def fit_least_squares(images: torch.Tensor) -> torch.Tensor:
    """Images ``(N, 3, H, W)`` -> weights ``(K*K, s*s)``: each block's pixels minus its mean as a linear
    function of its neighbourhood's means minus its mean (all channels alike)."""
    means = F.avg_pool2d(images, SPATIAL)
    x = neighbourhoods(means).double()
    centre = x[:, NEIGHBOURHOOD**2 // 2 :][:, :1]
    pixels = F.unfold(rearrange(images, "n c h w -> (n c) 1 h w"), SPATIAL, stride=SPATIAL)
    y = rearrange(pixels, "b k l -> (b l) k").double() - centre
    x = x - centre
    gram = x.T @ x + 1e-6 * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.solve(gram, x.T @ y).float()


def least_squares_render(means: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Block means ``(N, C, h, w)`` -> ``(N, C, h*s, w*s)`` by the fitted weights."""
    n, c, h, w = means.shape
    x = neighbourhoods(means)
    centre = x[:, NEIGHBOURHOOD**2 // 2 :][:, :1]
    blocks = rearrange((x - centre) @ weights + centre, "(b l) k -> b k l", b=n * c)
    out = F.fold(blocks, (h * SPATIAL, w * SPATIAL), SPATIAL, stride=SPATIAL)
    return rearrange(out, "(n c) 1 hh ww -> n c hh ww", n=n)


def bicubic_steps(means: torch.Tensor) -> torch.Tensor:
    """Group means ``(B, 3, n, h, w)`` (frame 0 alone, then groups of 4) -> frames, each mean upsampled
    bicubically and shown on every frame of its group."""
    small = rearrange(means, "b c n h w -> (b n) c h w")
    big = rearrange(upsample_blocks(small, SPATIAL), "(b n) c h w -> b c n h w", b=means.shape[0])
    repeats = torch.full((means.shape[2],), TEMPORAL)
    repeats[0] = 1
    return big.repeat_interleave(repeats, 2)


def smoke_data() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Two smooth random clips ``(2, 3, 9, 32, 32)``, four images ``(4, 3, 32, 32)`` and two more
    clips to fit detail patterns on."""
    torch.manual_seed(0)
    smooth = lambda *shape: F.interpolate(torch.rand(*shape) * 2 - 1, scale_factor=4, mode="bilinear")
    clips = lambda: rearrange(smooth(18, 3, 8, 8), "(b t) c h w -> b c t h w", b=2)
    return clips(), smooth(4, 3, 8, 8), [clips()]


def trainset_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """The validation clips of scripts/train_default.py's ``val_video`` (same seed), ``--fit-images``
    128x128 training images, and the ``--fit-clips`` training clips the script fits detail patterns
    on (its defaults: seed 0, 12% flat, ramp and texture clips)."""
    video = ClipSynth.from_folder(args.trainset, "val", seed=1234).batch(args.clips, args.frames, args.size)
    images = ClipSynth.from_folder(args.trainset, "train", seed=7).batch(args.fit_images, 1, 128)[:, :, 0]
    synth = ClipSynth.from_folder(args.trainset, "train", cfg=SynthConfig(p_flat=0.12), seed=0)
    fit = [synth.batch(8, args.frames, args.size) for _ in range(max(1, args.fit_clips // 8))]
    return video, images, fit


def render_scores(
    video: torch.Tensor, images: torch.Tensor, fit: list[torch.Tensor], bits: tuple, slopes
) -> dict[str, float]:
    """PSNR of each rendering variant (module docstring) of ``video`` ``(B, 3, 1+4k, H, W)``; the
    least-squares interpolator is fitted to ``images`` ``(N, 3, H', W')``, detail patterns to the
    clips ``fit``."""
    scores = {"block_average": psnr(bicubic_steps(group_means(video, TEMPORAL, SPATIAL, True)), video)}
    plain = BlockMeanCode(bits, TEMPORAL, SPATIAL)
    means = plain.decode(plain.encode(video))
    scores["space_bicubic"] = psnr(bicubic_steps(means), video)
    scores["space_backprojected"] = psnr(plain.render(means, True), video)
    for a in slopes:
        scores[f"slope_{a:g}"] = psnr(
            BlockMeanCode(bits, TEMPORAL, SPATIAL, slope=a).render(means, True), video
        )
    coded = BlockMeanCode(bits, TEMPORAL, SPATIAL, slope_bits=2)
    codes = coded.encode(video)
    steps = coded.decode_steps(codes)
    scores["slope_bits"] = psnr(coded.render(coded.decode(codes), True, steps=steps), video)
    shared = BlockMeanCode((6, 6, 6), TEMPORAL, SPATIAL, slope=0.75, chroma_share=2, detail_bits=9)
    scores["shared_chroma"] = psnr(shared.reconstruct(shared.encode(video), True), video)  # patterns all 0
    fit_detail(shared, fit)
    scores["shared_chroma_detail"] = psnr(shared.reconstruct(shared.encode(video), True), video)
    exact = per_frame(lambda m: render_blocks(m, SPATIAL), video)
    scores["per_frame_exact_backprojected"] = psnr(exact, video)
    weights = fit_least_squares(images)
    fitted = per_frame(lambda m: least_squares_render(m, weights), video)
    scores["per_frame_exact_least_squares"] = psnr(fitted, video)
    return scores


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trainset", help="a `magvit2 trainset` folder")
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--bits", type=int, nargs=3, default=(6, 5, 5))
    p.add_argument("--slopes", type=float, nargs="+", default=(0.25, 0.5, 0.75, 1.0))
    p.add_argument("--fit-images", type=int, default=600)
    p.add_argument("--fit-clips", type=int, default=512, help="training clips the detail patterns fit")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="smooth random clips and images, no training set")
    args = p.parse_args(argv)
    if not args.smoke and not args.trainset:
        p.error("--trainset: expected a `magvit2 trainset` folder (or --smoke)")
    if args.threads:
        torch.set_num_threads(args.threads)
    video, images, fit = smoke_data() if args.smoke else trainset_data(args)
    scores = render_scores(video, images, fit, tuple(args.bits), args.slopes)
    reference = scores["block_average"]
    result = {
        "clips": f"{video.shape[0]} validation clips of {'x'.join(map(str, video.shape[2:]))}",
        "bits": list(args.bits),
        "psnr": {k: round(v, 3) for k, v in scores.items()},
        "gain_over_block_average_db": {k: round(v - reference, 3) for k, v in scores.items()},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
