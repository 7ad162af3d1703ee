"""``magvit2 quantizers``: quantize a random latent with every quantizer and print what comes out."""

from __future__ import annotations

import argparse
import json

import torch

from magvit2.quantizers import (
    QUANTIZER_KINDS,
    FSQConfig,
    LFQConfig,
    QuantizerConfig,
    VQConfig,
    build_quantizer,
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``quantizers`` sub-command."""
    p = sub.add_parser(
        "quantizers",
        help="show the quantizers on a random latent",
        description="Quantize a random latent (B, D, 4, 4) with each quantizer and print a table.\n"
        "Example: magvit2 quantizers --bits 18 --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bits", type=int, default=18, help="LFQ bits per token (vocabulary 2**bits)")
    p.add_argument("--batch", type=int, default=8, help="latent batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _configs(bits: int) -> dict[str, QuantizerConfig]:
    return {
        "lfq": LFQConfig(bits=bits),
        "vq": VQConfig(kind="vq", dim=8, codebook_size=2 ** min(bits, 14)),
        "cvq": VQConfig(kind="cvq", dim=8, codebook_size=2 ** min(bits, 14)),
        "fsq": FSQConfig(levels=[8, 8, 8, 5, 5, 5]),
    }


def run(args: argparse.Namespace) -> int:
    """Print one row per quantizer kind: vocabulary, bits/token, loss, distinct codes, perplexity."""
    torch.manual_seed(args.seed)
    rows = []
    for kind, cfg in _configs(args.bits).items():
        assert kind in QUANTIZER_KINDS
        try:
            quantizer = build_quantizer(cfg)
        except ImportError as err:  # a quantizer not installed in this build
            rows.append({"kind": kind, "error": str(err)})
            continue
        z = torch.randn(args.batch, cfg.latent_dim, 4, 4)
        out = quantizer(z)
        rows.append(
            {
                "kind": kind,
                "vocabulary": quantizer.codebook_size,
                "bits_per_token": round(quantizer.bits_per_token, 3),
                "loss": round(float(out.loss.detach()), 5),
                "used_codes": int(out.used_codes),
                "perplexity": round(float(out.perplexity), 2),
                "first_ids": out.indices.reshape(-1)[:4].tolist(),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0
