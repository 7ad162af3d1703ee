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
        "  magvit2 train my.yaml --set time_limit_minutes=50   # stop cleanly after 50 minutes (exit 75)\n"
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


#: Exit status of a run stopped early by SIGTERM/SIGINT or its time limit (EX_TEMPFAIL: "try again";
#: a job script can resubmit itself with --resume on it).
EXIT_STOPPED_EARLY = 75


def run(args: argparse.Namespace) -> int:
    """Load the config, apply the overrides, train (or print the config)."""
    from magvit2.training.config import config_to_yaml

    if args.config is None and not args.print_config:
        raise ValueError("train: expected a CONFIG.yaml argument (or --print-config for the defaults)")
    cfg = load_train_config(args.config, args.overrides)
    if args.print_config:
        print(config_to_yaml(cfg), end="")
        return 0
    from magvit2.training.trainer import run_training

    trainer = run_training(cfg, resume=args.resume)
    print(f"weights: {trainer.final}")
    if trainer.stopped_by is not None:
        print(f"stopped early by {trainer.stopped_by} at step {trainer.step} of {cfg.max_steps}; "
              "continue with the same command and --resume")  # fmt: skip
        return EXIT_STOPPED_EARLY
    return 0
