"""Crash-safe training checkpoints: safetensors for every tensor, JSON for everything else.

A checkpoint is a folder ``step-00001234/`` in the run's ``checkpoints/`` directory holding

* ``<group>.safetensors`` for each weight group (``model``, ``ema``, ``discriminator``, ...), and
* ``state.safetensors`` + ``state.json``: optimiser/scheduler/RNG/data-position state, where every
  tensor inside the nested state is stored in the safetensors file and replaced in the JSON by
  ``{"__tensor__": key}``.

It is written into ``step-00001234.tmp-<pid>/`` and renamed into place, so a folder without the
``.tmp`` suffix is always complete; a run killed at any moment leaves at worst a stale ``.tmp``
folder, which the next save or resume removes. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_STEP_DIR = re.compile(r"^step-(\d+)$")


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
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for group, tensors in weights.items():
        clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        save_file(clean, str(tmp / f"{group}.safetensors"))
    state_tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten_state(state, state_tensors)
    save_file(state_tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"step": step, "state": skeleton}))
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    prune_checkpoints(root, keep_last)
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders in ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(root: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints and any stale ``.tmp`` folders."""
    root = Path(root)
    for p in root.glob("step-*.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)
    complete = list_checkpoints(root)
    for p in complete[: max(0, len(complete) - max(1, keep_last))]:
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    complete = list_checkpoints(root)
    return complete[-1] if complete else None


def load_checkpoint(path: str | Path) -> tuple[int, dict[str, dict[str, torch.Tensor]], dict[str, Any]]:
    """Read a checkpoint folder -> (step, weight groups, state)."""
    path = Path(path)
    meta_file = path / "state.json"
    if not meta_file.is_file():
        raise ValueError(f"{path} is not a complete checkpoint (no state.json)")
    meta = json.loads(meta_file.read_text())
    tensors = load_file(str(path / "state.safetensors"))
    state = unflatten_state(meta["state"], tensors)
    weights = {
        f.name.removesuffix(".safetensors"): load_file(str(f))
        for f in sorted(path.glob("*.safetensors"))
        if f.name != "state.safetensors"
    }
    return int(meta["step"]), weights, state
