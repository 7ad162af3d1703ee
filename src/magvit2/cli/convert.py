"""``magvit2 convert``: turn another project's published tokenizer checkpoint into our format."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``convert`` sub-command (one sub-sub-command per source project)."""
    p = sub.add_parser(
        "convert",
        help="convert a published tokenizer checkpoint (Open-MAGVIT2) to config.json + model.safetensors",
        description="Convert another project's tokenizer checkpoint into a directory that "
        "VideoTokenizer.from_pretrained loads.",
    )
    sources = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    _add_open_magvit2(sources)
    _add_checkpoint(sources)


def _add_open_magvit2(sources: argparse._SubParsersAction) -> None:
    """``convert open-magvit2 CHECKPOINT OUT_DIR``."""
    o = sources.add_parser(
        "open-magvit2",
        help="Open-MAGVIT2 / SEED-Voken image (128/256 px) or video tokenizer",
        description="Convert an Open-MAGVIT2 Lightning checkpoint (read with torch.load(weights_only=True)) "
        "or a safetensors state dict. The architecture is inferred from the tensor shapes; image "
        "checkpoints get their 2D kernels inflated into our causal 3D network. Token ids equal "
        "Open-MAGVIT2's (bit_order lsb).\n"
        "Example: magvit2 convert open-magvit2 video_128_L.ckpt out/ --time-pooled-norm",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    o.add_argument("checkpoint", help="Lightning .ckpt, torch state dict or .safetensors file")
    o.add_argument("out_dir", help="output directory (config.json, model.safetensors, conversion.json)")
    group = o.add_mutually_exclusive_group()
    group.add_argument(
        "--ema", dest="ema", action="store_true", default=None,
        help="take the EMA copy (model_ema.*); default: the EMA copy when present, else the raw weights",
    )  # fmt: skip
    group.add_argument("--no-ema", dest="ema", action="store_false", help="take the raw (non-EMA) weights")
    o.add_argument(
        "--time-pooled-norm",
        action="store_true",
        help="pool normalisation statistics over time as Open-MAGVIT2's video model does (exact on "
        "clips; not causal, no chunking). Default: per-frame statistics (strictly causal; exact "
        "on one frame)",
    )
    o.add_argument("--overwrite", action="store_true", help="replace an existing model in OUT_DIR")
    o.add_argument("--json", action="store_true", help="print the report as JSON")
    o.set_defaults(func=run_open_magvit2)


def _add_checkpoint(sources: argparse._SubParsersAction) -> None:
    """``convert checkpoint CHECKPOINT OUT_DIR``."""
    c = sources.add_parser(
        "checkpoint",
        help="a `magvit2 train` checkpoint folder -> a model folder (EMA weights by default)",
        description="Export the weights of a training checkpoint (runs/NAME/checkpoints/step-N, or the "
        "run folder for its newest checkpoint) as config.json + model.safetensors.\n"
        "Example: magvit2 convert checkpoint runs/tiny/ exported/ --dtype float16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("checkpoint", help="checkpoint folder (step-N), its checkpoints/ folder or the run folder")
    c.add_argument("out_dir", help="output directory (config.json, model.safetensors)")
    c.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA copy")
    c.add_argument(
        "--dtype",
        choices=["float32", "float16", "bfloat16"],
        default="float32",
        help="storage type of the floating weights (float16 halves the file; default float32)",
    )
    c.add_argument("--overwrite", action="store_true", help="replace an existing model in OUT_DIR")
    c.set_defaults(func=run_checkpoint)


def run_open_magvit2(args: argparse.Namespace) -> int:
    """Convert, write OUT_DIR, print the report."""
    from magvit2.convert import convert_open_magvit2

    report = convert_open_magvit2(
        args.checkpoint,
        args.out_dir,
        ema=args.ema,
        time_pooled_norm=args.time_pooled_norm,
        overwrite=args.overwrite,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    if not args.json:
        print(f"wrote {args.out_dir}")
    return 0


def run_checkpoint(args: argparse.Namespace) -> int:
    """Export a training checkpoint as a model folder; print what was written."""
    import torch

    from magvit2.training.export import export_checkpoint

    path, step, group = export_checkpoint(
        args.checkpoint,
        args.out_dir,
        ema=not args.raw,
        dtype=getattr(torch, args.dtype),
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out_dir}: {group} weights of step {step} from {path} ({args.dtype})")
    return 0
