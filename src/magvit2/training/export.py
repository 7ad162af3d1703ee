"""Turn a training checkpoint into a model folder that ``VideoTokenizer.from_pretrained`` loads."""

from __future__ import annotations

from pathlib import Path

import torch

from magvit2.models import VideoTokenizer
from magvit2.training.checkpoint import latest_checkpoint, load_checkpoint
from magvit2.training.config import load_train_config, tokenizer_config

__all__ = ["find_checkpoint", "export_checkpoint"]


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder (``step-N``) as given, else the newest one in ``path/checkpoints`` or ``path``."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    for root in (path / "checkpoints", path):
        found = latest_checkpoint(root) if root.is_dir() else None
        if found is not None:
            return found
    raise ValueError(
        f"{path}: expected a training checkpoint folder (step-N with state.json), its checkpoints/ "
        "folder or a run folder holding one; found none"
    )


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    ema: bool = True,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> tuple[Path, int, str]:
    """Write the checkpoint's tokenizer (EMA copy unless ``ema=False``) to ``out_dir``; ``dtype`` as
    :meth:`VideoTokenizer.save_pretrained` takes it.

    The architecture comes from the checkpoint's own ``config.yaml``. Returns (checkpoint folder, its
    step, weight group exported: ``"ema"`` or ``"model"``).
    """
    path = find_checkpoint(checkpoint)
    out_dir = Path(out_dir)
    if (out_dir / "model.safetensors").exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already holds a model (pass --overwrite to replace it)")
    config_file = path / "config.yaml"
    if not config_file.is_file():
        raise ValueError(f"{path}: expected the run's config.yaml inside the checkpoint; it is missing")
    model = VideoTokenizer(tokenizer_config(load_train_config(config_file)))
    step, weights, _ = load_checkpoint(path)
    group = "ema" if ema else "model"
    if group not in weights:
        raise ValueError(f"{path}: has no EMA weights (ema_decay was null); export with --raw")
    missing, unexpected = model.load_state_dict(weights[group], strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}/{group}.safetensors: does not match config.yaml; missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    model.save_pretrained(out_dir, dtype=dtype)
    return path, step, group
