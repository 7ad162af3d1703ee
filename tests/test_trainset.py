"""The training-set builder and the built-in model's training script."""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from magvit2 import VideoTokenizer
from magvit2.data.trainset import TrainsetConfig, build_trainset
from magvit2.models import get_preset

ROOT = Path(__file__).resolve().parents[1]


def _sources(tmp_path: Path) -> tuple[list[Path], list[Path]]:
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    scenes = []
    for i in range(12):
        p = src / f"scene{i}.png"
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(p)
        scenes.append(p)
    Image.fromarray(np.full((300, 400, 3), 90, np.uint8)).save(src / "flat.png")  # one colour: skipped
    Image.fromarray(rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)).save(src / "small.png")  # too small
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(
        src / "carphone_x.png"
    )  # held out
    stamps = []
    for i in range(6):
        a = np.zeros((40, 30, 4), np.uint8)
        a[5:35, 5:25] = (200, 30, 30, 255)
        stamps.append(src / f"stamp{i}.png")
        Image.fromarray(a).save(stamps[-1])
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8) | 252).save(src / "opaque.png")
    extra = [src / n for n in ("flat.png", "small.png", "carphone_x.png")]
    return scenes + extra, stamps + [src / "opaque.png"]


def test_build_trainset_splits_scales_and_skips(tmp_path, clips_dir):
    scenes, stamps = _sources(tmp_path)
    cfg = TrainsetConfig(scene_side=120, val_share=0.25, val_frames=4)
    manifest = build_trainset(tmp_path / "set", cfg, scenes=scenes, stamps=stamps,
                              video=clips_dir / "bigbuckbunny.mp4")  # fmt: skip
    out = tmp_path / "set"
    assert manifest["scenes"]["train"] + manifest["scenes"]["val"] == 12  # flat, small, held-out skipped
    assert manifest["stamps"]["train"] + manifest["stamps"]["val"] == 6  # the opaque one skipped
    assert manifest["scenes"]["val"] >= 1 and manifest["video"] == {"train": 128, "val": 4}
    first = Image.open(sorted((out / "scenes" / "train").glob("*.jpg"))[0])
    assert min(first.size) == 120
    assert json.loads((out / "manifest.json").read_text()) == manifest
    moved = tmp_path / "elsewhere" / "src"  # the same files in another place split the same way
    shutil.copytree(tmp_path / "src", moved)
    again = build_trainset(tmp_path / "again", cfg, scenes=[moved / p.name for p in scenes],
                           stamps=[moved / p.name for p in stamps], video=None)  # fmt: skip
    assert again["scenes"] == manifest["scenes"]
    for split in ("train", "val"):
        first = sorted((out / "scenes" / split).glob("*.jpg"))
        second = sorted((tmp_path / "again" / "scenes" / split).glob("*.jpg"))
        assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    with pytest.raises(ValueError, match="held-out"):
        build_trainset(tmp_path / "bad", cfg, scenes=scenes, stamps=stamps, video=clips_dir / "bikes.mp4")
    with pytest.raises(ValueError, match="empty folder"):
        build_trainset(out, cfg, scenes=scenes, stamps=stamps, video=None)


def _run(args: list[str]) -> list[dict]:
    script = str(ROOT / "scripts" / "train_default.py")
    env = {"PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, script, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


def _tiny_run_options(tmp_path: Path) -> list[str]:
    """A small training set under ``tmp_path`` and train_default.py options for a seconds-long run on it
    (tiny preset, 5-frame 32-pixel clips, validation and a checkpoint every 3 steps)."""
    scenes, stamps = _sources(tmp_path)
    data = tmp_path / "set"
    build_trainset(
        data, TrainsetConfig(scene_side=96, val_share=0.25), scenes=scenes, stamps=stamps, video=None
    )
    return ["--data", str(data), "--preset", "tiny", "--batch", "1", "--image-batch", "2", "--size", "32",
            "--frames", "5", "--val-every", "3", "--val-clips", "2", "--checkpoint-every", "3"]  # fmt: skip


def test_training_script_resumes_bit_identically(tmp_path):
    """Six steps in one go equal three steps, a stop, and three more with --resume; the best model is
    written with its validation score."""
    common = [*_tiny_run_options(tmp_path), "--warmup", "2", "--threads", "1"]
    whole = _run([*common, "--out", str(tmp_path / "a"), "--steps", "6"])
    _run([*common, "--out", str(tmp_path / "b"), "--steps", "3"])
    resumed = _run([*common, "--out", str(tmp_path / "b"), "--steps", "6", "--resume"])
    assert resumed[0] == {"resumed": str(tmp_path / "b" / "checkpoints" / "step-00000003"), "step": 3}
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    scores = [r for r in whole if "val_video" in r]
    assert [r["step"] for r in scores] == [3, 6] and all(np.isfinite(r["val_video"]) for r in scores)
    assert (tmp_path / "a" / "best" / "model.safetensors").is_file()


def test_guarded_run_keeps_no_weights_worse_than_its_init(tmp_path):
    """A run that ruins its --init weights (learning rate 0.5) logs their validation as step 0 and,
    with --guard, never writes OUT/best; the same run without --guard keeps its best checkpoint."""
    common = [*_tiny_run_options(tmp_path), "--warmup", "1", "--steps", "3", "--threads", "1"]
    _run([*common, "--out", str(tmp_path / "init")])
    init = str(tmp_path / "init" / "best")
    ruin = [*common, "--init", init, "--lr", "0.5"]
    guarded = _run([*ruin, "--out", str(tmp_path / "guarded"), "--guard"])
    floor, last = [r for r in guarded if "val_video" in r]
    assert floor["step"] == 0 and floor["init"] == init and last["step"] == 3
    assert last["val_video"] < floor["val_video"] and last["best"] is False
    assert not (tmp_path / "guarded" / "best").exists()
    plain = _run([*ruin, "--out", str(tmp_path / "plain")])
    assert [r["best"] for r in plain if "val_video" in r] == [True]
    assert (tmp_path / "plain" / "best" / "model.safetensors").is_file()


def test_zero_steps_writes_the_init_weights_under_the_new_code(tmp_path):
    """--steps 0 with --mean-slope-bits 2 turns a model with 2 learned bits into one whose bits are all
    fixed: OUT/best holds the --init decoder (fp16), no encoder, the new config, and its validation."""
    torch.manual_seed(0)
    source = VideoTokenizer(replace(get_preset("tiny"), mean_bits=(6, 5, 5)))
    init = source.save_pretrained(tmp_path / "init")
    out = tmp_path / "conv"
    options = [
        "--init",
        str(init),
        "--mean-slope-bits",
        "2",
        "--steps",
        "0",
        "--out",
        str(out),
        "--threads",
        "1",
    ]
    records = _run([*_tiny_run_options(tmp_path), *options])
    (scores,) = [r for r in records if "val_video" in r]
    assert scores["step"] == 0 and scores["best"] is True and records[-1]["best_score"] == scores["score"]
    best = VideoTokenizer.from_pretrained(out / "best")
    assert best.config.mean_slope_bits == 2 and best.config.learned_channels == 0
    mine, theirs = best.state_dict(), source.state_dict()
    assert mine and not any(k.startswith("encoder.") for k in mine)
    assert all(torch.equal(v, theirs[k].half().float()) for k, v in mine.items())


def _run_gpu_script(data: str, out: Path, options: list[str], python: str = sys.executable):
    script = ROOT / "scripts" / "train_default_gpu.sh"
    env = {"PATH": "/usr/bin:/bin", "PYTHON": python}
    cmd = ["bash", str(script), data, str(out), *options]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


STUB = """import json, pathlib, sys
out = pathlib.Path(sys.argv[sys.argv.index("--out") + 1])
(out / "log.jsonl").write_text(json.dumps({"argv": sys.argv[1:]}) + "\\n")
if "--keep" in sys.argv:
    (out / "best").mkdir()
    (out / "best" / "model.safetensors").write_bytes(b"weights")
"""


def test_gpu_script_passes_the_recipe_then_the_options_and_brings_back_best(tmp_path, train_default):
    """scripts/train_default_gpu.sh with a stand-in for train_default.py: the recipe's options come
    first and the caller's after them (so they win), train_default.py accepts them all, the log and
    best/ come back to OUT, a run with no best/ says so, and a folder that is no training set is
    refused in one line. (What --guard keeps is tested on a real run above.)"""
    stub = tmp_path / "python"  # stands in for the interpreter: gets train_default.py and its options
    stub.write_text(f"#!{sys.executable}\n{STUB}")
    stub.chmod(0o755)
    data = tmp_path / "set"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    python = str(stub)
    kept = _run_gpu_script(str(data), tmp_path / "a", ["--minutes", "3", "--keep"], python=python)
    assert kept.returncode == 0, kept.stderr
    argv = json.loads((tmp_path / "a" / "log.jsonl").read_text())["argv"]
    assert argv[0].endswith("scripts/train_default.py") and argv[-3:] == ["--minutes", "3", "--keep"]
    assert argv[argv.index("--data") + 1] == str(data) and "--guard" in argv
    assert argv[argv.index("--init") + 1].endswith("src/magvit2/pretrained/default")
    assert argv.index("--minutes") < len(argv) - 3  # the recipe's own budget, overridden by the caller's
    args = train_default.parse_args([a for a in argv[1:] if a != "--keep"])
    assert args.guard and args.minutes == 3 and args.frames == 33 and args.batch == 16
    assert args.decoder_network == "yes"  # the built-in model has none: the run adds one
    assert (tmp_path / "a" / "best" / "model.safetensors").read_bytes() == b"weights"
    assert "kept:" in kept.stdout
    none = _run_gpu_script(str(data), tmp_path / "b", [], python=python)
    assert none.returncode == 0 and "nothing kept" in none.stdout
    assert not (tmp_path / "b" / "best").exists() and (tmp_path / "b" / "log.jsonl").is_file()
    refused = _run_gpu_script(str(tmp_path), tmp_path / "c", [])
    assert refused.returncode == 2 and "not a training set folder" in refused.stderr


def test_a_model_with_no_weights_gets_its_detail_patterns_fitted_and_validated(tmp_path):
    """The built-in model's recipe on a small training set: every bit fixed, no decoder network, so
    the script fits the pattern table (seeded: a rerun gives the same table), logs the fit and the
    validation, and writes OUT/best; its patterns lower the error the fit reports."""
    options = ["--mean-bits", "6", "6", "6", "--mean-slope", "0.75", "--mean-chroma-share", "2",
               "--mean-detail-bits", "9", "--decoder-network", "no", "--fit-clips", "8", "--fit-iters", "5",
               "--threads", "1"]  # fmt: skip
    base = _tiny_run_options(tmp_path)
    records = _run([*base, *options, "--out", str(tmp_path / "a")])
    (scores,) = [r for r in records if "val_video" in r]
    assert scores["fit"]["mse_after"] < 0.8 * scores["fit"]["mse_before"] and scores["best"] is True
    logged = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert logged[-1] == scores and logged[0]["args"]["fit_clips"] == 8
    best = VideoTokenizer.from_pretrained(tmp_path / "a" / "best")
    assert not list(best.parameters()) and best.config.mean_detail_bits == 9
    _run([*base, *options, "--out", str(tmp_path / "b")])
    again = VideoTokenizer.from_pretrained(tmp_path / "b" / "best")
    assert torch.equal(again.decoder.block_mean.detail, best.decoder.block_mean.detail)
