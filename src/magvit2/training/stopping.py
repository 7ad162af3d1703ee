"""Stopping a training run early without losing it.

A scheduler that pre-empts a job sends SIGTERM (Slurm, Kubernetes, ``timeout``), a person presses
Ctrl-C (SIGINT), or a job has a fixed wall-clock allowance. :class:`StopRequests` notes each of
these; the trainer asks it after every step, and on a request finishes that step, writes a checkpoint
and the final weights, and returns, so that ``magvit2 train CONFIG --resume`` continues exactly there
(the same weights as a run that was never stopped).

Only the first signal is caught: the handlers are put back at once, so a second Ctrl-C stops the
process as usual.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType

#: Why a run stopped, as a code every process can all-reduce (the largest code wins).
REASONS = (None, "time limit", "SIGINT", "SIGTERM")


class StopRequests:
    """Context manager that records a stop request: SIGTERM or SIGINT arriving, or ``time_limit_s``
    seconds passing since ``__enter__``.

    Signal handlers are installed only in the main thread (Python allows no other); elsewhere only
    the time limit applies.
    """

    signals = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, time_limit_s: float | None = None) -> None:
        if time_limit_s is not None and not time_limit_s > 0:
            raise ValueError(f"StopRequests: time_limit_s must be > 0 or None, got {time_limit_s}")
        self.time_limit_s = time_limit_s
        self.signal_name: str | None = None
        self._previous: dict[signal.Signals, object] = {}
        self._start = time.monotonic()

    def __enter__(self) -> StopRequests:
        self._start = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal_name = signal.Signals(signum).name
        self._restore()  # a second signal acts as it would without us

    def elapsed_s(self) -> float:
        """Seconds since the context was entered."""
        return time.monotonic() - self._start

    def code(self) -> int:
        """0: no request; else an index into :data:`REASONS` (a signal outranks the time limit)."""
        if self.signal_name is not None:
            return REASONS.index(self.signal_name)
        if self.time_limit_s is not None and self.elapsed_s() >= self.time_limit_s:
            return REASONS.index("time limit")
        return 0
