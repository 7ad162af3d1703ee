"""The ``magvit2`` tokenize / detokenize / reconstruct / info commands, driven as a user would.

A tiny random-weight tokenizer (LFQ 10 bits, 4x spatial, 2x temporal) is saved with save_pretrained and
passed with --model. End-to-end runs use subprocesses; the many error cases call the same entry point
(``magvit2.cli.main.main``) in-process to keep the file fast.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from magvit2.cli.main import main
from magvit2.data.video_io import (
    VideoWriter,
    probe,
    read_image,
    read_video,
    to_tensor,
    to_uint8,
    write_png,
    write_video,
)
from magvit2.inference.metrics import ssim_frames
from magvit2.inference.streaming import padded_frames
from magvit2.models import TokenizerConfig, VideoTokenizer
from magvit2.models.tiling import pad_to_multiple
from magvit2.tokens import TokenFile, load_tokens, model_fingerprint, save_tokens

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {
    "quantizer": {"kind": "lfq", "bits": 10},
    "ch": 8,
    "ch_mult": [1, 2, 2],
    "num_res_blocks": 1,
    "norm_groups": 4,
}


def cli(*args: str, cwd: Path | None = None, torchrun: int = 0) -> subprocess.CompletedProcess:
    """Run ``magvit2 ARGS`` in a fresh process (``torchrun`` > 0: under torchrun with that many ranks)."""
    env = {
        **os.environ,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
    }
    if torchrun:
        head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(torchrun)]
        head += ["--master_port", "29517", "-m", "magvit2.cli.main"]
    else:
        head = [sys.executable, "-m", "magvit2.cli.main"]
    return subprocess.run([*head, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """The same entry point in-process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model") / "tiny"
    VideoTokenizer(TokenizerConfig.from_dict(TINY)).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def model(model_dir) -> VideoTokenizer:
    return VideoTokenizer.from_pretrained(model_dir)


def _clip(seed: int, frames: int = 5, h: int = 38, w: int = 50) -> np.ndarray:
    """A smooth moving pattern (compresses well, so H.264 keeps it close)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(frames):
        r = 128 + 100 * np.sin((xx + 3 * t + seed) / 6.0)
        g = 128 + 100 * np.cos((yy - 2 * t + seed) / 5.0)
        b = 128 + 80 * np.sin((xx + yy + seed * t) / 9.0)
        out.append(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8))
    return np.stack(out)


def _reference_ids(model: VideoTokenizer, frames: np.ndarray) -> torch.Tensor:
    """Independent path: pad in time (repeat last frame) and space, one whole-clip encode."""
    n = padded_frames(len(frames), model.temporal_factor)
    full = np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), 0)])
    video, _, _ = pad_to_multiple(to_tensor(full).unsqueeze(0), model.spatial_factor)
    return model.encode(video)[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over frames of each frame's PSNR, written out independently of the library."""
    a, b = a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:])
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(255**2 / mse)))


# --------------------------------------------------------------------------------------------- happy paths


def test_help_lists_commands_with_examples(capsys):
    r = cli("--help")
    assert r.returncode == 0
    for cmd in ("tokenize", "detokenize", "reconstruct", "info"):
        assert cmd in r.stdout
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "example" in text and f"magvit2 {cmd}" in text
        for flag in ("--model", "--device") + (() if cmd == "info" else ("--batch-size", "--tile")):
            assert flag in text


def test_version_is_the_one_pyproject_declares():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "([^"]+)"', text, re.MULTILINE).group(1)
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"magvit2 {declared}"


def test_real_clip_round_trip(tmp_path, clips_dir, model_dir, model):
    src = clips_dir / "carphone_pristine.mp4"
    tok, vid = tmp_path / "c.safetensors", tmp_path / "c.mp4"
    r = cli("tokenize", str(src), "-o", str(tok), "--model", str(model_dir), "--max-frames", "9", "-q")
    assert r.returncode == 0, r.stderr
    frames = read_video(src, max_frames=9)
    tf = load_tokens(tok)
    # streamed, chunked (17-frame chunks of 1 + 2m) ids equal one whole-clip encode
    assert torch.equal(tf.ids, _reference_ids(model, frames))
    assert (tf.frames, tf.height, tf.width, tf.source) == (9, 144, 176, "carphone_pristine.mp4")
    assert tf.fps == probe(src).fps
    r = cli("detokenize", str(tok), "-o", str(vid), "--model", str(model_dir), "--max-chunk-frames", "5")
    assert r.returncode == 0, r.stderr
    info = probe(vid, count="decode")
    assert (info.num_frames, info.height, info.width, info.fps) == (9, 144, 176, probe(src).fps)
    r = cli("info", str(tok), "--json")
    meta = json.loads(r.stdout)
    assert meta["token_grid"] == [5, 36, 44] and meta["frames"] == 9 and meta["version"] == 1


def test_odd_sizes_frames_images_and_packed(tmp_path, capsys, model_dir, model):
    frames = _clip(0, frames=6)  # 50x38: not multiples of 4; 6 frames: padded to 7
    clip, png = tmp_path / "odd.mkv", tmp_path / "odd.png"
    write_video(clip, frames, fps=12, lossless=True)
    write_png(png, frames[0])
    m = ("--model", str(model_dir), "-q")
    code, _, err = run_main(
        capsys, "tokenize", str(clip), "-o", str(tmp_path / "o.safetensors"), "--packed", *m
    )
    assert code == 0, err
    tf = load_tokens(tmp_path / "o.safetensors")
    assert torch.equal(tf.ids, _reference_ids(model, frames))
    assert (tf.frames, tf.height, tf.width, tf.pad_bottom, tf.pad_right) == (6, 38, 50, 2, 2)
    assert "packed" in load_file(tmp_path / "o.safetensors")  # bit-packed: 10 bits per id
    code, _, err = run_main(
        capsys, "detokenize", str(tmp_path / "o.safetensors"), "-o", str(tmp_path / "fr"), *m
    )
    assert code == 0, err
    pngs = sorted((tmp_path / "fr").glob("*.png"))
    assert len(pngs) == 6
    expected = to_uint8(model.decode(tf.ids[None]))[0, :6, :38, :50]
    got = np.stack([read_image(p) for p in pngs])
    assert np.abs(got.astype(int) - expected).max() <= 1  # lossless PNG; chunked float rounding
    # an image: one frame in, a PNG of the same size out
    code, _, err = run_main(capsys, "tokenize", str(png), "-o", str(tmp_path / "i.safetensors"), *m)
    assert code == 0, err
    code, _, err = run_main(
        capsys, "detokenize", str(tmp_path / "i.safetensors"), "-o", str(tmp_path / "i.png"), *m
    )
    assert code == 0, err
    assert read_image(tmp_path / "i.png").shape == (38, 50, 3)
    # odd sizes keep their exact size in mp4 (4:4:4)
    code, _, err = run_main(
        capsys, "detokenize", str(tmp_path / "o.safetensors"), "-o", str(tmp_path / "o.mp4"), *m
    )
    assert code == 0, err
    info = probe(tmp_path / "o.mp4", count="decode")
    assert (info.num_frames, info.width, info.height, info.fps) == (6, 50, 38, 12)


def test_reconstruct_metrics_and_compare(tmp_path, capsys, clips_dir, model_dir, model):
    src = clips_dir / "carphone_pristine.mp4"
    cmp_png = tmp_path / "cmp.png"
    args = ("reconstruct", str(src), "--max-frames", "5", "--json", "--model", str(model_dir), "-q")
    code, out, err = run_main(capsys, *args, "--compare", str(cmp_png), "--compare-frame", "2")
    assert code == 0, err
    res = json.loads(out)
    frames = read_video(src, max_frames=5)
    ids = _reference_ids(model, frames)
    rec = to_uint8(model.decode(ids[None]))[0, :5]
    assert res["tokens"] == ids.numel() == 3 * 36 * 44
    assert res["bpp"] == pytest.approx(ids.numel() * 10 / (5 * 144 * 176))
    assert res["psnr"] == pytest.approx(_psnr(frames, rec), abs=0.05)
    from skimage.metrics import structural_similarity

    ref_ssim = np.mean(
        [
            structural_similarity(
                frames[i],
                rec[i],
                channel_axis=-1,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=255,
            )
            for i in range(5)
        ]
    )
    assert res["ssim"] == pytest.approx(ref_ssim, abs=2e-3)
    side = read_image(cmp_png)
    assert side.shape == (144, 3 * 176, 3)
    assert np.array_equal(side[:, :176], frames[2])
    assert np.abs(side[:, 176:352].astype(int) - rec[2]).max() <= 1


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    ours = ssim_frames(a, b)
    for i in range(2):
        ref = structural_similarity(
            a[i],
            b[i],
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
        )
        assert ours[i] == pytest.approx(ref, abs=1e-5)


def test_tile_option_tokenizes_and_decodes_in_tiles(tmp_path, capsys, clips_dir):
    """``--tile``: a channel-norm model's tiled tokens equal the untiled ones (the overlap covers its
    receptive field) and the tiled decode is close to the untiled one."""
    from test_tiling import CHANNEL

    torch.manual_seed(0)
    folder = VideoTokenizer(TokenizerConfig.from_dict(CHANNEL)).save_pretrained(tmp_path / "channel")
    src, m = clips_dir / "carphone_pristine.mp4", ("--model", str(folder), "-q")
    tiles = ("--tile", "64", "--tile-overlap", "32")
    outs = {}
    for name, extra in {"full": (), "tiled": tiles}.items():
        tok = tmp_path / f"{name}.safetensors"
        code, _, err = run_main(capsys, "tokenize", str(src), "-o", str(tok), "--max-frames", "3", *m, *extra)
        assert code == 0, err
        code, _, err = run_main(capsys, "detokenize", str(tok), "-o", str(tmp_path / name), *m, *extra)
        assert code == 0, err
        outs[name] = (
            load_tokens(tok).ids,
            np.stack([read_image(p) for p in sorted((tmp_path / name).glob("*.png"))]),
        )
    assert torch.equal(outs["full"][0], outs["tiled"][0])
    assert outs["full"][1].shape == outs["tiled"][1].shape == (3, 144, 176, 3)
    assert _psnr(outs["full"][1], outs["tiled"][1]) >= 30


# ---------------------------------------------------------------------------------------------- bad input


def _one_line_error(code: int, err: str, name: str) -> None:
    assert code == 1
    lines = [ln for ln in err.strip().splitlines() if "error" in ln]
    assert len(lines) == 1 and name in lines[0] and lines[0].startswith("magvit2 "), err


def test_bad_inputs_clear_errors_no_partial_output(tmp_path, capsys, model_dir, model):
    m = ("--model", str(model_dir), "-q")
    good = tmp_path / "good.mp4"
    write_video(good, _clip(1), fps=10, lossless=True)
    data = good.read_bytes()
    bad = {
        "truncated.mp4": data[: len(data) // 2],
        "empty.mp4": b"",
        "text.mp4": b"this is not a video\n" * 20,
    }
    for name, content in bad.items():
        (tmp_path / name).write_bytes(content)
        out = tmp_path / f"{name}.safetensors"
        code, _, err = run_main(capsys, "tokenize", str(tmp_path / name), "-o", str(out), *m)
        _one_line_error(code, err, name)
        assert not out.exists()
    # an output that exists is refused unless --overwrite
    out = tmp_path / "g.safetensors"
    assert run_main(capsys, "tokenize", str(good), "-o", str(out), *m)[0] == 0
    before = out.read_bytes()
    code, _, err = run_main(capsys, "tokenize", str(good), "-o", str(out), *m)
    _one_line_error(code, err, "g.safetensors")
    assert "--overwrite" in err and out.read_bytes() == before
    assert run_main(capsys, "tokenize", str(good), "-o", str(out), "--overwrite", *m)[0] == 0
    # token files: out-of-range id, other model, unknown version, truncated
    tf = load_tokens(out)
    fake = TokenFile(**{**tf.__dict__, "ids": tf.ids.clone()})
    fake.ids[0, 0, 0] = 5000  # vocabulary 1024
    save_tokens(tmp_path / "range.safetensors", fake)
    save_tokens(tmp_path / "frames.safetensors", TokenFile(**{**tf.__dict__, "frames": tf.frames + 40}))
    other = tmp_path / "other_model"
    torch.manual_seed(1)
    VideoTokenizer(TokenizerConfig.from_dict(TINY)).save_pretrained(other)
    tensors = load_file(out)
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = dict(f.metadata())
    save_file(tensors, str(tmp_path / "version.safetensors"), metadata={**meta, "version": "99"})
    (tmp_path / "trunc.safetensors").write_bytes(out.read_bytes()[:-40])
    cases = {
        "range.safetensors": ("out of range", m),
        "frames.safetensors": ("latent frames", m),
        "version.safetensors": ("version", m),
        "trunc.safetensors": ("truncated", m),
        "g.safetensors": ("another model", ("--model", str(other), "-q")),
    }
    for name, (what, margs) in cases.items():
        dest = tmp_path / f"{name}.mp4"
        code, _, err = run_main(capsys, "detokenize", str(tmp_path / name), "-o", str(dest), *margs)
        _one_line_error(code, err, name)
        assert what in err and not dest.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary leftovers
    # a --model that is neither a folder nor a built-in name: a clear message
    code, _, err = run_main(
        capsys, "tokenize", str(good), "-o", str(tmp_path / "x.safetensors"), "--model", "nope"
    )
    _one_line_error(code, err, "nope")
    assert "config.json" in err and not (tmp_path / "x.safetensors").exists()
    # no --model: the built-in model made the file
    assert run_main(capsys, "tokenize", str(good), "-o", str(tmp_path / "x.safetensors"), "-q")[0] == 0
    default = VideoTokenizer.from_pretrained("default")
    expect = model_fingerprint(default.config.to_dict(), default.state_dict())
    assert load_tokens(tmp_path / "x.safetensors").model == expect


def test_unusual_pixel_formats_are_converted(tmp_path, capsys, model_dir, model):
    frames = _clip(2, frames=3, h=16, w=24)
    gray = frames[..., :1].repeat(3, -1)
    with VideoWriter(tmp_path / "ten.mkv", 10, 24, 16, codec="ffv1", pix_fmt="yuv420p10le") as w:
        w.write_frames(frames)
    import av

    for name, fmt, arr in (("gray.png", "gray", gray[0, ..., 0]), ("rgba.png", "rgba", None)):
        arr = np.dstack([frames[0], np.full((16, 24), 77, np.uint8)]) if arr is None else arr
        ctx = av.CodecContext.create("png", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 24, 16, fmt
        vf = av.VideoFrame.from_ndarray(arr, format=fmt)
        (tmp_path / name).write_bytes(b"".join(bytes(p) for p in [*ctx.encode(vf), *ctx.encode(None)]))
    assert probe(tmp_path / "ten.mkv").bit_depth == 10 and probe(tmp_path / "rgba.png").has_alpha
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path), "-o", str(tmp_path / "out"), "--model", str(model_dir)
    )
    assert code == 0, err
    for name, src in (("gray.png", gray[:1]), ("rgba.png", frames[:1]), ("ten.mkv", None)):
        tf = load_tokens(tmp_path / "out" / f"{name}.safetensors")
        src = read_video(tmp_path / name) if src is None else src
        assert torch.equal(tf.ids, _reference_ids(model, src)), name


# ---------------------------------------------------------------------------------------- folders, shards


def _make_folder(root: Path, n: int, bad: tuple[str, ...] = ()) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / ("sub" if i % 2 else "") / f"clip{i}.mkv"
        p.parent.mkdir(exist_ok=True)
        write_video(p, _clip(i, frames=3 + i % 3, h=16, w=24), fps=10, lossless=True)
        paths.append(p)
    for name in bad:
        (root / name).write_bytes(b"\x00garbage" * 10)
    return paths


def test_folder_shards_resume_and_bad_files(tmp_path, capsys, model_dir, model):
    paths = _make_folder(tmp_path / "clips", 5, bad=("broken.mp4",))
    shards = tmp_path / "shards"
    m = ("--model", str(model_dir), "-q")
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path / "clips"), "-o", str(shards), "--shard-size", "2", *m
    )
    _one_line_error(code, err, "broken.mp4")  # reported, the others continue
    files = sorted(shards.glob("shard-*.parquet"))
    assert [f.name for f in files] == ["shard-00000.parquet", "shard-00001.parquet", "shard-00002.parquet"]
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert sorted(df["source"]) == sorted(str(p) for p in paths)
    for _, row in df.iterrows():
        frames = read_video(row["source"])
        ref = _reference_ids(model, frames)
        assert list(row["shape"]) == list(ref.shape) and row["frames"] == len(frames)
        assert np.array_equal(np.asarray(row["ids"]), ref.reshape(-1).numpy())
    # rerun: finished shards are skipped; a missing one is redone
    stamps = {f: f.stat().st_mtime_ns for f in files}
    files[1].unlink()
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path / "clips"), "-o", str(shards), "--shard-size", "2", *m
    )
    assert files[1].exists() and all(files[i].stat().st_mtime_ns == stamps[files[i]] for i in (0, 2))
    assert not [p for p in shards.iterdir() if ".tmp" in p.name]
    # other settings in the same folder are refused
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path / "clips"), "-o", str(shards), "--shard-size", "3", *m
    )
    assert code == 1 and "shard_size" in err
    fewer = ("--shard-size", "2", "--max-frames", "2")
    code, _, err = run_main(capsys, "tokenize", str(tmp_path / "clips"), "-o", str(shards), *fewer, *m)
    assert code == 1 and "max_frames" in err
    assert all(f.stat().st_mtime_ns == stamps[f] for f in (files[0], files[2]))
    code, out, _ = run_main(capsys, "info", str(shards), "--json")
    info = json.loads(out)
    assert info["clips"] == 5 and info["shards"] == 3 and any("broken.mp4" in f for f in info["failed"])
    # a shard row decodes like the token file of the same clip
    code, _, err = run_main(
        capsys, "detokenize", str(files[1]), "--row", "1", "-o", str(tmp_path / "row"), *m
    )
    assert code == 0, err
    row = pd.read_parquet(files[1]).iloc[1]
    ids = torch.as_tensor(np.asarray(row["ids"], dtype=np.int64)).reshape(*row["shape"])
    expected = to_uint8(model.decode(ids[None]))[0, : row["frames"], : row["height"], : row["width"]]
    got = np.stack([read_image(p) for p in sorted((tmp_path / "row").glob("*.png"))])
    assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() <= 1


def test_token_folder_rerun_skips_only_outputs_made_the_same_way(tmp_path, capsys, model_dir, model):
    """A rerun into a folder of token files skips the files already there and says so; with other
    settings (here fewer frames, or packed ids) it is refused instead of keeping stale tokens."""
    _make_folder(tmp_path / "clips", 3)
    out, m = tmp_path / "toks", ("--model", str(model_dir))
    code, _, err = run_main(capsys, "tokenize", str(tmp_path / "clips"), "-o", str(out), *m, "-q")
    assert code == 0, err
    first = load_tokens(out / "clip0.mkv.safetensors")
    code, _, err = run_main(capsys, "tokenize", str(tmp_path / "clips"), "-o", str(out), *m)
    assert code == 0 and "3 of 3 inputs already tokenized" in err
    for other in (("--max-frames", "2"), ("--packed",)):
        code, _, err = run_main(capsys, "tokenize", str(tmp_path / "clips"), "-o", str(out), *m, *other)
        _one_line_error(code, err, str(out))
        assert "other settings" in err and "--overwrite" in err, other
    assert torch.equal(load_tokens(out / "clip0.mkv.safetensors").ids, first.ids)
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path / "clips"), "-o", str(out), *m, "--max-frames", "2", "--overwrite"
    )
    assert code == 0 and load_tokens(out / "clip0.mkv.safetensors").frames == 2
    code, text, _ = run_main(capsys, "info", str(out), "--json")
    info = json.loads(text)
    tfs = [load_tokens(p) for p in sorted(out.rglob("*.safetensors"))]
    assert info["kind"] == "token files" and info["files"] == 3 and info["frames"] == 6
    assert info["tokens"] == sum(int(t.ids.numel()) for t in tfs) and info["manifest"]["max_frames"] == 2
    code, _, err = run_main(capsys, "info", str(tmp_path / "clips" / "clip0.mkv"))
    _one_line_error(code, err, "an image or video")


def test_out_of_range_options_are_usage_errors(tmp_path, capsys, model_dir):
    """Numbers that cannot work are refused when the arguments are read (exit 2, the option named),
    not turned into a traceback or silently into something else."""
    clip = tmp_path / "c.mkv"
    write_video(clip, _clip(0, frames=3, h=16, w=24), fps=10, lossless=True)
    m = ("--model", str(model_dir))
    for argv in (
        ("reconstruct", str(clip), "--max-frames", "0"),
        ("eval", str(clip), "--max-frames", "-1"),
        ("tokenize", str(clip), "-o", str(tmp_path / "t"), "--shard-size", "0"),
        ("reconstruct", str(clip), "--max-chunk-frames", "-5"),
        ("reconstruct", str(clip), "--batch-size", "0"),
        ("reconstruct", str(clip), "--refine-steps", "x"),
        ("reconstruct", str(clip), "--crf", "99"),
        ("reconstruct", str(clip), "--compare-frame", "-1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, *m])
        assert exit_info.value.code == 2, argv
        assert f"argument {argv[-2]}: expected an integer" in capsys.readouterr().err, argv
    # values the model cannot use: one-line errors naming the option (spatial factor 4 here)
    for extra, what in (
        (("--tile", "3"), "--tile"),
        (("--tile", "8", "--tile-overlap", "8"), "--tile-overlap"),
        (("--compare", str(tmp_path / "c.png"), "--compare-frame", "3"), "--compare-frame 3"),  # 3 frames
    ):
        code, _, err = run_main(capsys, "reconstruct", str(clip), *m, *extra)
        _one_line_error(code, err, what)


def test_torchrun_two_ranks_split_the_work(tmp_path, model_dir):
    _make_folder(tmp_path / "clips", 6)
    m = ("--model", str(model_dir), "-q", "--shard-size", "1")
    r = cli("tokenize", str(tmp_path / "clips"), "-o", str(tmp_path / "two"), *m, torchrun=2)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("tokenize", str(tmp_path / "clips"), "-o", str(tmp_path / "one"), *m)
    assert r.returncode == 0, r.stderr

    def rows(d):
        df = pd.concat([pd.read_parquet(f) for f in sorted(d.glob("shard-*.parquet"))], ignore_index=True)
        return df

    two, one = rows(tmp_path / "two"), rows(tmp_path / "one")
    assert len(two) == 6 and two["source"].is_unique
    assert sorted(two["source"]) == sorted(one["source"])
    for src in one["source"]:
        a, b = one[one["source"] == src].iloc[0], two[two["source"] == src].iloc[0]
        assert np.array_equal(np.asarray(a["ids"]), np.asarray(b["ids"]))


def test_datasets_reads_shards(tmp_path, capsys, model_dir):
    datasets = pytest.importorskip("datasets")
    _make_folder(tmp_path / "clips", 2)
    m = ("--model", str(model_dir), "-q", "--shard-size", "2")
    assert run_main(capsys, "tokenize", str(tmp_path / "clips"), "-o", str(tmp_path / "s"), *m)[0] == 0
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "s" / "*.parquet"), split="train")
    assert len(ds) == 2 and set(ds.column_names) >= {"source", "ids", "shape", "fps"}


def test_no_model_means_the_builtin_even_beside_a_folder_called_default(tmp_path, monkeypatch):
    """Without --model the CLI loads the package's built-in model by path: a ./default folder (here a
    different model) does not shadow it, and a missing built-in model is a clear error."""
    from magvit2.cli import common
    from magvit2.models.tokenizer import PRETRAINED_DIR

    monkeypatch.chdir(tmp_path)
    VideoTokenizer(TokenizerConfig(**TINY)).save_pretrained(tmp_path / "default")
    got = common.load_model(None)
    assert got.config == VideoTokenizer.from_pretrained(PRETRAINED_DIR / "default").config
    assert got.config != VideoTokenizer.from_pretrained("default").config  # "default" is the local folder
    monkeypatch.setattr(common, "BUILTIN_DIR", tmp_path / "missing")
    with pytest.raises(ValueError, match="built-in model is missing.*pass --model DIR"):
        common.load_model(None)


def test_flat_memory_only_when_asked(monkeypatch, tmp_path, capsys):
    """bound_heap_growth (flat memory over long videos) costs time (up to 2x on small frames, 1.7x for
    training): the streaming commands apply it with --flat-memory only, and nothing else does."""
    import magvit2.cli.main as cli_main

    calls = []
    monkeypatch.setattr(cli_main, "bound_heap_growth", lambda: calls.append(True))
    missing = str(tmp_path / "missing.mp4")
    for argv, bounded in (
        (["train", "--print-config"], False),
        (["reconstruct", missing], False),
        (["reconstruct", missing, "--flat-memory"], True),
        (["reconstruct", missing, "--flat-memory", "--refine-steps", "2"], True),
        (["tokenize", missing, "-o", str(tmp_path / "t")], False),
        (["tokenize", missing, "-o", str(tmp_path / "t"), "--flat-memory"], True),
        (["detokenize", missing, "-o", str(tmp_path / "d.mp4"), "--flat-memory"], True),
        (["eval", missing, "--flat-memory"], True),
        (["info", missing], False),
    ):
        calls.clear()
        main(argv)
        assert calls == ([True] if bounded else []), argv
    capsys.readouterr()


def test_broken_models_devices_and_checkpoints_are_one_line_errors(tmp_path, capsys, model_dir):
    """Damaged model folders, a config that does not fit the weights, unusable devices and files that
    are not checkpoints: one line naming the file or option, no traceback."""
    import shutil

    clip = tmp_path / "c.mkv"
    write_video(clip, _clip(0, frames=3, h=16, w=24), fps=10, lossless=True)
    truncated = tmp_path / "truncated"
    shutil.copytree(model_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    other = tmp_path / "other_config"
    shutil.copytree(model_dir, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["quantizer"]["bits"] = 8  # the weights are for 10 bits
    (other / "config.json").write_text(json.dumps(cfg))
    not_json = tmp_path / "not_json"
    shutil.copytree(model_dir, not_json)
    (not_json / "config.json").write_text("{'bits': 10}")
    cases = [
        (("--model", str(truncated)), "model.safetensors: not a readable safetensors file"),
        (("--model", str(other)), "model.safetensors: weights do not match config.json"),
        (("--model", str(not_json)), "config.json: not valid JSON"),
        (("--model", str(model_dir), "--device", "cpu:1"), "--device cpu:1"),
    ]
    for extra, what in cases:
        code, _, err = run_main(capsys, "reconstruct", str(clip), *extra)
        _one_line_error(code, err, what)
    for name, content in (("fake.ckpt", b"not a checkpoint\n"), ("empty.ckpt", b"")):
        (tmp_path / name).write_bytes(content)
        argv = ("convert", "open-magvit2", str(tmp_path / name), str(tmp_path / "out"))
        code, _, err = run_main(capsys, *argv)
        _one_line_error(code, err, f"{name}: not a checkpoint")


def test_frames_smaller_than_the_ssim_window_report_psnr_and_no_ssim(tmp_path, capsys, model_dir, model):
    """A 7x9 image: reconstruct writes its output and reports PSNR with SSIM null (the 11-px window
    does not fit), eval averages SSIM over the files that have it; a one-input -o with another
    extension than .safetensors is refused instead of becoming a folder."""
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    rng = np.random.default_rng(0)
    write_png(small, rng.integers(0, 256, (7, 9, 3)).astype(np.uint8))
    write_png(big, rng.integers(0, 256, (16, 24, 3)).astype(np.uint8))
    m = ("--model", str(model_dir))
    code, out, err = run_main(capsys, "reconstruct", str(small), "-o", str(tmp_path / "r.png"), "--json", *m)
    assert code == 0, err
    result = json.loads(out)
    src, rec = read_image(small), read_image(tmp_path / "r.png")
    mse = ((src.astype(np.float64) - rec) ** 2).mean()
    assert result["ssim"] is None and abs(result["psnr"] - 10 * np.log10(255**2 / mse)) < 1e-3
    json_out = ("--json-out", str(tmp_path / "e.json"))
    code, out, err = run_main(capsys, "eval", str(small), str(big), *m, *json_out)
    assert code == 0, err
    res = json.loads((tmp_path / "e.json").read_text())
    assert [r["ssim"] is None for r in res["files"]] == [False, True]  # big.png sorts first
    assert res["mean"]["ssim"] == res["files"][0]["ssim"] and "n/a" in out
    code, _, err = run_main(capsys, "tokenize", str(small), "-o", str(tmp_path / "t.safetensor"), *m)
    _one_line_error(code, err, "t.safetensor")
    assert not (tmp_path / "t.safetensor").exists()


def test_inputs_that_share_a_name_get_distinct_outputs(tmp_path, capsys, model_dir, monkeypatch):
    """``tokenize A/clip.mkv B/clip.mkv -o out`` (or a glob ``data/*/clip.mkv``) writes two token files,
    named by their path under the inputs' common folder; a rerun skips both; the same file given twice
    is refused before any work, naming it."""
    m = ("--model", str(model_dir), "-q")
    for i, name in enumerate(("A", "B")):
        (tmp_path / "data" / name).mkdir(parents=True)
        write_video(tmp_path / "data" / name / "clip.mkv", _clip(7 * i, frames=3, h=16, w=24), fps=10,
                    lossless=True)  # fmt: skip
    monkeypatch.chdir(tmp_path / "data")
    code, _, err = run_main(capsys, "tokenize", "A/clip.mkv", "B/clip.mkv", "-o", str(tmp_path / "out"), *m)
    assert code == 0, err
    a, b = (load_tokens(tmp_path / "out" / n / "clip.mkv.safetensors") for n in ("A", "B"))
    assert not torch.equal(a.ids, b.ids)
    code, _, err = run_main(
        capsys, "tokenize", "A/clip.mkv", "B/clip.mkv", "-o", str(tmp_path / "out"), *m[:2]
    )
    assert code == 0 and "2 of 2 inputs already tokenized" in err
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path / "data" / "*" / "clip.mkv"), "-o", "globbed", *m
    )
    assert code == 0 and sorted(p.name for p in (tmp_path / "data" / "globbed").glob("?")) == ["A", "B"]
    code, _, err = run_main(capsys, "tokenize", "A/clip.mkv", str(tmp_path / "data" / "A" / "clip.mkv"),
                            "-o", "twice", *m)  # fmt: skip
    _one_line_error(code, err, "A/clip.mkv")
    assert "same file" in err and not (tmp_path / "data" / "twice").exists()


def test_shard_folder_loads_with_pandas_and_datasets(tmp_path, capsys, model_dir, monkeypatch):
    """A shard folder is a Parquet data set: ``pandas.read_parquet(folder)`` and
    ``datasets.load_dataset("parquet", data_dir=folder)`` read every clip (the settings file's name
    starts with a dot, which both skip; ``datasets`` does not skip a leading ``_``). A folder made
    with the old settings-file name still resumes."""
    _make_folder(tmp_path / "clips", 3)
    shards, m = tmp_path / "shards", ("--model", str(model_dir), "-q")
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path / "clips"), "-o", str(shards), "--shard-size", "2", *m
    )
    assert code == 0, err
    frame = pd.read_parquet(shards)
    assert len(frame) == 3 and set(frame["frames"]) == {3, 4, 5}
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    loaded = datasets.load_dataset("parquet", data_dir=str(shards), cache_dir=str(tmp_path / "hf"))
    assert loaded["train"].num_rows == 3 and sorted(loaded["train"]["frames"]) == [3, 4, 5]
    (shards / ".magvit2-shards.json").rename(shards / "magvit2-shards.json")  # a folder from before
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path / "clips"), "-o", str(shards), "--shard-size", "2", *m
    )
    assert code == 0, err
    assert (shards / ".magvit2-shards.json").is_file() and not (shards / "magvit2-shards.json").exists()


def test_damaged_token_file_is_refused_by_detokenize_and_info(tmp_path, capsys, model_dir):
    """One flipped bit in a token file's ids (the id stays in range) is refused in one line by
    ``detokenize`` and ``info``, no output written; so is a changed row of a shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    m = ("--model", str(model_dir), "-q")
    write_video(tmp_path / "c.mkv", _clip(0, frames=3, h=16, w=24), fps=10, lossless=True)
    tok = tmp_path / "c.safetensors"
    assert run_main(capsys, "tokenize", str(tmp_path / "c.mkv"), "-o", str(tok), *m)[0] == 0
    data = bytearray(tok.read_bytes())
    data[8 + int.from_bytes(data[:8], "little")] ^= 1
    tok.write_bytes(bytes(data))
    for args in (("detokenize", str(tok), "-o", str(tmp_path / "c.mp4"), *m), ("info", str(tok))):
        code, _, err = run_main(capsys, *args)
        _one_line_error(code, err, "c.safetensors: damaged token file")
    assert not (tmp_path / "c.mp4").exists()
    shards = tmp_path / "shards"
    assert (
        run_main(capsys, "tokenize", str(tmp_path / "c.mkv"), "-o", str(shards), "--shard-size", "1", *m)[0]
        == 0
    )
    shard = shards / "shard-00000.parquet"
    table = pq.read_table(shard)
    ids = table.column("ids").to_pylist()
    ids[0][0] ^= 1
    column = pa.array(ids, pa.list_(pa.int32()))
    pq.write_table(table.set_column(table.schema.get_field_index("ids"), "ids", column), shard)
    for args in (
        ("detokenize", str(shard), "--row", "0", "-o", str(tmp_path / "r.mp4"), *m),
        ("info", str(shards)),
    ):
        code, _, err = run_main(capsys, *args)
        _one_line_error(code, err, "row 0: damaged shard row")


LFQ10 = {"kind": "lfq", "bits": 10}
MALFORMED_MODEL_CONFIGS = {
    "ch a string": ({"ch": "16"}, "ch: expected int"),
    "ch a float": ({"ch": 16.0}, "ch: expected int"),
    "ch_mult an int": ({"ch_mult": 5}, "ch_mult: expected list of int"),
    "norm_groups 0": ({"norm_groups": 0}, "norm_groups: expected a number > 0"),
    "norm_eps not a number": ({"norm_eps": "abc"}, "norm_eps: expected float"),
    "feedback on": ({"feedback": True}, "feedback encoding was removed"),  # the previous built-in model
    "quantizer null": ({"quantizer": None}, "quantizer: expected a mapping"),
    "bits not a number": ({"quantizer": {"kind": "lfq", "bits": "x"}}, "quantizer.bits: expected int"),
    "unknown quantizer key": ({"quantizer": {**LFQ10, "colour": 1}}, "unknown field(s) ['colour']"),
    "unknown option": ({"quantizer": {**LFQ10, "options": {"nonsense": 1}}}, "unknown option(s)"),
    "options a list": ({"quantizer": {**LFQ10, "options": [1]}}, "options: expected a mapping"),
    "the whole file a list": ([1, 2], "expected a mapping of TokenizerConfig fields"),
}  # fmt: skip


@pytest.mark.parametrize("variant", list(MALFORMED_MODEL_CONFIGS))
def test_malformed_model_config_is_one_line_naming_file_and_field(tmp_path, capsys, model_dir, variant):
    """Each malformed model config gives one line naming the file, the field and the expectation in
    ``tokenize --model``, ``info`` and ``train --set model.config=...`` (no traceback)."""
    change, expected = MALFORMED_MODEL_CONFIGS[variant]
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    config = json.loads((model_dir / "config.json").read_text())
    (folder / "config.json").write_text(
        json.dumps({**config, **change} if isinstance(change, dict) else change)
    )
    clip = tmp_path / "c.png"
    write_png(clip, _clip(0, frames=1, h=16, w=16)[0])
    for args in (("tokenize", str(clip), "-o", str(tmp_path / "c.safetensors"), "--model", str(folder)),
                 ("info", str(folder))):  # fmt: skip
        code, _, err = run_main(capsys, *args)
        _one_line_error(code, err, f"{folder / 'config.json'}: ")
        assert expected in err, err
    run = tmp_path / "run.yaml"
    run.write_text(
        "output_dir: out\nmodel: {preset: null, config: {ch: 8, ch_mult: [1, 2], norm_groups: 4}}\n"
    )
    small = {"ch": 8, "ch_mult": [1, 2], "norm_groups": 4}
    model_config = json.dumps({**small, **change} if isinstance(change, dict) else change)
    code, _, err = run_main(
        capsys, "train", str(run), "--set", f"model.config={model_config}", "--print-config"
    )
    _one_line_error(code, err, "run.yaml" if isinstance(change, dict) else "--set model.config=[1, 2]")
    assert (
        "model.config" in err and (expected if isinstance(change, dict) else "expected a mapping") in err
    ), err


def test_bad_set_values_are_one_line(tmp_path, capsys):
    """``--set max_steps=[1`` (not YAML) and a python tag given through ``--set`` are one line each, as
    the same tag in a config file is."""
    run = tmp_path / "run.yaml"
    run.write_text("output_dir: out\n")
    for value in ("max_steps=[1", 'output_dir=!!python/object/apply:os.system ["touch RAN"]'):
        code, _, err = run_main(capsys, "train", str(run), "--set", value, "--print-config")
        _one_line_error(code, err, f"--set {value}")
        assert "expected a plain YAML value" in err
    run.write_text('output_dir: !!python/object/apply:os.system ["touch RAN"]\n')
    code, _, err = run_main(capsys, "train", str(run), "--print-config")
    _one_line_error(code, err, "run.yaml")
    assert not (tmp_path / "RAN").exists() and not Path("RAN").exists()


def test_next_run_removes_temporaries_of_killed_runs(tmp_path, capsys, model_dir):
    """A shard (``.shard-N.tmp-PID.parquet``), a token file and a PNG-frames folder
    (``.frames.tmp-PID/``) half-written by a process that is gone are removed by the next run that
    writes there; a live process's are kept."""
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)  # fmt: skip
    m = ("--model", str(model_dir), "-q")
    _make_folder(tmp_path / "clips", 2)
    shards, toks, frames = tmp_path / "shards", tmp_path / "toks", tmp_path / "frames"
    for folder in (shards, toks):
        folder.mkdir()
    stale = [shards / f".shard-00000.tmp-{dead}.parquet", toks / "sub" / f".clip1.mkv.tmp-{dead}.safetensors",
             tmp_path / f".frames.tmp-{dead}"]  # fmt: skip
    live = shards / ".shard-00001.tmp-1.parquet"  # pid 1 runs
    stale[1].parent.mkdir()
    for p in [stale[0], stale[1], live]:
        p.write_bytes(b"PAR1")
    stale[2].mkdir()
    assert (
        run_main(capsys, "tokenize", str(tmp_path / "clips"), "-o", str(shards), "--shard-size", "1", *m)[0]
        == 0
    )
    assert run_main(capsys, "tokenize", str(tmp_path / "clips"), "-o", str(toks), *m)[0] == 0
    code, _, err = run_main(capsys, "detokenize", str(toks / "clip0.mkv.safetensors"), "-o", str(frames), *m)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and live.exists() and len(list(frames.glob("*.png"))) == 3


def test_frame_too_large_for_memory_is_one_line_suggesting_tile(tmp_path, model_dir):
    """A 3000x3000 PNG (small on disk) under a 1 GiB address-space limit is refused before the model
    runs, in one line that names the file and suggests --tile; should the estimate miss, the
    allocator's failure is one line suggesting --tile too, not a traceback."""
    big = tmp_path / "big.png"
    write_png(big, np.zeros((3000, 3000, 3), np.uint8))
    script = (
        "import resource, sys, torch\n"
        "import magvit2.inference.streaming as s\n"
        "from magvit2.cli.main import main\n"
        "if sys.argv[1] == 'no-estimate': s.check_fits = lambda *a, **k: None\n"
        "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
        "resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, resource.RLIM_INFINITY))\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    args = ["tokenize", str(big), "-o", str(tmp_path / "big.safetensors"), "--model", str(model_dir), "-q"]
    for mode, expected in (("estimate", "needs about"), ("no-estimate", "out of memory")):
        r = subprocess.run(
            [sys.executable, "-c", script, mode, *args], capture_output=True, text=True, env=env
        )
        _one_line_error(r.returncode, r.stderr, "--tile")
        assert expected in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "big.png" in r.stderr or mode == "no-estimate", r.stderr
    assert not (tmp_path / "big.safetensors").exists()


def test_shard_rerun_reports_earlier_failures_and_retries_them(tmp_path, capsys, model_dir):
    """A rerun into a shard folder whose shards record failed inputs exits 1 and names them (they are
    not silently "done"); --retry-failed redoes those shards, and then everything is in them."""
    m = ("--model", str(model_dir), "-q")
    _make_folder(tmp_path / "clips", 2, bad=("broken.mp4",))
    shards = tmp_path / "shards"
    run = ("tokenize", str(tmp_path / "clips"), "-o", str(shards), "--shard-size", "2", *m)
    assert run_main(capsys, *run)[0] == 1
    code, _, err = run_main(capsys, *run)
    assert (
        code == 1
        and "1 inputs failed in an earlier run" in err
        and "broken.mp4" in err
        and "--retry-failed" in err
    )
    write_video(tmp_path / "clips" / "broken.mp4", _clip(3, frames=3, h=16, w=24), fps=10, lossless=True)
    code, _, err = run_main(capsys, *run, "--retry-failed")
    assert code == 0, err
    assert len(pd.read_parquet(shards)) == 3 and run_main(capsys, *run)[0] == 0


def test_file_name_not_utf8_is_reported_per_file_in_shard_mode(tmp_path, capsys, model_dir):
    """A file name that is not valid UTF-8 fails that file alone, in a line naming it; the other
    inputs are tokenized into the shard."""
    m = ("--model", str(model_dir), "-q")
    _make_folder(tmp_path / "clips", 1)
    odd = os.fsdecode(os.fsencode(str(tmp_path / "clips")) + b"/bad\xff.mkv")
    write_video(odd, _clip(1, frames=3, h=16, w=24), fps=10, lossless=True)
    shards = tmp_path / "shards"
    code, _, err = run_main(
        capsys, "tokenize", str(tmp_path / "clips"), "-o", str(shards), "--shard-size", "5", *m
    )
    _one_line_error(code, err, "not valid UTF-8")
    assert "bad" in err and len(pd.read_parquet(shards)) == 1


def test_variable_frame_rate_input_is_reported(tmp_path, capsys, caplog, model_dir):
    """Tokenizing a video whose frames are unevenly spaced says so (the token file keeps one rate);
    an evenly spaced one says nothing."""
    import av

    def write(path: Path, times_ms: list[int]) -> None:
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            stream.time_base = Fraction(1, 1000)
            for i, t in enumerate(times_ms):
                frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 30 * i, np.uint8), format="rgb24")
                frame.pts, frame.time_base = t, Fraction(1, 1000)
                out.mux(stream.encode(frame))
            out.mux(stream.encode())

    write(tmp_path / "vfr.mkv", [0, 100, 200, 400, 500])
    write(tmp_path / "cfr.mkv", [0, 100, 200, 300, 400])
    m = ("--model", str(model_dir), "-q")
    with caplog.at_level("WARNING", logger="magvit2.tokenize"):
        for name in ("vfr", "cfr"):
            code, _, err = run_main(
                capsys, "tokenize", str(tmp_path / f"{name}.mkv"), "-o", str(tmp_path / name), *m
            )
            assert code == 0, err
    assert "vfr.mkv: variable frame rate (frames 100.0 to 200.0 ms apart)" in caplog.text
    assert "cfr.mkv" not in caplog.text


def test_full_disk_errors_name_the_output(tmp_path, model_dir):
    """A write the disk refuses (here: over the file-size limit, EFBIG, as ENOSPC and EROFS are
    handled) is one line naming the output, for shards, videos and PNG frame folders."""
    script = (
        "import resource, signal, sys\n"
        "from magvit2.cli.main import main\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))\n"
        "sys.exit(main(sys.argv[2:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    clip, tok, m = tmp_path / "c.mkv", tmp_path / "c.safetensors", ("--model", str(model_dir), "-q")
    write_video(clip, np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8), fps=10)
    assert main(["tokenize", str(clip), "-o", str(tok), *m]) == 0
    for limit, args, name in (
        (
            1000,
            ("tokenize", str(clip), "-o", str(tmp_path / "sh"), "--shard-size", "1"),
            "sh/shard-00000.parquet",
        ),
        (100, ("detokenize", str(tok), "-o", str(tmp_path / "v.mp4")), "v.mp4"),
        (100, ("detokenize", str(tok), "-o", str(tmp_path / "frames")), "frames"),
    ):
        cmd = [sys.executable, "-c", script, str(limit), *args, *m]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        _one_line_error(r.returncode, r.stderr, f"{tmp_path / name}: cannot write (")
