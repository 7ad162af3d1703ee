"""``magvit2 train CONFIG.yaml [--set key=value ...] [--resume]``: train a tokenizer."""

from __future__ import annotations

import argparse

from magvit2.training.config import load_train_config


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = sub.add_parser(
        "train",
        help="train a video tokenizer from a YAML config",
        description="Train a tokenizer as CONFIG.yaml says (fields: see magvit2.training.TrainConfig).\n"
        "Examples:\n"
        "  magvit2 train configs/tiny_bigbuckbunny.yaml --set max_steps=100 --set data.batch_size=2\n"
        "  magvit2 train configs/tiny_bigbuckbunny.yaml --resume      # continue the run in output_dir\n"
        "  torchrun --nproc_per_node 4 -m magvit2.cli.main train my.yaml   # data-parallel",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="YAML file of TrainConfig fields (omit with --print-config)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set optim.lr=2e-4 (value parsed as YAML; repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the config, apply the overrides, train (or print the config)."""
    from magvit2.training.config import config_to_yaml

    if args.config is None and not args.print_config:
        raise ValueError("train: expected a CONFIG.yaml argument (or --print-config for the defaults)")
    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    from magvit2.training.trainer import train

    final = train(cfg, resume=args.resume)
    print(f"weights: {final}")
    return 0
