"""The ``magvit2`` command: one sub-command per job (``magvit2 --help`` lists them)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from magvit2 import __version__
from magvit2.cli import convert, demo, detokenize, evaluate, info, lm, reconstruct, tokenize, train, trainset
from magvit2.cli.allocator import bound_heap_growth
from magvit2.cli.common import printable


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="magvit2",
        description="Turn videos and images into discrete tokens and back (MAGVIT-v2).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--version", action="version", version=f"magvit2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (tokenize, detokenize, reconstruct, info, evaluate, train, trainset, convert, demo, lm):
        module.register(sub)
    return parser


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocator's failure (CPU or GPU) rather than another runtime error."""
    text = str(err).lower()
    return isinstance(err, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "flat_memory", False):  # streaming commands' --flat-memory (see its docstring)
        bound_heap_growth()
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:  # FileNotFoundError, FileExistsError are OSErrors
        message = printable(" ".join(str(err).split()))  # one line, any file name printable
        print(f"magvit2 {args.command}: error: {message}", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:  # torch.OutOfMemoryError is a RuntimeError
        if not out_of_memory(err):
            raise
        print(f"magvit2 {args.command}: error: out of memory ({' '.join(str(err).split())[:200]}); "
              "pass --tile PX to process large frames in tiles of PX pixels", file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print(
            f"magvit2 {args.command}: interrupted (finished outputs are kept, partial ones removed)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
