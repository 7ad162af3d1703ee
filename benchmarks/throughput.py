"""Encode/decode throughput, FLOPs and memory of the video tokenizer; prints JSON.

For each preset and clip size: frames per second of ``encode`` and ``decode`` for a few execution
variants (``no_grad``, ``inference_mode``, ``channels_last_3d``, ``compile``), the model's FLOPs per
frame (counted with ``torch.utils.flop_counter`` on the meta device) and the achieved FLOP/s as a
fraction of a large fp32 matmul timed in the same run. Then the peak memory of encoding+decoding a
long clip in time chunks versus a short clip whole, each in a fresh subprocess.

    PYTHONPATH=src python benchmarks/throughput.py                      # full table (GPU advised)
    PYTHONPATH=src python benchmarks/throughput.py --models tiny --sizes 128 --repeats 1
    PYTHONPATH=src python benchmarks/throughput.py --skip-speed --skip-memory --threads 2 --previous DIR
    PYTHONPATH=src python benchmarks/throughput.py --smoke               # seconds: checks the script runs

Peak memory: CUDA ``max_memory_allocated``; on CPU the peak resident set size above the one after
the warm-up call (sampled from /proc every 2 ms), which includes the input and the output.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from magvit2.models import VideoTokenizer

VARIANTS = ("no_grad", "inference_mode", "channels_last_3d", "compile")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rss_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Context manager: peak memory above the level at entry (CUDA allocator or sampled RSS)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base, self.max, self.running = rss_bytes(), rss_bytes(), True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.max = max(self.max, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.max, rss_bytes()) - self.base


def matmul_flops_per_s(device: torch.device, n: int, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of an ``n x n`` matmul: the machine's practical limit for dense fp32 work."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_frame(name: str, frames: int, size: int) -> tuple[float, float]:
    """Encoder and decoder FLOPs per video frame, counted on the meta device (no memory, no time)."""
    with torch.device("meta"):
        model = VideoTokenizer.from_config(name)
        x = torch.empty(1, 3, frames, size, size)
        with FlopCounterMode(display=False) as enc:
            z = model.encoder(x)
        with FlopCounterMode(display=False) as dec:
            model.decoder(z)
    return enc.get_total_flops() / frames, dec.get_total_flops() / frames


def prepare(model: VideoTokenizer, variant: str):
    """Return (encode_fn, decode_fn, input transform, grad context) for an execution variant."""
    ctx = torch.no_grad if variant == "no_grad" else torch.inference_mode
    fmt = lambda x: x
    enc, dec = model.encoder, model.decoder
    if variant == "channels_last_3d":
        model.to(memory_format=torch.channels_last_3d)
        fmt = lambda x: x.contiguous(memory_format=torch.channels_last_3d)
    if variant == "compile":
        enc, dec = torch.compile(enc), torch.compile(dec)
    encode = lambda x: model.quantizer.codes_to_indices(enc(fmt(x)))
    decode = lambda ids: dec(fmt(model.quantizer.indices_to_codes(ids).to(x_dtype(model))))
    return encode, decode, ctx


def x_dtype(model: VideoTokenizer) -> torch.dtype:
    return model.last_layer_weight().dtype


def time_call(fn, arg, device, repeats: int) -> tuple[float, float]:
    """(best seconds, peak memory bytes) of ``fn(arg)`` after one warm-up call."""
    fn(arg)
    sync(device)
    best, peak = float("inf"), 0
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            t = time.perf_counter()
            fn(arg)
            sync(device)
            best = min(best, time.perf_counter() - t)
        peak = max(peak, mem.peak)
    return best, peak


def bench_model(name, sizes, frames, variants, repeats, device, matmul) -> list[dict]:
    rows = []
    for size in sizes:
        fe, fd = flops_per_frame(name, frames, size)
        for variant in variants:
            torch.manual_seed(0)
            model = VideoTokenizer.from_config(name).to(device).eval()
            x = torch.rand(1, 3, frames, size, size, device=device) * 2 - 1
            row = {"model": name, "clip": f"{frames}x{size}x{size}", "variant": variant}
            try:
                encode, decode, ctx = prepare(model, variant)
                with ctx():
                    ids = encode(x)
                    te, me = time_call(encode, x, device, repeats)
                    td, md = time_call(decode, ids, device, repeats)
            except Exception as err:  # e.g. torch.compile without a working compiler
                row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
                rows.append(row)
                print(json.dumps(row), file=sys.stderr)
                continue
            row.update(
                encode_fps=frames / te,
                decode_fps=frames / td,
                encode_peak_mem_mb=me / 2**20,
                decode_peak_mem_mb=md / 2**20,
                encode_gflops_per_frame=fe / 1e9,
                decode_gflops_per_frame=fd / 1e9,
                encode_fraction_of_matmul=fe * frames / te / matmul,
                decode_fraction_of_matmul=fd * frames / td / matmul,
            )
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
            del model
    return rows


def train_step_seconds(name: str, batch: int, frames: int, size: int, device, repeats: int) -> dict:
    """Seconds per training step (forward, L1 + quantizer loss, backward, Adam) of a preset."""
    torch.manual_seed(0)
    model = VideoTokenizer.from_config(name).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, frames, size, size, device=device) * 2 - 1

    def step(x):
        out = model(x)
        loss = (out.reconstruction - x).abs().mean() + out.quantizer.loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds, peak = time_call(step, x, device, repeats)
    return {
        "model": name,
        "batch": f"{batch}x{frames}x{size}x{size}",
        "seconds_per_step": seconds,
        "peak_mem_mb": peak / 2**20,
    }


def previous_vs_builtin(folder: str, device: torch.device, repeats: int, size: int = 256) -> dict:
    """Seconds to encode one 17-frame clip of ``size`` x ``size`` with the built-in model and with the
    previous one (four feedback stages, loaded from ``folder`` by ``benchmarks/previous_model.py``)."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from previous_model import PreviousModel

    torch.manual_seed(0)
    x = torch.rand(1, 3, 17, size, size, device=device) * 2 - 1
    out = {"clip": f"17x{size}x{size}", "threads": torch.get_num_threads()}
    for name, model in (
        ("builtin", VideoTokenizer.from_pretrained("default")),
        ("previous", PreviousModel.from_folder(folder)),
    ):
        model = model.to(device).eval()
        seconds, peak = time_call(model.encode, x, device, repeats)
        out[name] = {
            "encode_s": round(seconds, 3),
            "encode_fps": round(17 / seconds, 2),
            "peak_mem_mb": round(peak / 2**20, 1),
        }
    out["previous_over_builtin"] = round(out["previous"]["encode_s"] / out["builtin"]["encode_s"], 2)
    return out


def child_memory(args: argparse.Namespace) -> None:
    """Subprocess: encode + decode one clip, print peak memory above the model's baseline (JSON)."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = VideoTokenizer.from_config(args.models[0]).to(device).eval()
    size, frames = args.sizes[0], args.child_frames
    x = torch.rand(1, 3, frames, size, size, device=device) * 2 - 1
    chunk = args.chunk if args.child_chunked else None
    warm = torch.rand(1, 3, 1 + model.temporal_factor, size, size, device=device) * 2 - 1
    model.decode(model.encode(warm))  # initialise kernels and caches outside the measurement
    t = time.perf_counter()
    with PeakMemory(device) as mem:
        model.decode(model.encode(x, chunk), chunk)
    seconds = time.perf_counter() - t
    print(json.dumps({"frames": frames, "chunk": chunk, "peak_mem_mb": mem.peak / 2**20, "seconds": seconds}))


def chunked_memory(args: argparse.Namespace) -> dict:
    """Peak memory of a long clip in chunks vs a short clip whole, each in a fresh process."""
    out = {}
    runs = [("short_whole", args.frames, False), ("long_chunked", args.long_frames, True)]
    if args.long_whole:
        runs.append(("long_whole", args.long_frames, False))
    # large blocks from mmap, so that freed tensors leave the resident set at once and RSS tracks
    # live memory rather than glibc's free lists
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    for label, frames, chunked in runs:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--models",
            args.memory_model,
            "--sizes",
            str(args.memory_size),
            "--device",
            args.device,
            "--threads",
            str(args.threads),
            "--chunk",
            str(args.chunk),
            "--child-frames",
            str(frames),
        ]
        if chunked:
            cmd.append("--child-chunked")
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode:
            out[label] = {"error": res.stderr[-500:]}
        else:
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    if all("peak_mem_mb" in v for v in out.values()):
        short = out["short_whole"]["peak_mem_mb"]
        out["ratio_long_chunked_over_short"] = out["long_chunked"]["peak_mem_mb"] / short
        if "long_whole" in out:
            out["ratio_long_whole_over_short"] = out["long_whole"]["peak_mem_mb"] / short
    out.update(model=args.memory_model, size=args.memory_size)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny", "magvit2-video"])
    p.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--matmul-size", type=int, default=None)
    p.add_argument("--long-frames", type=int, default=257)
    p.add_argument("--chunk", type=int, default=17, help="max_chunk_frames of the long clip")
    p.add_argument("--memory-model", default="tiny")
    p.add_argument("--memory-size", type=int, default=128)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-speed", action="store_true", help="only the chunked-memory comparison")
    p.add_argument("--long-whole", action="store_true", help="also measure the long clip without chunks")
    p.add_argument(
        "--train-step",
        default=None,
        metavar="MODEL",
        help="also time a training step of MODEL at batch 4 x 17 x 64 x 64",
    )
    p.add_argument(
        "--previous",
        metavar="DIR",
        help="also time encoding 17x256x256 with the previous built-in model in DIR (see "
        "benchmarks/previous_model.py) beside the built-in model (run with --threads 2)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny at 32x32, one variant, one repeat")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-frames", type=int, default=17, help=argparse.SUPPRESS)
    p.add_argument("--child-chunked", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.smoke:
        args.models, args.sizes, args.frames, args.variants, args.repeats = (
            ["tiny"],
            [32],
            5,
            ["inference_mode"],
            1,
        )
        args.matmul_size, args.long_frames, args.chunk, args.memory_size = 256, 9, 5, 32
    if args.child:
        child_memory(args)
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n = args.matmul_size or (8192 if device.type == "cuda" else 2048)
    matmul = matmul_flops_per_s(device, n)
    rows = []
    for name in [] if args.skip_speed else args.models:
        rows += bench_model(name, args.sizes, args.frames, args.variants, args.repeats, device, matmul)
    best = {}
    for r in rows:
        if "error" not in r:
            key = f"{r['model']} {r['clip']}"
            speed = r["encode_fps"] + r["decode_fps"]
            if key not in best or speed > best[key][1]:
                best[key] = (r["variant"], speed)
    report = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu ({args.threads} threads)",
        "torch": torch.__version__,
        "matmul_fp32_gflops_per_s": matmul / 1e9,
        "matmul_size": n,
        "results": rows,
        "fastest_variant": {k: v[0] for k, v in best.items()},
    }
    if args.train_step:
        report["train_step"] = train_step_seconds(args.train_step, 4, 17, 64, device, args.repeats)
    if not args.skip_memory:
        report["chunked_memory"] = chunked_memory(args)
    if args.previous:
        report["previous_vs_builtin"] = previous_vs_builtin(args.previous, device, args.repeats)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
