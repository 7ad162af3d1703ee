"""Small file-system helpers shared by the writers of token files, models and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path


def set_default_permissions(path: str | Path) -> None:
    """Give ``path`` the permissions a newly created file gets under the current umask.

    safetensors creates its files readable by the owner only (0600); the files we publish (token
    files, models) should be as readable as any other file the user writes.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)
