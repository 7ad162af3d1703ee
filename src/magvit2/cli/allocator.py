"""glibc allocator settings for the streaming commands: memory returned to the system after each chunk,
and (``--flat-memory``) a fixed mmap threshold. No-ops with other C libraries."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _glibc():
    """The C library if it is glibc (has ``malloc_trim`` and ``mallopt``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError):
        return None
    return libc


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def bound_heap_growth(threshold: int = 256 * 1024) -> bool:
    """Serve every allocation of ``threshold`` bytes or more with its own mmap (glibc; process-wide).

    glibc raises its mmap threshold each time a large block is freed, so chunk-sized buffers (decoded
    frames, activations) move onto the heap, where they fragment: the peak resident size of a long
    streamed job then creeps up with the video's length although nothing is kept. A fixed threshold
    returns such buffers to the system as soon as they are freed, at the cost of fresh zeroed pages
    for each (1.3-2x the time). The streaming commands call this once at start when given
    ``--flat-memory``; never where gradients are taken (training 1.7x slower). Returns False where it
    does not apply (``benchmarks/long_video.py`` measures both).
    """
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def release_free_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; no-op elsewhere).

    The streaming commands call it after each chunk: without it, glibc's per-thread arenas (PyAV's
    decoder threads, torch's intra-op threads) fragment and the resident size creeps up with the
    video's length although nothing is kept.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
