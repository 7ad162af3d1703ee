"""Per-step schedule of the quantizer's entropy-loss weight (MAGVIT-v2 anneals it)."""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("cosine", "linear")


@dataclass(frozen=True)
class EntropyWeightSchedule:
    """Weight that holds ``start_weight`` for ``delay_steps``, moves to ``end_weight`` over
    ``anneal_steps`` (cosine or linear), then stays at ``end_weight``.

    ``w(s) = start`` for ``s <= delay``; with ``f = (s - delay) / anneal_steps`` clipped to ``[0, 1]``:
    linear ``start + (end - start) * f``; cosine ``end + (start - end) * (1 + cos(pi f)) / 2``.
    ``anneal_steps = 0`` jumps to ``end_weight`` right after the delay; ``start == end`` is constant.
    """

    start_weight: float = 0.1
    end_weight: float = 0.1
    anneal_steps: int = 0
    delay_steps: int = 0
    kind: str = "cosine"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"EntropyWeightSchedule kind must be one of {SCHEDULE_KINDS}, got {self.kind!r}")
        if self.anneal_steps < 0 or self.delay_steps < 0:
            raise ValueError(
                f"EntropyWeightSchedule steps must be >= 0, got anneal_steps={self.anneal_steps}, "
                f"delay_steps={self.delay_steps}"
            )

    def fraction(self, step: int) -> float:
        """Progress of the anneal at ``step``, in ``[0, 1]``."""
        if step <= self.delay_steps:
            return 0.0
        if self.anneal_steps == 0:
            return 1.0
        return min(1.0, (step - self.delay_steps) / self.anneal_steps)

    def __call__(self, step: int) -> float:
        """Entropy weight at optimiser step ``step`` (0-based)."""
        f = self.fraction(step)
        a, b = self.start_weight, self.end_weight
        if self.kind == "linear":
            return a + (b - a) * f
        return b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * f))
