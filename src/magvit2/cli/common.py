"""What the ``tokenize``/``detokenize``/``reconstruct``/``info`` sub-commands share: the model and
inference options, input discovery, atomic outputs, progress bars and error messages."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from magvit2.cli.allocator import release_free_memory
from magvit2.config_io import resolve_path
from magvit2.data.media import media_in_folder
from magvit2.fileio import atomic_path, remove_path, stale_temps
from magvit2.inference.refine import DEFAULT_LR
from magvit2.inference.streaming import InferenceOptions, TokenizerRunner
from magvit2.models import VideoTokenizer
from magvit2.models.checks import read_model_config
from magvit2.models.tokenizer import PRETRAINED_DIR

#: The built-in model (package data), used when no --model is given; named by path, so that a folder
#: called ``default`` in the working directory never shadows it.
BUILTIN_DIR = PRETRAINED_DIR / "default"


def at_least(low: int, high: int | None = None):
    """An argparse ``type``: an int ``>= low`` (and ``<= high``); a clear usage error otherwise."""
    want = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {want}, got {value}")
        return value

    parse.__name__ = want
    return parse


def add_model_args(p: argparse.ArgumentParser, inference: bool = True) -> None:
    """``--model``, ``--device`` and (``inference``) ``--batch-size``, ``--max-chunk-frames``, ``--tile``."""
    g = p.add_argument_group("model and inference")
    g.add_argument(
        "--model",
        metavar="DIR",
        help="tokenizer folder written by VideoTokenizer.save_pretrained (default: the built-in model)",
    )
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if available)")
    if inference:
        g.add_argument("--batch-size", type=at_least(1), default=4, help="tiles per forward pass (default 4)")
        g.add_argument(
            "--max-chunk-frames",
            type=at_least(0),
            default=17,
            help="frames per causal time chunk; memory depends on this, not on the video length "
            "(default 17; 0: whole clips at once)",
        )
        g.add_argument(
            "--tile",
            type=at_least(1),
            default=None,
            metavar="PX",
            help="encode/decode frames larger than PX pixels in overlapping tiles, so memory depends on "
            "the tile, not the frame (default: no tiling); exact for channel-norm models such as the "
            "built-in one when the overlap covers the receptive field, approximate for GroupNorm models",
        )
        g.add_argument(
            "--tile-overlap", type=at_least(0), default=None, metavar="PX", help="tile overlap (tile/4)"
        )
        g.add_argument(
            "--flat-memory",
            action="store_true",
            help="lower, flatter memory on long videos (glibc: every buffer of 256 KiB or more gets "
            "its own mmap); slower, up to 2x on small frames (default: glibc's allocator, whose peak "
            "creeps up slowly with the frames streamed: 1.40x against 1.11x over 40 min of 128x128); "
            "with --refine-steps it makes each backward pass about 1.6x slower",
        )


def add_refine_args(p: argparse.ArgumentParser) -> None:
    """``--refine-steps`` and ``--refine-lr`` (commands that encode)."""
    g = p.add_argument_group("token refinement (slower encoding, closer reconstructions)")
    g.add_argument(
        "--refine-steps",
        type=at_least(0),
        default=0,
        metavar="N",
        help="search for better tokens with N decoder passes per chunk (e.g. 30; default 0: the "
        "encoder's tokens). The tokens stay ordinary tokens of the same model; never worse than the "
        "encoder's. With --tile, each tile is refined on its own",
    )
    g.add_argument(
        "--refine-lr", type=float, default=DEFAULT_LR, help=f"step size of the search (default {DEFAULT_LR})"
    )


def add_output_args(p: argparse.ArgumentParser) -> None:
    """``--overwrite`` and ``--quiet``."""
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; checks that a cuda device exists."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device: expected cpu, cuda, cuda:N or auto, got {name!r}") from err
    if device.type == "cpu" and device.index not in (None, 0):
        raise ValueError(f"--device {name}: there is one CPU device; use --device cpu")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:  # e.g. mps without Metal, cuda:7 on a 2-GPU machine
        reason = " ".join(str(err).split())
        raise ValueError(f"--device {name}: not usable on this machine ({reason[:150]})") from err
    return name


def load_model(model: str | None, device: str = "cpu") -> VideoTokenizer:
    """The tokenizer in folder ``model``, or the built-in one when ``model`` is None."""
    if model is not None:
        path = Path(resolve_path(model))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{model}: not a tokenizer folder (expected config.json and model.safetensors written by "
                "VideoTokenizer.save_pretrained)"
            )
        read_model_config(path)  # a malformed config.json: one line naming the file and the field
        return VideoTokenizer.from_pretrained(path, device=device)
    if not (BUILTIN_DIR / "config.json").is_file():
        raise ValueError(
            f"the built-in model is missing from this installation ({BUILTIN_DIR}): pass --model DIR "
            "(a folder written by VideoTokenizer.save_pretrained)"
        )
    return VideoTokenizer.from_pretrained(BUILTIN_DIR, device=device)


def make_runner(args: argparse.Namespace) -> TokenizerRunner:
    """Model + inference options from the parsed arguments."""
    device = resolve_device(args.device)
    model = load_model(args.model, device)
    mcf = args.max_chunk_frames or None  # 0: whole clips
    options = InferenceOptions(
        device=device,
        batch_size=args.batch_size,
        max_chunk_frames=mcf,
        tile=args.tile,
        overlap=args.tile_overlap,
        refine_steps=getattr(args, "refine_steps", 0),
        refine_lr=getattr(args, "refine_lr", DEFAULT_LR),
    )
    return TokenizerRunner(model, options, after_chunk=release_free_memory)


def discover_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Files, folders (searched recursively for video/image files) and globs -> sorted, unique
    ``(file, root)`` pairs; ``root`` is the folder a file's output name is taken relative to."""
    found: dict[Path, Path] = {}
    for item in inputs:
        item = resolve_path(item)
        matches = [Path(item)] if Path(item).exists() else [Path(m) for m in glob.glob(item, recursive=True)]
        if not matches:
            raise FileNotFoundError(f"{item}: no such file, folder or matching glob")
        for path in matches:
            if path.is_dir():
                for f in media_in_folder(path):
                    found.setdefault(f, path)
            else:
                found.setdefault(path, path.parent)
    if not found:
        raise FileNotFoundError(f"{' '.join(inputs)}: no video or image files found")
    return sorted(found.items(), key=lambda kv: str(kv[0]))


def output_names(files: list[tuple[Path, Path]]) -> tuple[list[str], Path | None]:
    """The output name of each ``(file, root)`` pair from :func:`discover_inputs` (same order), and the
    folder they are relative to when it is not each input's own.

    Names are paths relative to each input's folder (``clips/a.mp4`` -> ``a.mp4``). When two inputs
    would share a name (``A/clip.mp4`` and ``B/clip.mp4``), every name is taken relative to the
    inputs' common parent instead (``A/clip.mp4``, ``B/clip.mp4``), which is returned. Two inputs
    that are the same file are refused, listing them.
    """
    names = [str(path.relative_to(root)) for path, root in files]
    if len(set(names)) == len(names):
        return names, None
    absolute = [Path(os.path.abspath(path)) for path, _ in files]
    parent = Path(os.path.commonpath([str(p.parent) for p in absolute]))
    names = [str(p.relative_to(parent)) for p in absolute]
    seen: dict[str, list[str]] = {}
    for name, (path, _) in zip(names, files, strict=True):
        seen.setdefault(name, []).append(str(path))
    same = [paths for paths in seen.values() if len(paths) > 1]
    if same:
        listed = "; ".join(" and ".join(paths) for paths in same)
        raise ValueError(f"inputs name the same file more than once ({listed}); give each file once")
    return names, parent


def progress(total: int | None, unit: str, desc: str, quiet: bool) -> tqdm:
    """A tqdm bar on stderr (rate and ETA), off with ``--quiet`` or when stderr is not a terminal."""
    return tqdm(
        total=total,
        unit=unit,
        desc=desc,
        file=sys.stderr,
        disable=quiet or not sys.stderr.isatty(),
        dynamic_ncols=True,
    )


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``--overwrite``; the parent folder must exist or is made."""
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: output exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)


@contextlib.contextmanager
def atomic_output(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success it is renamed to ``path``, on
    any failure it is deleted, so no partial output is ever left. Works for files and folders.
    Temporaries of the same output left by a killed run are removed first."""
    check_output(path, overwrite)
    for stale in stale_temps(path.parent):  # this output's temporaries left by a killed run
        if stale.name.startswith(f".{path.stem}.tmp-"):
            remove_path(stale)
    with atomic_path(path, replace_dir=overwrite) as tmp:
        yield tmp


def printable(text: str) -> str:
    """``text`` with the bytes of file names that are not valid UTF-8 written as ``\\xff`` escapes,
    so that any stream can print it."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def one_line(path: Path | str, err: BaseException) -> str:
    """``<file>: <what>`` on one line (the file is not repeated if the message already names it)."""
    msg = " ".join(str(err).split())
    name = os.fspath(path)
    return printable(msg if name in msg else f"{name}: {msg}")


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) under ``torchrun`` (its RANK / WORLD_SIZE variables), else (0, 1)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
