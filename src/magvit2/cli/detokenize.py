"""``magvit2 detokenize``: a token file (or one row of a Parquet shard) -> video, PNG frames or a PNG."""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

from magvit2.cli.common import (
    add_model_args,
    add_output_args,
    at_least,
    atomic_output,
    make_runner,
    one_line,
    progress,
)
from magvit2.data.video_io import VIDEO_EXTENSIONS, VideoWriter, write_png
from magvit2.inference.streaming import EncodedClip, TokenizerRunner
from magvit2.tokens import load_tokens
from magvit2.tokens.shards import read_row

EXAMPLE = """examples:
  magvit2 detokenize clip.safetensors -o clip.mp4 --model my_tokenizer/
  magvit2 detokenize clip.safetensors -o frames/ --model my_tokenizer/     (PNG frames)
  magvit2 detokenize photo.safetensors -o photo.png --model my_tokenizer/
  magvit2 detokenize shards/shard-00003.parquet --row 7 -o clip.mp4 --model my_tokenizer/"""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``detokenize`` sub-command."""
    p = sub.add_parser(
        "detokenize",
        help="token file -> video (mp4), PNG frames or a PNG",
        description="Decode a token file back to the source's size, frame count and frame rate.\n"
        "The output kind follows -o: a video extension (.mp4, .mkv, .webm, ...) writes a video, .png "
        "writes one image (one-frame clips), anything else a folder of PNG frames.\n\n" + EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("tokens", metavar="TOKENS", help="a .safetensors token file or a .parquet shard")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="video file, .png or a folder")
    p.add_argument("--row", type=int, default=None, help="row of a Parquet shard to decode")
    p.add_argument(
        "--crf", type=at_least(0, 51), default=18, help="H.264 quality of video outputs (0 = best .. 51, 18)"
    )
    add_model_args(p)
    add_output_args(p)
    p.set_defaults(func=run)


def load_clip(path: Path, runner: TokenizerRunner, row: int | None) -> tuple[EncodedClip, Fraction]:
    """Read a token file or a shard row made by ``runner``'s model -> (clip tokens, fps)."""
    if path.suffix == ".parquet":
        tf = read_row(path, row, expect_model=runner.fingerprint, spatial_factor=runner.s)
    elif row is not None:
        raise ValueError(f"{path}: --row is for Parquet shards, this is a token file")
    else:
        tf = load_tokens(path, expect_model=runner.fingerprint)
    return EncodedClip(tf.ids, tf.frames, tf.height, tf.width, tf.pad_bottom, tf.pad_right), tf.fps


def output_kind(out: Path) -> str:
    """``video``, ``png`` or ``frames`` (a folder of PNGs) from the output path."""
    if out.suffix.lower() in VIDEO_EXTENSIONS:
        return "video"
    if out.suffix.lower() == ".png":
        return "png"
    if out.suffix and not out.is_dir():
        raise ValueError(
            f"{out}: unknown output kind {out.suffix!r}; use a video extension "
            f"({', '.join(sorted(VIDEO_EXTENSIONS))}), .png or a folder"
        )
    return "frames"


def exact_size_writer(path: Path, fps, height: int, width: int, crf: int) -> VideoWriter:
    """An H.264 writer that keeps the frame size exactly: 4:2:0 needs even sizes, so odd sizes are
    written in 4:4:4 (plays in fewer players, but no padding row or column)."""
    pix_fmt = "yuv444p" if height % 2 or width % 2 else "yuv420p"
    return VideoWriter(path, fps, width=width, height=height, crf=crf, pix_fmt=pix_fmt)


def write_frames(out: Path, chunks, fps: Fraction, height: int, width: int, frames: int, args) -> None:
    """Write uint8 chunks ``(T, H, W, 3)`` to ``out`` atomically (video, one PNG or PNG frames)."""
    kind = output_kind(out)
    if kind == "png" and frames != 1:
        raise ValueError(f"{out}: a .png holds one frame, this clip has {frames}; use .mp4 or a folder")
    with atomic_output(out, args.overwrite) as tmp, progress(frames, "frame", out.name, args.quiet) as bar:
        if kind == "video":
            with exact_size_writer(tmp, fps, height, width, args.crf) as writer:
                for chunk in chunks:
                    writer.write_frames(chunk)
                    bar.update(len(chunk))
        elif kind == "png":
            write_png(tmp, next(iter(chunks))[0])
        else:
            tmp.mkdir()
            index = 0
            for chunk in chunks:
                for frame in chunk:
                    write_png(tmp / f"frame_{index:05d}.png", frame)
                    index += 1
                bar.update(len(chunk))


def run(args: argparse.Namespace) -> int:
    """Decode ``args.tokens`` to ``args.output``."""
    path, out = Path(args.tokens), Path(args.output)
    output_kind(out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out}: output exists (pass --overwrite to replace it)")
    runner = make_runner(args)
    clip, fps = load_clip(path, runner, args.row)
    try:
        write_frames(out, runner.decode_clip(clip), fps, clip.height, clip.width, clip.frames, args)
    except ValueError as err:  # the grid does not fit the recorded size: name the token file
        raise ValueError(one_line(path, err)) from err
    return 0
