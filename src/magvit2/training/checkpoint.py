"""Crash-safe training checkpoints: safetensors for every tensor, JSON for everything else.

A checkpoint is a folder ``step-00001234/`` in the run's ``checkpoints/`` directory holding

* ``<group>.safetensors`` for each weight group (``model``, ``ema``, ``discriminator``, ...), and
* ``state.safetensors`` + ``state.json``: optimiser/scheduler/RNG/data-position state, where every
  tensor inside the nested state is stored in the safetensors file and replaced in the JSON by
  ``{"__tensor__": key}``.

* ``manifest.json``, written last: the size and SHA-256 of every other file, so that
  :func:`verify_checkpoint` can tell a complete checkpoint from a damaged one (checkpoints written
  before it existed are verified by reading every file).

It is written into ``step-00001234.tmp-<pid>/`` and renamed into place, so a folder without the
``.tmp`` suffix is always complete; a run killed at any moment leaves at worst a stale ``.tmp``
folder, which the next run removes. A write that fails (a full disk) removes the temporary folder
and raises an OSError naming it; the checkpoints before it are untouched. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from magvit2.fileio import remove_stale_temps

_STEP_DIR = re.compile(r"^step-(\d+)$")
MANIFEST = "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete or damaged (the message names the file and the fault)."""


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """Replace every tensor in a nested dict/list structure by a reference, collecting the tensors.

    Returns the JSON-able skeleton; ``tensors`` receives ``key -> tensor`` (contiguous CPU clones).
    """
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            tag = f"{type(k).__name__}:{k}"
            out[tag] = flatten_state(v, tensors, f"{prefix}.{k}")
        return {"__dict__": out}
    if isinstance(obj, (list, tuple)):
        items = [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        out = {}
        for tag, v in obj["__dict__"].items():
            kind, key = tag.split(":", 1)
            out[int(key) if kind == "int" else key] = unflatten_state(v, tensors)
        return out
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    root: str | Path,
    step: int,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict[str, Any],
    keep_last: int = 3,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Atomically write checkpoint ``root/step-XXXXXXXX`` and keep only the newest ``keep_last``.

    Args:
        root: the checkpoints folder (created if missing).
        step: the optimisation step the state corresponds to (steps completed).
        weights: group name -> state dict of tensors (one safetensors file each).
        state: nested dict of everything else (may contain tensors anywhere).
        keep_last: how many complete checkpoints to keep (>= 1).
        extra_files: file name -> text to write alongside (e.g. the model's ``config.json``).

    A failed write (e.g. a full disk) raises an OSError naming the folder; nothing is left of it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        _write_files(tmp, step, weights, state, extra_files or {})
    except Exception as err:  # safetensors raises its own error type for a full disk, not an OSError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = " ".join(str(err).split())
        raise OSError(f"{final}: cannot write this checkpoint ({reason}); earlier ones are kept") from err
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    prune_checkpoints(root, keep_last)
    return final


def _write_files(
    folder: Path, step: int, weights: dict, state: dict[str, Any], extra_files: dict[str, str]
) -> None:
    """Every file of a checkpoint into ``folder``, ``manifest.json`` last, all synced to disk."""
    for group, tensors in weights.items():
        clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        save_file(clean, str(folder / f"{group}.safetensors"))
    state_tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, state_tensors)
    save_file(state_tensors, str(folder / "state.safetensors"))
    (folder / "state.json").write_text(json.dumps({"step": step, "state": skeleton}))
    for name, text in extra_files.items():
        (folder / name).write_text(text)
    sums = {f.name: {"size": f.stat().st_size, "sha256": _sha256(f)} for f in sorted(folder.iterdir())}
    (folder / MANIFEST).write_text(json.dumps({"files": sums}, indent=1))
    for f in folder.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(folder)


def _sha256(path: Path) -> str:
    """SHA-256 of a file, read in 16 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def verify_checkpoint(path: str | Path) -> None:
    """A :class:`CheckpointError` naming the file unless checkpoint folder ``path`` is complete: every
    file in its ``manifest.json`` present with its size and SHA-256. A checkpoint written before
    manifests existed is checked by reading ``state.json`` and every safetensors file."""
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.is_file():
        load_checkpoint(path)
        return
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest}: damaged ({err})") from err
    for name, want in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        if f.stat().st_size != want["size"]:
            raise CheckpointError(f"{f}: {f.stat().st_size} bytes, {want['size']} written (truncated?)")
        if _sha256(f) != want["sha256"]:
            raise CheckpointError(f"{f}: damaged (its SHA-256 differs from the one written)")


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders in ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(root: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints and any stale ``.tmp`` folders
    (of processes that are gone)."""
    root = Path(root)
    remove_stale_temps(root)
    complete = list_checkpoints(root)
    for p in complete[: max(0, len(complete) - max(1, keep_last))]:
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    complete = list_checkpoints(root)
    return complete[-1] if complete else None


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read a checkpoint folder -> (step, weight groups, state); a :class:`CheckpointError` naming the
    file that is missing or cannot be read."""
    path = Path(path)
    meta_file = path / "state.json"
    if not meta_file.is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no state.json)")
    try:
        meta = json.loads(meta_file.read_text())
        step, skeleton = int(meta["step"]), meta["state"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{meta_file}: damaged ({type(err).__name__}: {err})") from err
    tensors = _load(path / "state.safetensors")
    try:
        state = unflatten_state(skeleton, tensors)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{meta_file}: damaged (does not fit state.safetensors: {err})") from err
    weights = {
        f.name.removesuffix(".safetensors"): _load(f)
        for f in sorted(path.glob("*.safetensors"))
        if f.name != "state.safetensors"
    }
    return step, weights, state


def _load(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a :class:`CheckpointError` naming it if it cannot be read."""
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error type (and OSErrors when missing)
        raise CheckpointError(f"{path}: cannot be read (truncated or damaged?): {err}") from err
