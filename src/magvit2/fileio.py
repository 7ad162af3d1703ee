"""Small file-system helpers shared by the writers of token files, models and checkpoints."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

#: Temporary names of :func:`atomic_path` (``.NAME.tmp-PID[.SUFFIX]``) and of training checkpoints
#: (``step-N.tmp-PID``); the number is the writing process's id.
_TEMP_NAME = re.compile(r"^(\..+|step-\d+)\.tmp-(\d+)(\.[^./]+)?$")
#: The temporary file safetensors writes before renaming it (``.tmpXXXXXX``); it names no process, so
#: one is taken as stale once it is older than :data:`ORPHAN_AGE_S`.
_SAFETENSORS_TEMP = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")
ORPHAN_AGE_S = 600.0


def set_default_permissions(path: str | Path) -> None:
    """Give ``path`` the permissions a newly created file gets under the current umask.

    safetensors creates its files readable by the owner only (0600); the files we publish (token
    files, models) should be as readable as any other file the user writes.
    """
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


#: errno values that mean "the disk cannot take this write": full, read-only, over quota, too large.
WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}
_WRITE_WORDS = ("no space left", "read-only file system", "quota exceeded", "file too large")


def named_write_error(path: str | Path, err: OSError) -> OSError:
    """``err`` as an OSError naming ``path`` when it says the disk cannot take the write (full,
    read-only, quota, too large; by errno, or by its text for libraries that do not set one);
    other errors unchanged."""
    text = " ".join(str(err).split())
    if err.errno not in WRITE_ERRNOS and not any(w in text.lower() for w in _WRITE_WORDS):
        return err
    if os.fspath(path) in text:
        return err
    named = OSError(f"{path}: cannot write ({err.strerror or text})")
    named.errno = err.errno
    return named


@contextlib.contextmanager
def atomic_path(path: str | Path, replace_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (hidden, same suffix) to write a file or folder into;
    when the block ends without an error it is renamed onto ``path`` in one step, and on any error it
    is deleted, so ``path`` is either absent, the old version or the complete new one, never partial.

    ``replace_dir``: an existing folder at ``path`` is removed first (a rename cannot replace a
    non-empty folder). A full, read-only or over-quota disk is an OSError naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if replace_dir and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as err:
        raise named_write_error(path, err) from err
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def _process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_temps(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Temporary files and folders in ``folder`` left by writers that were killed: names written by
    :func:`atomic_path` or as checkpoint folders whose process is gone (a live process's are kept),
    and safetensors' own ``.tmpXXXXXX`` files older than :data:`ORPHAN_AGE_S`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    entries = folder.rglob(".tmp*") if recursive else folder.glob(".tmp*")
    found = [p for p in entries if _SAFETENSORS_TEMP.match(p.name) and _age_s(p) > ORPHAN_AGE_S]
    entries = folder.rglob("*.tmp-*") if recursive else folder.glob("*.tmp-*")
    for p in entries:
        m = _TEMP_NAME.match(p.name)
        if m and int(m.group(2)) != os.getpid() and not _process_alive(int(m.group(2))):
            found.append(p)
    return found


def _age_s(path: Path) -> float:
    """Seconds since ``path`` was last modified (0 if it is gone)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree (gone already is fine)."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Delete :func:`stale_temps` of ``folder``; returns what was removed."""
    removed = stale_temps(folder, recursive)
    for p in removed:
        remove_path(p)
    return removed
