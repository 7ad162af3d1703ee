"""Small file-system helpers shared by the writers of token files, models and checkpoints."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def set_default_permissions(path: str | Path) -> None:
    """Give ``path`` the permissions a newly created file gets under the current umask.

    safetensors creates its files readable by the owner only (0600); the files we publish (token
    files, models) should be as readable as any other file the user writes.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | Path, replace_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (hidden, same suffix) to write a file or folder into;
    when the block ends without an error it is renamed onto ``path`` in one step, and on any error it
    is deleted, so ``path`` is either absent, the old version or the complete new one, never partial.

    ``replace_dir``: an existing folder at ``path`` is removed first (a rename cannot replace a
    non-empty folder).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if replace_dir and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
