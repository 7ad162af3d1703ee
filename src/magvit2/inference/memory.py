"""Will a frame fit? An estimate of the memory a tokenizer pass needs, checked before the pass.

A 5000x5000 image decodes from a small PNG, but the network's activations at full resolution take
gigabytes; without a check the allocator fails deep inside a convolution. :func:`check_fits` refuses
such a frame up front with a message that names the size and suggests a ``--tile`` that fits.

The estimate (measured with ``ru_maxrss`` on 2 CPU cores, encode and decode of random frames from 256
to 512 pixels, 1 and 5 frames, a small random model and the built-in one) is

    bytes = K * C * 4 * pixels * (frames + 2) + 16 * frame_pixels * frames

with ``C`` the channels at full resolution (``ch * ch_mult[0]``), ``frames`` the frames of one chunk
(+2: the causal convolutions' padding in time), ``K`` = 9 for an encoder pass and 14 for a decoder
pass; the last term holds whole frames (input, output, ids). The measured peaks
were 0.6 to 1.0 times it (it errs high, most with several frames a chunk). With tiles, ``pixels`` is
what one batch of tiles covers. A side with no network (a fixed block-mean code, e.g. the built-in
model's) takes whole frames and about ``FIXED_BYTES`` per pixel and frame (measured at 1280x720, 17
frames: 45 to encode, 95 to decode, frames included).
"""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path

import torch

from magvit2.models import VideoTokenizer

ENCODE_K, DECODE_K = 9.0, 14.0
#: Bytes per pixel and frame of a pass through a side with no network.
FIXED_BYTES = 100.0
#: Use at most this share of the available memory.
HEADROOM = 0.9


class FrameTooLargeError(ValueError):
    """A frame whose estimated pass does not fit in the memory available."""


def estimate_bytes(
    model: VideoTokenizer, pixels: int, frames: int, encode: bool, frame_pixels: int | None = None
) -> int:
    """Estimated peak memory of one encoder (``encode``) or decoder pass over ``frames`` frames of
    ``pixels`` pixels each (one batch of tiles), in frames of ``frame_pixels`` pixels (default
    ``pixels``; the formula in this module's docstring)."""
    cfg = model.config
    channels = cfg.ch * cfg.ch_mult[0]
    k = ENCODE_K if encode else DECODE_K
    whole = pixels if frame_pixels is None else frame_pixels
    if not hasattr(_side(model, encode), "conv_in"):  # no network
        return int(FIXED_BYTES * whole * frames)
    return int(k * channels * 4 * pixels * (frames + 2) + 16 * whole * frames)


def _side(model: VideoTokenizer, encode: bool) -> torch.nn.Module:
    """The encoder (``encode``) or the decoder of ``model``."""
    return model.encoder if encode else model.decoder


def available_bytes(device: torch.device) -> int | None:
    """Memory a pass may use now: free GPU memory on CUDA; on the CPU the smallest of the system's
    available memory, the cgroup's limit left and the address-space limit left (None: unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    found = [v for v in (_meminfo_available(), _cgroup_left(), _address_space_left()) if v is not None]
    return min(found) if found else None


def _read_int(path: str) -> int | None:
    """An integer file (``max`` and unreadable files: None)."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_left() -> int | None:
    """The memory limit of this process's cgroup (v2 or v1) minus what it uses."""
    for limit, used in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        cap, now = _read_int(limit), _read_int(used)
        if cap is not None and now is not None and cap < 1 << 60:
            return max(0, cap - now)
    return None


def _address_space_left() -> int | None:
    """``RLIMIT_AS`` (``ulimit -v``) minus this process's virtual size."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    except OSError:
        pass
    return None


def check_fits(
    model: VideoTokenizer,
    device: torch.device,
    height: int,
    width: int,
    frames: int,
    encode: bool,
    tile: int | None,
    batch_size: int,
) -> None:
    """A :class:`FrameTooLargeError` when one pass over a chunk of ``frames`` frames of
    ``height`` x ``width`` (in tiles of ``tile`` pixels, ``batch_size`` at a time) is estimated to need
    more memory than is available; it names the need and suggests a ``--tile`` that fits (for a side
    that takes whole frames, :meth:`VideoTokenizer.runs_in_tiles`, fewer frames a chunk)."""
    avail = available_bytes(device)
    if avail is None:
        return
    pixels = height * width
    if tile is not None and (height > tile or width > tile):
        pixels = min(pixels, batch_size * tile * tile)
    need = estimate_bytes(model, pixels, frames, encode, height * width)
    if need <= HEADROOM * avail:
        return
    if not model.runs_in_tiles(_side(model, encode)):
        advice = (
            "pass a smaller --max-chunk-frames (this model takes whole frames; tiles do not help)"
            if frames > 1
            else "use a machine with more memory"
        )
    else:
        frame_bytes = estimate_bytes(model, 0, frames, encode, height * width)
        per_pixel = estimate_bytes(model, 1_000_000, frames, encode, 0) / 1_000_000
        s = model.spatial_factor
        room = max(0.0, HEADROOM * avail - frame_bytes)
        fit = int(math.sqrt(room / per_pixel / batch_size)) // s * s
        advice = (
            f"pass --tile {fit} (or smaller) to process it in tiles"
            if fit >= s
            else "it does not fit even in the smallest tiles; use a machine with more memory"
        )
    raise FrameTooLargeError(
        f"a {width}x{height} frame ({frames} frames a chunk) needs about {need / 2**30:.1f} GiB to "
        f"{'encode' if encode else 'decode'} with this model, {avail / 2**30:.1f} GiB is available: {advice}"
    )
