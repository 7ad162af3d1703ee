"""``magvit2 eval`` as a user runs it: values checked against the library, bad files reported."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from magvit2 import TokenizerConfig, VideoTokenizer
from magvit2.data.video_io import read_video, to_tensor, to_uint8, write_video
from magvit2.evaluation import CodebookStats

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "magvit2.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _saved_model(folder: Path, bits: int) -> VideoTokenizer:
    """A small random-weight LFQ tokenizer saved to ``folder`` (returned in eval mode)."""
    cfg = {"ch": 8, "ch_mult": [1, 2, 2, 2], "num_res_blocks": 1, "norm_groups": 4}
    model = VideoTokenizer(TokenizerConfig.from_dict({**cfg, "quantizer": {"kind": "lfq", "bits": bits}}))
    model.eval().save_pretrained(folder)
    return model


def test_eval_reports_library_values_and_continues_past_bad_files(tmp_path):
    torch.manual_seed(0)
    model = _saved_model(tmp_path / "model", 10)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (1, 16, 24, 3))
    frames = np.clip(base + np.arange(5)[:, None, None, None] * 9, 0, 255).astype(np.uint8)
    write_video(tmp_path / "clip.mp4", frames, fps=10, lossless=True)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    out = _cli(
        "eval",
        str(tmp_path / "clip.mp4"),
        str(tmp_path / "broken.mp4"),
        "--model",
        str(tmp_path / "model"),
        "--json-out",
        str(tmp_path / "e.json"),
        "-q",
    )
    assert out.returncode == 1, out.stderr
    assert "broken.mp4" in out.stderr and "clip.mp4" in out.stdout
    res = json.loads((tmp_path / "e.json").read_text())
    assert res["failed"] == [str(tmp_path / "broken.mp4")]
    # independent computation with the library: encode/decode the same frames, per-frame PSNR mean
    src = read_video(tmp_path / "clip.mp4")
    video = to_tensor(src)[None]
    ids = model.encode(video)
    rec = to_uint8(model.decode(ids)[0]).astype(np.float64)
    mse = ((rec - src.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    row = res["files"][0]
    assert row["frames"] == 5 and row["tokens"] == ids.numel()
    assert abs(row["psnr"] - float(np.mean(10 * np.log10(255**2 / mse)))) < 0.05
    assert abs(row["bpp"] - ids.numel() * 10 / (5 * 16 * 24)) < 1e-9
    stats = CodebookStats(2**10)
    stats.update(ids)
    assert abs(res["codebook_usage"] - stats.usage()) < 1e-12
    assert abs(res["perplexity"] - stats.perplexity()) < 1e-6
    assert "1 of 2 inputs failed" in out.stderr
    # an existing --json-out is refused before any work (no table printed), not after it
    again = _cli("eval", str(tmp_path / "clip.mp4"), "--model", str(tmp_path / "model"),
                 "--json-out", str(tmp_path / "e.json"), "-q")  # fmt: skip
    assert again.returncode == 1 and "--overwrite" in again.stderr and "clip.mp4" not in again.stdout


def test_eval_lpips_equals_the_library_value(tmp_path):
    from safetensors.torch import save_file

    from magvit2.losses.perceptual import LPIPS

    torch.manual_seed(1)
    lp = LPIPS()
    for p in lp.parameters():
        p.data.uniform_(0.0, 0.1)
    save_file({k: v.contiguous() for k, v in lp.state_dict().items()}, str(tmp_path / "lpips.safetensors"))
    model = _saved_model(tmp_path / "model", 8)
    frame = np.random.default_rng(1).integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)
    write_video(tmp_path / "img.mp4", frame, fps=1, lossless=True)
    out = _cli(
        "eval",
        str(tmp_path / "img.mp4"),
        "--model",
        str(tmp_path / "model"),
        "--lpips",
        str(tmp_path / "lpips.safetensors"),
        "--json-out",
        str(tmp_path / "e.json"),
        "-q",
    )
    assert out.returncode == 0, out.stderr
    row = json.loads((tmp_path / "e.json").read_text())["files"][0]
    src = read_video(tmp_path / "img.mp4")
    rec = to_uint8(model.decode(model.encode(to_tensor(src)[None]))[0])
    ref = LPIPS.from_file(tmp_path / "lpips.safetensors").eval()
    x = torch.from_numpy(src).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(rec).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        expected = float(ref(x, y).mean())
    assert expected > 0 and abs(row["lpips"] - expected) < 1e-5


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the detector files are TorchScript
def test_eval_fvd_and_rfid_equal_the_library_values(tmp_path):
    from test_metrics_frechet import _FakeI3D, _FakeInception

    from magvit2.evaluation.fvd import FrechetInceptionDistance, FrechetVideoDistance

    torch.manual_seed(2)
    i3d, inception = tmp_path / "i3d.pt", tmp_path / "inception.pt"
    torch.jit.save(torch.jit.script(_FakeI3D().eval()), str(i3d))
    torch.jit.save(torch.jit.script(_FakeInception().eval()), str(inception))
    model = _saved_model(tmp_path / "model", 8)
    rng = np.random.default_rng(3)
    clips = []
    for name, n in (("a.mp4", 9), ("b.mp4", 5)):
        base = rng.integers(0, 256, (1, 16, 16, 3))
        frames = np.clip(base + np.arange(n)[:, None, None, None] * 7, 0, 255).astype(np.uint8)
        write_video(tmp_path / name, frames, fps=10, lossless=True)
        clips.append(tmp_path / name)
    args = ["eval", *map(str, clips), "--model", str(tmp_path / "model"), "-q"]
    detectors = ["--fvd", str(i3d), "--fvd-frames", "3", "--rfid", str(inception)]
    out = _cli(*args, *detectors, "--json-out", str(tmp_path / "e.json"))
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "e.json").read_text())
    assert "FVD" in out.stdout and "RFID" in out.stdout
    # the library on the same frames: 3-frame clips (9 -> 3 clips, 5 -> 1: tail dropped), every frame
    fvd = FrechetVideoDistance(i3d, value_range=(0.0, 255.0))
    fid = FrechetInceptionDistance(inception, value_range=(0.0, 255.0))
    for path in clips:
        src = read_video(path)
        rec = to_uint8(model.decode(model.encode(to_tensor(src)[None]))[0])
        s = torch.from_numpy(src).permute(3, 0, 1, 2).float()
        r = torch.from_numpy(rec).permute(3, 0, 1, 2).float()
        for start in range(0, src.shape[0] - 2, 3):
            fvd.update(real=s[None, :, start : start + 3], fake=r[None, :, start : start + 3])
        fid.update(real=s.transpose(0, 1), fake=r.transpose(0, 1))
    assert res["fvd_clips"] == 4 and res["rfid_frames"] == 14
    assert res["fvd"] > 0 and abs(res["fvd"] - fvd.compute()) < 1e-3 * res["fvd"]
    assert res["rfid"] > 0 and abs(res["rfid"] - fid.compute()) < 1e-3 * res["rfid"]
    # a clip length longer than every video leaves no FVD clip: a clear error, not a NaN
    out = _cli(*args, "--fvd", str(i3d), "--fvd-frames", "64")
    assert out.returncode != 0 and "--fvd: needs at least 2 clips" in out.stderr
