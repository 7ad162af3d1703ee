"""What one training step costs for each model size: seconds per step and peak memory (JSON).

One step = forward, MSE loss plus the quantizer's terms, backward and an AdamW update, on random
clips, bf16 autocast on CUDA and fp32 on the CPU. The first ``--warmup`` steps are not timed. The
``small`` preset (the built-in model) is the reference: each row also gives its time per step as a
multiple of the reference's, measured in the same run.

    PYTHONPATH=src python benchmarks/train_step.py                        # CUDA if present
    PYTHONPATH=src python benchmarks/train_step.py --presets small tiny magvit2-video --frames 9 --size 64
    PYTHONPATH=src python benchmarks/train_step.py --smoke                # seconds, any machine
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
import torch.nn.functional as F

from magvit2 import VideoTokenizer


def measure(preset: str, args: argparse.Namespace) -> dict:
    """Seconds per training step and peak memory of ``preset`` on ``args.device``."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = VideoTokenizer.from_config(preset).to(device).train()
    if args.checkpointing:
        for m in model.modules():
            if hasattr(m, "gradient_checkpointing"):
                m.gradient_checkpointing = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(args.batch, 3, args.frames, args.size, args.size, device=device) * 2 - 1
    cast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with cast:
            out = model(x)
        loss = F.mse_loss(out.reconstruction.float(), x) + out.quantizer.loss.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # fmt: skip
    return {
        "preset": preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_per_step": round(sorted(times)[len(times) // 2], 4),
        "clips_per_second": round(args.batch / sorted(times)[len(times) // 2], 2),
        "peak_memory_gib": round(peak / 2**30, 2),
        "peak_memory_note": "CUDA allocator peak" if device.type == "cuda" else "process peak RSS so far",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["small", "magvit2-video", "loong-246m"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing in res blocks")
    p.add_argument("--smoke", action="store_true", help="tiny clips, one step: checks the script runs")
    args = p.parse_args()
    if args.smoke:
        args.presets, args.frames, args.size, args.steps, args.warmup = ["small", "tiny"], 5, 32, 1, 0
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(preset, args) for preset in args.presets]
    ref = next((r["seconds_per_step"] for r in rows if r["preset"] == "small"), None)
    for r in rows:
        r["time_vs_small"] = round(r["seconds_per_step"] / ref, 2) if ref else None
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}"
    )
    print(json.dumps({"device": device, "clip": [args.batch, 3, args.frames, args.size, args.size],
                      "precision": "bf16 autocast" if args.device.startswith("cuda") else "fp32",
                      "rows": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
