"""``magvit2 tokenize``: videos and images (files, folders, globs) -> token files or Parquet shards.

Output modes:

* one input file and ``-o X.safetensors``: one token file (refused if it exists, unless ``--overwrite``);
* otherwise ``-o DIR``: one token file per input, ``DIR/<path relative to its folder>.safetensors``
  (``clips/a.mp4`` -> ``DIR/a.mp4.safetensors``); when two inputs would share a name (``A/clip.mp4``,
  ``B/clip.mp4``), all are named by their path under the inputs' common folder instead
  (``DIR/A/clip.mp4.safetensors``); files already there are skipped (a rerun resumes);
* with ``--shard-size N``: Parquet shards ``DIR/shard-00000.parquet``, N clips each (see
  :mod:`magvit2.tokens.shards`); finished shards are skipped on a rerun.

Under ``torchrun`` each rank takes every WORLD_SIZE-th shard (or file), starting at its RANK.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from magvit2.cli.common import (
    add_model_args,
    add_output_args,
    add_refine_args,
    at_least,
    check_output,
    discover_inputs,
    dist_rank_world,
    make_runner,
    one_line,
    output_names,
    progress,
)
from magvit2.data.video_io import frame_intervals, is_variable_rate, iter_frames, probe
from magvit2.fileio import remove_stale_temps
from magvit2.inference.memory import FrameTooLargeError
from magvit2.inference.streaming import EncodedClip, TokenizerRunner
from magvit2.tokens import TokenFile, save_tokens
from magvit2.tokens.shards import (
    TOKEN_FOLDER_MANIFEST,
    check_manifest,
    manifest,
    plan_shards,
    shard_metadata,
    token_folder_manifest,
    token_row,
    write_shard,
)

log = logging.getLogger("magvit2.tokenize")

EXAMPLE = """examples:
  magvit2 tokenize clip.mp4 -o clip.safetensors --model my_tokenizer/
  magvit2 tokenize videos/ photos/*.png -o tokens/ --model my_tokenizer/
  magvit2 tokenize videos/ -o shards/ --shard-size 1000 --model my_tokenizer/ --tile 256
  torchrun --nproc_per_node 4 -m magvit2.cli.main tokenize videos/ -o shards/ --shard-size 1000 ..."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tokenize`` sub-command."""
    p = sub.add_parser(
        "tokenize",
        help="videos/images -> token files or Parquet shards",
        description="Tokenize video and image files, folders (recursive) and globs.\n\n" + EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video/image files, folders or globs")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="a .safetensors file (one input) or a folder (one token file per input, or shards)",
    )
    p.add_argument(
        "--shard-size", type=at_least(1), default=None, metavar="N", help="write Parquet shards of N clips"
    )
    p.add_argument(
        "--packed", action="store_true", help="bit-pack ids in token files (log2(vocab) bits each)"
    )
    p.add_argument(
        "--max-frames", type=at_least(1), default=None, metavar="N", help="tokenize at most N frames a clip"
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="shards: redo the finished shards that record inputs which failed in an earlier run",
    )
    add_model_args(p)
    add_refine_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def encode_file(
    runner: TokenizerRunner, path: Path, max_frames: int | None, quiet: bool = True
) -> tuple[EncodedClip, object]:
    """Stream ``path``'s frames through the tokenizer -> (clip tokens, fps); unless ``quiet``, with a
    progress bar over its frames."""
    info = probe(path)
    total = min(info.num_frames, max_frames or info.num_frames) if info.num_frames > 0 else max_frames
    with progress(total, "frame", path.name, quiet) as bar:

        def frames():
            for frame in iter_frames(path, max_frames=max_frames):
                yield frame
                bar.update(1)

        try:
            clip = runner.encode_frames(frames())
        except FrameTooLargeError as err:
            raise FrameTooLargeError(one_line(path, err)) from err
    if not info.is_image:
        warn_if_variable_rate(path, info.fps, max_frames)
    return clip, info.fps


def warn_if_variable_rate(path: Path, fps, max_frames: int | None) -> None:
    """Say so when ``path`` has a variable frame rate: its tokens record one rate (the stream's), so
    decoding spaces the frames evenly."""
    intervals = frame_intervals(path, max_frames)
    if is_variable_rate(intervals):
        short, long = intervals
        log.warning(
            "%s: variable frame rate (frames %.1f to %.1f ms apart); the tokens record one rate, "
            "%.3f fps, so decoded frames are evenly spaced",
            path, 1000 * short, 1000 * long, float(fps),
        )  # fmt: skip


def _token_file(runner: TokenizerRunner, clip: EncodedClip, fps, source: str) -> TokenFile:
    return TokenFile(
        ids=clip.ids,
        model=runner.fingerprint,
        vocabulary=runner.vocabulary,
        frames=clip.frames,
        height=clip.height,
        width=clip.width,
        pad_bottom=clip.pad_bottom,
        pad_right=clip.pad_right,
        fps=fps,
        source=source,
        encoding=runner.encoding,
    )


def run(args: argparse.Namespace) -> int:
    """Dispatch to the output mode; returns 1 when any input failed."""
    files = discover_inputs(args.inputs)
    out = Path(args.output)
    runner = make_runner(args)
    if args.shard_size is not None:
        if args.packed:
            raise ValueError("--packed bit-packs token files; shards (--shard-size) always hold int32 ids")
        return _run_shards(args, runner, files, out)
    single = len(files) == 1 and out.suffix == ".safetensors"
    if single:
        path = files[0][0]
        check_output(out, args.overwrite)
        clip, fps = encode_file(runner, path, args.max_frames, quiet=args.quiet)
        save_tokens(out, _token_file(runner, clip, fps, path.name), packed=args.packed)
        return 0
    if out.suffix == ".safetensors":
        raise ValueError(f"{out}: {len(files)} inputs need an output folder, not a .safetensors file")
    if len(files) == 1 and out.suffix and not out.is_dir():
        raise ValueError(
            f"{out}: one input is written to a token file named *.safetensors; for an output folder, "
            "give a name without an extension or an existing folder"
        )
    return _run_files(args, runner, files, out)


def _run_files(args, runner: TokenizerRunner, files: list[tuple[Path, Path]], out: Path) -> int:
    rank, world = dist_rank_world()
    names, common = output_names(files)
    if common is not None and rank == 0 and not args.quiet:
        print(f"magvit2 tokenize: inputs share file names; outputs are named by their path under {common}",
              file=sys.stderr)  # fmt: skip
    pairs = [(path, name) for (path, _), name in zip(files, names, strict=True)]
    mine = pairs[rank::world]
    failed = skipped = 0
    settings = token_folder_manifest(
        runner.fingerprint, runner.encoding, args.max_frames, args.packed, nested=common is not None
    )
    check_manifest(out, settings, args.overwrite, TOKEN_FOLDER_MANIFEST, "token files")
    remove_stale_temps(out, recursive=True)  # token files half-written by a killed run
    with progress(len(mine), "clip", "tokenize", args.quiet) as bar:
        for path, name in mine:
            dest = out / (name + ".safetensors")
            if dest.exists() and not args.overwrite:
                skipped += 1
                bar.update(1)
                continue
            try:
                clip, fps = encode_file(runner, path, args.max_frames)
                dest.parent.mkdir(parents=True, exist_ok=True)
                save_tokens(dest, _token_file(runner, clip, fps, path.name), packed=args.packed)
            except (ValueError, OSError) as err:
                failed += 1
                bar.write(f"magvit2 tokenize: error: {one_line(path, err)}", file=sys.stderr)
            bar.update(1)
    if skipped and not args.quiet:
        print(f"magvit2 tokenize: {skipped} of {len(mine)} inputs already tokenized in {out} with these "
              "settings, skipped (--overwrite redoes them)", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _run_shards(args, runner: TokenizerRunner, files: list[tuple[Path, Path]], out: Path) -> int:
    rank, world = dist_rank_world()
    paths = [p for p, _ in files]
    expected = manifest(paths, args.shard_size, runner.fingerprint, runner.encoding, args.max_frames)
    check_manifest(out, expected, args.overwrite)
    remove_stale_temps(out)  # shards half-written by a killed run
    plans = plan_shards(paths, out, args.shard_size, rank=rank, world_size=world)
    earlier = {plan.index: _failed_in(plan.path) for plan in plans if plan.path.exists()}
    retry = {i for i, bad in earlier.items() if bad} if args.retry_failed else set()
    todo = [plan for plan in plans if args.overwrite or plan.index not in earlier or plan.index in retry]
    failed = 0
    with progress(sum(len(p.files) for p in todo), "clip", f"tokenize[{rank}]", args.quiet) as bar:
        for plan in todo:
            rows, bad = _encode_shard(args, runner, plan.files, bar)
            failed += len(bad)
            write_shard(
                plan.path,
                rows,
                model=runner.fingerprint,
                vocabulary=runner.vocabulary,
                spatial_factor=runner.s,
                failed=bad,
                encoding=runner.encoding,
            )
    done = {plan.index for plan in todo}
    left = [name for i, bad in sorted(earlier.items()) if i not in done for name in bad]
    if left:
        shown = ", ".join(left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
        print(f"magvit2 tokenize: {len(left)} inputs failed in an earlier run and are not in the shards "
              f"({shown}); --retry-failed tries them again", file=sys.stderr)  # fmt: skip
    return 1 if failed or left else 0


def _failed_in(shard: Path) -> list[str]:
    """The inputs a finished shard records as failed (its ``magvit2.failed`` metadata)."""
    return list(json.loads(shard_metadata(shard).get("magvit2.failed", "[]")))


def _encode_shard(args, runner: TokenizerRunner, files, bar) -> tuple[list[dict], list[str]]:
    """One shard's rows and the inputs that failed, each failure reported on its own line."""
    rows, bad = [], []
    for path in files:
        try:
            _check_utf8_name(path)
            clip, fps = encode_file(runner, path, args.max_frames)
            rows.append(token_row(_token_file(runner, clip, fps, str(path))))
        except (ValueError, OSError) as err:
            bad.append(str(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
            bar.write(f"magvit2 tokenize: error: {one_line(path, err)}", file=sys.stderr)
        bar.update(1)
    return rows, bad


def _check_utf8_name(path: Path) -> None:
    """Shards store each input's path as UTF-8 text: a name that is not valid UTF-8 is refused."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("the file name is not valid UTF-8 (shards store names as text); rename it") from None
