"""Masked against autoregressive video LM, side by side on the same shards for the same training time.

    python benchmarks/lm_demo.py --out runs/lm_demo                   # clips and shards (and an AR run)
    python benchmarks/lm_masked.py --demo runs/lm_demo --out runs/side --minutes 13

Trains ``configs/lm/bigbuckbunny.yaml`` (autoregressive) and ``configs/lm/masked_bigbuckbunny.yaml``
(masked; the same network size and tokens per step) at the same time with the same time limit, one
thread each, on the demo's training shards, both with the learning-rate schedule (and the
autoregressive model's progressive stages) scaled to ``--steps`` and no validation during training;
then, for each, ``magvit2 lm eval`` on the demo's held-out
clips (bits per token; frame prediction: 13 frames given, 16 generated, PSNR/SSIM against the source
frames and against repeating the last given frame) and the model calls and wall time of generating one
continuation. ``--ar DIR --masked DIR`` score LM folders that exist instead of training; ``--smoke`` times one
continuation of tiny random models of both kinds (no data) and prints it.
Results: ``OUT/side_by_side.json`` (with every command).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

CONFIGS = {"ar": "configs/lm/bigbuckbunny.yaml", "masked": "configs/lm/masked_bigbuckbunny.yaml"}
PROMPT_FRAMES, FRAMES = 13, 29  # 4 latent frames given, 4 generated (4x temporal tokenizer)


def command(*args: str) -> list[str]:
    """``magvit2 ARGS`` as run here (this checkout's sources, one thread)."""
    return [sys.executable, "-m", "magvit2.cli.main", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def scaled_stages(config: Path, steps: int) -> str:
    """The config's ``data.stages`` with their start steps scaled from its ``max_steps`` to ``steps``
    (as a ``--set`` value; empty when it has none)."""
    import yaml

    cfg = yaml.safe_load(config.read_text())
    stages = cfg["data"].get("stages") or []
    scaled = [{**s, "start_step": s["start_step"] * steps // cfg["max_steps"]} for s in stages]
    return "[" + ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in s.items()) + "}" for s in scaled) + "]"


def train_both(shards: Path, out: Path, minutes: float, steps: int, log: list) -> dict[str, Path]:
    """Both LMs trained at once (the same CPU share), each stopped by the same time limit."""
    runs, procs = {}, {}
    for kind, cfg in CONFIGS.items():
        run = out / kind
        sets = [f"output_dir={run}", f"data.paths=[{shards / 'train'}]",
                f"validation.paths=[{shards / 'val'}]",
                f"time_limit_minutes={minutes}", f"max_steps={steps}", f"checkpoint_every={steps}",
                "optim.warmup_steps=20", "validation.every=0", "num_threads=1", "progress=false"]  # fmt: skip
        if kind == "ar":
            sets.append(f"data.stages={scaled_stages(ROOT / cfg, steps)}")
        args = ["lm", "train", str(ROOT / cfg), *[a for s in sets for a in ("--set", s)]]
        log.append({"command": "magvit2 " + shlex.join(args)})
        print(f"$ {log[-1]['command']}", flush=True)
        procs[kind] = subprocess.Popen(command(*args), env=env(), stdout=subprocess.DEVNULL)
        runs[kind] = run / "final"
    for kind, proc in procs.items():
        if proc.wait() not in (0, 75):
            raise SystemExit(f"training the {kind} LM failed ({proc.returncode})")
    return runs


def evaluate(lm: Path, clips: Path, log: list) -> dict:
    """``magvit2 lm eval`` on the held-out clips -> its JSON report."""
    args = ["lm", "eval", "--lm", str(lm), str(clips), "--prompt-frames", str(PROMPT_FRAMES),
            "--continuations", "5", "--steps", "12", "--device", "cpu", "--json"]  # fmt: skip
    log.append({"command": "magvit2 " + shlex.join(args)})
    print(f"$ {log[-1]['command']}", flush=True)
    t0 = time.perf_counter()
    run = subprocess.run(command(*args), env=env(), stdout=subprocess.PIPE, text=True, check=True)
    log[-1]["seconds"] = round(time.perf_counter() - t0, 1)
    return json.loads(run.stdout)


def count_calls(model) -> list:
    """Make ``model.hidden`` (every model call of both kinds) append to the returned list."""
    calls, hidden = [], model.hidden
    model.hidden = lambda *a, **k: calls.append(1) or hidden(*a, **k)
    return calls


def generation_cost(lm_dir: Path, clip: Path, repeats: int = 2) -> dict:
    """Model calls and wall time of one continuation (13 frames given, 29 in all), the LM alone and with
    the tokenizer's decoding; the best of ``repeats``."""
    import torch

    from magvit2.lm.pipeline import generate, load_lm, prompt_ids, whole_latent_frames
    from magvit2.lm.sampling import SamplingOptions

    torch.set_num_threads(1)
    lm = load_lm(lm_dir, "cpu")
    prompt, _ = prompt_ids(lm, clip, PROMPT_FRAMES)
    latent = whole_latent_frames(FRAMES, lm.t)
    calls = count_calls(lm.model)
    decode, times = lm.decode, {"total": [], "decode": []}

    def timed_decode(ids):
        t = time.perf_counter()
        video = decode(ids)
        times["decode"].append(time.perf_counter() - t)
        return video

    lm.decode = timed_decode
    for _ in range(repeats):
        calls.clear()
        t = time.perf_counter()
        generate(lm, latent, prompt, None, SamplingOptions(temperature=0.0), seed=0, steps=12)
        times["total"].append(time.perf_counter() - t)
    total = min(times["total"])
    c = lm.model.config
    return {
        "model_calls": len(calls),
        "generated_tokens": (latent - prompt.shape[1]) * c.height * c.width,
        "seconds_per_clip": round(total, 2),
        "lm_seconds_per_clip": round(total - min(times["decode"]), 2),
    }


def smoke() -> dict:
    """Tiny random models of both kinds, no data: model calls and seconds of one continuation (2
    latent frames given, 2 generated) -> ``{kind: {...}}``."""
    import torch

    from magvit2.lm import DecodeOptions, LMConfig, SamplingOptions, decode, sample
    from magvit2.lm.masked import build_lm
    from magvit2.lm.tasks import task_mask

    out = {}
    prompt = torch.randint(0, 64, (1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    for kind in CONFIGS:
        torch.manual_seed(0)
        config = LMConfig(kind=kind, vocabulary=64, height=2, width=2, max_frames=4, split_tokens=[3, 3],
                          dim=32, depth=2, heads=2)  # fmt: skip
        model = build_lm(config).eval()
        calls = count_calls(model)
        t = time.perf_counter()
        if kind == "ar":
            sample(model, 4, prompt, options=SamplingOptions(temperature=0.0))
        else:
            ids = torch.cat([prompt, torch.zeros_like(prompt)], dim=1)
            given = task_mask("predict", 4, 2, 2, prompt=2)[None]
            decode(model, ids, given, "predict", options=DecodeOptions(steps=12, temperature=0.0))
        out[kind] = {"model_calls": len(calls), "seconds": round(time.perf_counter() - t, 4)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--demo", type=Path, default=ROOT / "runs" / "lm_demo", help="benchmarks/lm_demo.py's --out"
    )
    p.add_argument("--out", type=Path, help="folder for both runs and the results")
    p.add_argument("--minutes", type=float, default=13.0, help="training time of each LM")
    p.add_argument("--steps", type=int, default=160, help="max_steps of both (the schedules end there)")
    p.add_argument("--ar", type=Path, help="an autoregressive LM folder (skips training)")
    p.add_argument("--masked", type=Path, help="a masked LM folder (skips training)")
    p.add_argument("--smoke", action="store_true", help="tiny random models only (a quick check)")
    args = p.parse_args()
    if args.smoke:
        print(json.dumps(smoke(), indent=2))
        return
    if args.out is None:
        p.error("--out is required")
    out, demo = args.out.resolve(), args.demo.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log: list = []
    if args.ar and args.masked:
        runs = {"ar": args.ar.resolve(), "masked": args.masked.resolve()}
    else:
        from magvit2.lm.trainer import load_tokenizer

        shards = demo / f"shards-{load_tokenizer('default')[1]}"  # as benchmarks/lm_demo.py names them
        runs = train_both(shards, out, args.minutes, args.steps, log)
    clips = demo / "clips" / "val"
    results = {}
    for kind, lm in runs.items():
        meta = json.loads((lm / "config.json").read_text())
        results[kind] = {
            "trained_steps": meta["trained_steps"],
            **evaluate(lm, clips, log),
            "generation": generation_cost(lm, clips / "s128_y032_x082.mp4"),
        }
    results["commands"] = log
    (out / "side_by_side.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "commands"}, indent=2))


if __name__ == "__main__":
    main()
