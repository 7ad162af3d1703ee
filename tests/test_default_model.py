"""The built-in model shipped in the package: loads by name, is what the CLI uses without --model,
and holds the floors its model card (docs/default-model.md) states on held-out and simple content."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from magvit2 import VideoTokenizer
from magvit2.data.video_io import read_image, read_video, to_tensor, to_uint8
from magvit2.evaluation.baselines import block_average
from magvit2.evaluation.sanity import psnr_uint8, sanity_report
from magvit2.inference.refine import encode_refined
from magvit2.models.tokenizer import PRETRAINED_DIR

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: Floors of the model card (docs/default-model.md), each a little under the measured figure so
#: another platform's float rounding of the same weights still passes.
CARPHONE_MARGIN_DB = 3.0  # over the 4x8x8 block average on carphone_pristine's first 33 frames
BIKES_MARGIN_DB = 5.5  # the same on bikes.mp4 (17 frames, middle 320 columns): its motion
GREY_FLOOR_DB = 50.0  # each of five flat greys
COLOUR_FLOOR_DB = 50.0  # each of six flat saturated colours
RAMP_FLOOR_DB = 43.0
BLACK_MEAN = 0.5  # mean value (0-255) of the black frames of a fade through black


@pytest.fixture(scope="module")
def model() -> VideoTokenizer:
    return VideoTokenizer.from_pretrained("default")


def test_default_model_is_shipped_small_and_loads_by_name(model):
    folder = PRETRAINED_DIR / "default"
    assert (folder / "model.safetensors").stat().st_size < 20_000_000  # fp16, at most 20 MB
    assert model.config.spatial_factor == 8 and model.config.temporal_factor == 4
    assert model.config.norm == "channel" and model.codebook_size == 2**18
    tables = [model.encoder.block_mean.detail, model.decoder.block_mean.detail]
    assert not list(model.parameters())  # every bit fixed, no decoder network: a fitted table only
    assert all(t.dtype == torch.float32 and t.isfinite().all() and t.abs().max() > 0 for t in tables)
    assert torch.equal(tables[0], tables[1])


def test_default_model_beats_block_average_on_held_out_clip(clips_dir, model):
    """carphone_pristine.mp4 (never trained on, never used to choose anything), first 33 frames,
    through the CLI with no --model: above the block average by the card's margin, the same value as
    the library's own encode/decode, and no decay along the clip."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    clip = clips_dir / "carphone_pristine.mp4"
    cmd = [
        sys.executable,
        "-m",
        "magvit2.cli.main",
        "reconstruct",
        str(clip),
        "--max-frames",
        "33",
        "--json",
        "-q",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[0])
    src = read_video(clip, max_frames=33)
    floor = psnr_uint8(block_average(src), src) + CARPHONE_MARGIN_DB
    assert res["frames"] == 33 and res["psnr"] >= floor, (res, floor)
    rec = to_uint8(
        model.decode(model.encode(to_tensor(src)[None], max_chunk_frames=17), max_chunk_frames=17)[0]
    )
    per_frame = 10 * np.log10(255**2 / ((rec.astype(np.float64) - src) ** 2).mean(axis=(1, 2, 3)))
    assert abs(float(per_frame.mean()) - res["psnr"]) < 0.05
    assert per_frame[-8:].mean() > per_frame[:8].mean() - 1.5, per_frame.round(1)


def test_default_model_follows_motion_on_held_out_bikes(clips_dir, model):
    """bikes.mp4 (held out), its first 17 frames, the middle 320 columns (to keep the test short): the
    detail patterns carry edges and their motion inside each group of 4 frames, 5.5 dB past the block
    average (whose means stand still for 4 frames; 6.7 dB measured)."""
    src = read_video(clips_dir / "bikes.mp4", max_frames=17)[:, :, 160:480].copy()
    rec = to_uint8(model.decode(model.encode(to_tensor(src)[None]))[0])
    floor = psnr_uint8(block_average(src), src) + BIKES_MARGIN_DB
    assert psnr_uint8(rec, src) >= floor, (psnr_uint8(rec, src), floor)


def test_default_model_flat_colours_ramps_and_fades(model, photos_dir):
    image = read_image(photos_dir / "astronaut.png", size=(128, 128))
    report = sanity_report(model, image, frames=9, size=64)
    greys = ["black", "dark grey", "mid grey", "light grey", "white"]
    for name, row in report["flat"].items():
        assert row["psnr"] >= (GREY_FLOOR_DB if name in greys else COLOUR_FLOOR_DB), (name, row)
    assert all(row["psnr"] >= RAMP_FLOOR_DB for row in report["ramp"].values()), report["ramp"]
    assert report["fade"]["black_mean"] <= BLACK_MEAN, report["fade"]


def test_token_refinement_on_the_default_model_keeps_the_encoders_tokens(clips_dir, model):
    """The built-in decoder is a fixed rule with no network: refinement has no gradient to follow and
    returns the encoder's tokens, in the time of one pass; the weights never change."""
    src = read_video(clips_dir / "carphone_pristine.mp4", max_frames=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    video = to_tensor(src)[None]
    assert torch.equal(encode_refined(model, video, steps=3), model.encode(video))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_info_on_the_default_model_counts_its_patterns_not_parameters(capsys):
    from magvit2.cli.main import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["parameters"] == 0 and info["detail_patterns"] == 2 ** info["config"]["mean_detail_bits"] == 512
    )


def test_cli_tiles_leave_the_default_models_tokens_and_frames_as_a_whole_pass(model):
    """The built-in code depends on neighbouring blocks (shared chroma, patterns chosen against the
    rendered means) and has no network: the streaming runner (CLI ``--tile``) takes whole frames, so
    tiled tokens and frames equal an untiled pass on an odd token grid."""
    from magvit2.inference.memory import FIXED_BYTES, estimate_bytes
    from magvit2.inference.streaming import InferenceOptions, TokenizerRunner

    torch.manual_seed(0)
    video = torch.nn.functional.interpolate(torch.rand(1, 3, 3, 5, 7), size=(9, 40, 72), mode="trilinear")
    frames = list(to_uint8(video[0] * 2 - 1))
    whole = TokenizerRunner(model, InferenceOptions(max_chunk_frames=5)).encode_frames(iter(frames))
    opts = InferenceOptions(tile=32, overlap=8, max_chunk_frames=5)
    tiled = TokenizerRunner(model, opts).encode_frames(iter(frames))
    assert tiled.ids.shape == (3, 5, 9) and torch.equal(tiled.ids, whole.ids)
    untiled_frames = list(TokenizerRunner(model, InferenceOptions(max_chunk_frames=5)).decode_clip(whole))
    tiled_frames = list(TokenizerRunner(model, opts).decode_clip(tiled))
    assert all(np.array_equal(a, b) for a, b in zip(tiled_frames, untiled_frames, strict=True))
    assert not model.runs_in_tiles(model.encoder) and not model.runs_in_tiles(model.decoder)
    assert estimate_bytes(model, 100, 5, encode=True) == FIXED_BYTES * 100 * 5  # whole frames, no network


def test_a_frame_too_large_for_the_default_model_suggests_fewer_frames_not_tiles(model, monkeypatch):
    import magvit2.inference.memory as memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 2**20)  # 10 MiB left
    with pytest.raises(memory.FrameTooLargeError, match="--max-chunk-frames"):
        memory.check_fits(model, torch.device("cpu"), 720, 1280, 17, True, None, 1)
    memory.check_fits(model, torch.device("cpu"), 16, 16, 1, True, None, 1)  # 25 KiB: fits
