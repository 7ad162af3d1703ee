"""Read a foreign checkpoint's tensors without running its pickled code.

A Lightning checkpoint is a pickle. We read it with ``torch.load(..., weights_only=True)`` only: the
restricted unpickler that rebuilds tensors and plain containers and refuses everything else. Lightning
checkpoints often also hold metadata objects (``hyper_parameters`` as an OmegaConf ``DictConfig``,
paths, ...), which that unpickler refuses by name. For those names only we register an inert stand-in
(:class:`InertGlobal`) that records its arguments and never executes the original class or function, so
the tensors can still be read; the stand-ins' names are returned for the report.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

#: How many distinct foreign globals we stand in for before giving up.
MAX_STUBBED_GLOBALS = 256

_UNSUPPORTED = re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global")


class InertGlobal:
    """Stand-in for a class or function a checkpoint's pickle names; holds arguments and state only."""

    def __new__(cls, *args, **kwargs):  # noqa: D102
        return super().__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"InertGlobal(args={len(self.args)}, state={type(self.state).__name__})"


def _torch_load_weights_only(path: Path) -> tuple[object, list[str]]:
    """``torch.load(path, weights_only=True)``, standing in for refused metadata globals.

    Returns the loaded object and the names of the globals replaced by :class:`InertGlobal`.
    """
    stubbed: list[str] = []
    while True:
        try:
            with torch.serialization.safe_globals([(InertGlobal, name) for name in stubbed]):
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
            return obj, stubbed
        except pickle.UnpicklingError as err:
            match = _UNSUPPORTED.search(str(err))
            if match is None or match.group(1) in stubbed or len(stubbed) >= MAX_STUBBED_GLOBALS:
                raise ValueError(
                    f"{path}: torch.load(weights_only=True) refused this file ({err}). We never "
                    "unpickle arbitrary objects; in an environment you trust, save its state dict as "
                    "safetensors (safetensors.torch.save_file(torch.load(p)['state_dict'], 'sd.safetensors'))"
                    " "
                    "and convert that file"
                ) from err
            stubbed.append(match.group(1))
        except (EOFError, KeyError, RuntimeError, ValueError, IndexError) as err:  # not a torch file
            raise ValueError(
                f"{path}: not a readable checkpoint (a torch.save / Lightning .ckpt or safetensors file; "
                f"truncated or another kind of file?): {type(err).__name__}: {err}"
            ) from err


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _find_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    """The flat ``name -> tensor`` dict inside a loaded checkpoint (``obj["state_dict"]`` for Lightning)."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"{path}: expected a Lightning checkpoint (a dict with 'state_dict') or a state dict of tensors; "
            f"got {type(obj).__name__}"
        )
    state: dict[str, Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(
                f"{path}: expected a state dict of str -> tensor; key {key!r} holds {type(value).__name__}"
            )
        state[key] = value
    return state


def read_state_dict(path: str | Path) -> tuple[dict[str, Tensor], list[str]]:
    """Tensors of a checkpoint file: a Lightning ``.ckpt``, a ``torch.save``-d state dict, or safetensors.

    Returns ``(state, stubbed)``: the flat ``name -> tensor`` dict (on the CPU; the Lightning
    checkpoint's ``state_dict`` entry) and the names of metadata globals that were replaced by inert
    stand-ins while reading (see :func:`_torch_load_weights_only`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":  # safetensors: u64 header size, then JSON
        try:
            return load_file(str(path), device="cpu"), []
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if head[:4] != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save: a zip, or (legacy) a pickle
        raise ValueError(
            f"{path}: not a checkpoint (expected a torch.save / Lightning .ckpt or a safetensors file; "
            f"it starts with {head[:4]!r})"
        )
    obj, stubbed = _torch_load_weights_only(path)
    return _find_state_dict(obj, path), stubbed
