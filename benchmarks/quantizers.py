"""Benchmark: our LFQ vs vector-quantize-pytorch's LFQ (forward + backward time and peak memory).

Each measurement runs in a fresh subprocess (one at a time, nothing in parallel) that

1. imports torch and the quantizer, builds it, draws ``z`` ``(1, bits, tokens)`` (seed 0, scale 0.1) and
   an upstream gradient;
2. resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``, Linux) and records the
   current RSS;
3. runs forward + backward of ``loss + (codes * upstream).sum()`` once as warm-up, then ``--repeats``
   more times (1 if the warm-up took over 2 s), timing each with ``time.perf_counter``;
4. reports ``peak_mb = VmHWM - RSS before`` (the extra resident memory the runs needed at their peak;
   falls back to ``ru_maxrss`` minus the RSS before where ``clear_refs`` is not available), the best
   time, and the codebook entropy (a cross-check that both sides compute the same thing).

Both sides run with one torch thread by default (``--threads``): on a shared machine multi-threaded
BLAS timings swing by 10x from run to run. Both sides use T = 0.01 (peer: ``inv_temperature = 100``),
entropy weight 0.1, commitment weight 0.25, codebook entropy weight (peer: ``diversity_gamma``) 1.

Rows: vocabularies 2^10 .. 2^18 at 1,024 tokens for both sides; ours alone at 2^18 x 2,560,
2^24 x 2,560 (exact) and 2^32 x 2,560 (grouped, 16-bit groups). The peer at 2^18 x 2,560 needs about
19 GB: only with ``--peer-large``. The peer is skipped when the machine has too little free memory.

Usage::

    PYTHONPATH=src python benchmarks/quantizers.py [--tokens 1024] [--repeats 3] [--peer-large]
    PYTHONPATH=src python benchmarks/quantizers.py --smoke     # seconds: checks the script runs

Prints one JSON object on stdout (a markdown table on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TEMPERATURE = 0.01


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _mem_available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# ----------------------------------------------------------------------------------------------------
# worker (runs in the subprocess)


def _build(side: str, bits: int, grouped: bool):
    """A ``step(z, upstream) -> codebook entropy`` doing forward + backward."""
    if side == "ours":
        from magvit2.quantizers.lfq import LFQ

        kwargs = {"codebook_entropy": "grouped", "group_bits": 16} if grouped else {}
        q = LFQ(bits, temperature=TEMPERATURE, entropy_weight=0.1, commitment_weight=0.25, **kwargs)

        def step(z, upstream):
            out = q(z)
            (out.loss + (out.codes * upstream).sum()).backward()
            return out.codebook_entropy.item()

        return step
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from vector_quantize_pytorch import LFQ as PeerLFQ

    q = PeerLFQ(
        dim=bits,
        codebook_size=2**bits,
        entropy_loss_weight=0.1,
        commitment_loss_weight=0.25,
        diversity_gamma=1.0,
        channel_first=True,
    )

    def step(z, upstream):
        (codes, _, aux), (_, codebook, _) = q(z, inv_temperature=1 / TEMPERATURE, return_loss_breakdown=True)
        (aux + (codes * upstream).sum()).backward()
        return codebook.item()

    return step


def worker(spec: dict) -> dict:
    """Measure one (side, bits, tokens) configuration in this process."""
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    step = _build(spec["side"], spec["bits"], spec.get("grouped", False))
    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(1, spec["bits"], spec["tokens"], generator=gen) * 0.1).requires_grad_()
    upstream = torch.randn(z.shape, generator=gen)
    exact_peak = _reset_peak()
    rss_before = _status_kb("VmRSS") or 0
    times = []
    t0 = time.perf_counter()
    codebook = step(z, upstream)
    warm = time.perf_counter() - t0
    for _ in range(1 if warm > 2.0 else spec["repeats"]):
        z.grad = None
        t0 = time.perf_counter()
        step(z, upstream)
        times.append(time.perf_counter() - t0)
    if exact_peak:
        peak_kb = _status_kb("VmHWM")
    else:  # ru_maxrss is in kB on Linux
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "time_s": min(times),
        "warmup_s": warm,
        "peak_mb": (peak_kb - rss_before) / 1024,
        "memory_method": "VmHWM after clear_refs" if exact_peak else "ru_maxrss",
        "codebook_entropy": codebook,
        "threads": torch.get_num_threads(),
    }


# ----------------------------------------------------------------------------------------------------
# driver


def measure(spec: dict) -> dict:
    """Run :func:`worker` in a fresh interpreter and return its JSON (or the error)."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer_need_mb(bits: int, tokens: int) -> float:
    """Rough peer footprint: about seven fp32 tokens x 2^bits tensors (7.5 GB at 2^18 x 1024)."""
    return 7 * 4 * tokens * 2**bits / 2**20


def run(args: argparse.Namespace) -> dict:
    rows = []
    base = {"repeats": args.repeats, "threads": args.threads}
    plan = [(bits, args.tokens, True, False) for bits in args.bits]
    plan += [(18, 2560, args.peer_large, False), (24, 2560, False, False), (32, 2560, False, True)]
    if args.smoke:
        plan = [(10, 64, True, False), (32, 64, False, True)]
    for bits, tokens, with_peer, grouped in plan:
        row = {"bits": bits, "vocabulary": f"2^{bits}", "tokens": tokens}
        row["mode"] = "grouped (16-bit groups)" if grouped else "exact"
        row["ours"] = measure({**base, "side": "ours", "bits": bits, "tokens": tokens, "grouped": grouped})
        if with_peer:
            need, avail = peer_need_mb(bits, tokens), _mem_available_mb()
            if avail is not None and avail < 1.3 * need:
                row["peer"] = {"skipped": f"needs ~{need:.0f} MB, {avail:.0f} MB available"}
            else:
                row["peer"] = measure({**base, "side": "peer", "bits": bits, "tokens": tokens})
        ours, peer = row["ours"], row.get("peer", {})
        if "time_s" in ours and "time_s" in peer:
            row["time_ratio_peer_over_ours"] = peer["time_s"] / ours["time_s"]
            row["memory_ratio_peer_over_ours"] = peer["peak_mb"] / max(ours["peak_mb"], 1e-3)
            row["codebook_entropy_rel_diff"] = abs(peer["codebook_entropy"] / ours["codebook_entropy"] - 1)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return {"rows": rows, "requirements": requirements(rows), "method": __doc__.split("Rows:")[0].strip()}


def requirements(rows: list[dict]) -> dict:
    """The targets: >= 20x less time and memory than the peer at 2^18 x 1024; < 1 GB at 2560 tokens."""
    out = {}
    for row in rows:
        key = f"{row['vocabulary']}x{row['tokens']}"
        if row["bits"] == 18 and row["tokens"] == 1024 and "time_ratio_peer_over_ours" in row:
            out[f"{key}: time ratio >= 20"] = row["time_ratio_peer_over_ours"] >= 20
            out[f"{key}: memory ratio >= 20"] = row["memory_ratio_peer_over_ours"] >= 20
        if row["tokens"] == 2560 and "peak_mb" in row["ours"]:
            out[f"{key} {row['mode']}: ours < 1 GB"] = row["ours"]["peak_mb"] < 1024
    return out


def markdown(result: dict) -> str:
    """The rows as a markdown table."""

    def cell(side: dict, key: str, fmt: str) -> str:
        if "skipped" in side or "error" in side:
            return "skipped" if "skipped" in side else "error"
        return format(side[key], fmt) if key in side else "-"

    lines = [
        "| vocabulary | tokens | mode | ours time (s) | ours peak (MB) | peer time (s) | peer peak (MB) "
        "| time ratio | memory ratio | H_cb rel. diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ours, peer = r["ours"], r.get("peer", {"skipped": True})
        cells = [
            r["vocabulary"],
            str(r["tokens"]),
            r["mode"],
            cell(ours, "time_s", ".4f"),
            cell(ours, "peak_mb", ".1f"),
            cell(peer, "time_s", ".3f"),
            cell(peer, "peak_mb", ".0f"),
            cell(r, "time_ratio_peer_over_ours", ".0f"),
            cell(r, "memory_ratio_peer_over_ours", ".0f"),
            cell(r, "codebook_entropy_rel_diff", ".1e"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1024, help="tokens for the comparison rows")
    parser.add_argument("--bits", type=int, nargs="+", default=[10, 12, 14, 16, 18])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides (0: torch's)")
    parser.add_argument(
        "--peer-large", action="store_true", help="also run the peer at 2^18 x 2560 (needs ~19 GB)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="64 tokens, 2^10 and 2^32 (grouped), one run")
    args = parser.parse_args()
    if args.smoke:
        args.repeats = 1
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    result = run(args)
    print(json.dumps(result, indent=1))
    print(markdown(result), file=sys.stderr)
    if not all(result["requirements"].values()):
        print("some requirement failed", file=sys.stderr)


if __name__ == "__main__":
    main()
