"""The built-in model shipped in the package: loads by name, is what the CLI uses without --model,
and reconstructs the held-out clip (never trained on) to the quality the README states."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from magvit2 import VideoTokenizer
from magvit2.data.video_io import read_video, to_tensor, to_uint8
from magvit2.models.tokenizer import PRETRAINED_DIR

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_default_model_is_shipped_small_and_loads_by_name():
    folder = PRETRAINED_DIR / "default"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert (folder / "model.safetensors").stat().st_size < 15_000_000  # the 15 MB
    model = VideoTokenizer.from_pretrained("default")
    assert model.config.spatial_factor == 8 and model.config.temporal_factor == 4
    assert all(p.dtype.is_floating_point and p.isfinite().all() for p in model.parameters())


#: Regression floor on carphone_pristine (first 33 frames): the committed model reaches README's value
#: (23.01 dB measured; the phase-8 model before it gave 22.87). The issue's goal for the built-in
#: model is 23 dB; the floor leaves room for another platform's float rounding of the same weights.
FLOOR_DB = 22.95


def test_default_model_reconstructs_held_out_clip(clips_dir):
    """First 33 frames of carphone_pristine.mp4 through the CLI (no --model): at least the floor, the
    same value as the library's own encode/decode, and no decay along the clip (a model trained only
    on short clips lost 3 dB between its first and last 8 frames)."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    clip = clips_dir / "carphone_pristine.mp4"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "magvit2.cli.main",
            "reconstruct",
            str(clip),
            "--max-frames",
            "33",
            "--json",
            "-q",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[0])
    assert res["frames"] == 33 and res["psnr"] >= FLOOR_DB, res
    src = read_video(clip, max_frames=33)
    model = VideoTokenizer.from_pretrained("default")
    rec = to_uint8(
        model.decode(model.encode(to_tensor(src)[None], max_chunk_frames=17), max_chunk_frames=17)[0]
    )
    mse = ((rec.astype(np.float64) - src) ** 2).mean(axis=(1, 2, 3))
    per_frame = 10 * np.log10(255**2 / mse)
    assert abs(float(per_frame.mean()) - res["psnr"]) < 0.05
    assert per_frame[-8:].mean() > per_frame[:8].mean() - 1.5, per_frame.round(1)
    # the built-in model has four feedback stages; its first stage alone is worse, its encoder alone
    # clearly worse (measured 23.01 with all four, 22.58 with the first, 22.00 with none)
    assert model.feedback is not None and model.config.feedback_stages == 4

    def psnr_with(stages: int) -> float:
        model.feedback_stages_used = stages
        rec = to_uint8(model.decode(model.encode(to_tensor(src)[None]))[0]).astype(np.float64)
        return float(np.mean(10 * np.log10(255**2 / ((rec - src) ** 2).mean(axis=(1, 2, 3)))))

    first, alone = psnr_with(1), psnr_with(0)
    assert first < res["psnr"] - 0.1 and alone < first - 0.4, (alone, first, res["psnr"])


def test_token_refinement_lifts_the_default_model_on_held_out_frames(clips_dir):
    """Refinement on the real model: 5 steps on the first 9 frames of carphone_pristine add at least
    0.6 dB on top of the feedback networks' one pass (30 steps on 33 frames: README), one step at the
    default step size at least 0.1 dB (22.67 -> 22.83 with the four-stage model; the two-stage phase-7
    model, whose one pass left more for one step to fix: 22.29 -> 22.79), and the weights never change."""
    src = read_video(clips_dir / "carphone_pristine.mp4", max_frames=9)
    model = VideoTokenizer.from_pretrained("default")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    video = to_tensor(src)[None]

    def psnr(ids) -> float:
        rec = to_uint8(model.decode(ids)[0]).astype(np.float64)
        return float(np.mean(10 * np.log10(255**2 / ((rec - src) ** 2).mean(axis=(1, 2, 3)))))

    plain, refined = psnr(model.encode(video)), psnr(model.encode_refined(video, steps=5))
    assert refined > plain + 0.6, (plain, refined)
    one_step = psnr(model.encode_refined(video, steps=1))
    assert one_step > plain + 0.1, (plain, one_step)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
