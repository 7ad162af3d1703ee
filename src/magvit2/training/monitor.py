"""Watching a run: a tqdm progress bar, Python logging and TensorBoard (all on rank 0 only)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

log = logging.getLogger("magvit2.train")


class Monitor:
    """Progress bar with loss, throughput and ETA; TensorBoard scalars and images.

    On ranks other than 0 every method does nothing. Without the ``tensorboard`` package the
    TensorBoard part is skipped with one warning.
    """

    def __init__(
        self,
        enabled: bool,
        output_dir: Path,
        start_step: int,
        max_steps: int,
        progress: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.enabled = enabled
        self.bar = None
        self.writer = None
        self._last_time = time.perf_counter()
        self._last_step = start_step
        if not enabled:
            return
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=max_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # pragma: no cover - tensorboard is a dependency of the dev extra
                log.warning("tensorboard is not installed: no TensorBoard events (pip install tensorboard)")
            else:
                self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step)

    def throughput(self, step: int, samples_per_step: int) -> tuple[float, float]:
        """(steps/s, samples/s) since the previous call; ``step`` = steps completed."""
        now = time.perf_counter()
        steps = max(0, step - self._last_step)
        dt = max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        return steps / dt, steps * samples_per_step / dt

    def advance(self, n: int = 1) -> None:
        """Move the progress bar by ``n`` steps."""
        if self.bar is not None:
            self.bar.update(n)

    def scalars(self, step: int, values: dict[str, float], postfix: dict[str, str] | None = None) -> None:
        """Write scalars ``{tag: value}`` at ``step``; show ``postfix`` on the bar."""
        if not self.enabled:
            return
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)
        if self.bar is not None and postfix:
            self.bar.set_postfix(postfix, refresh=False)

    def video_pair(self, tag: str, step: int, original: torch.Tensor, reconstruction: torch.Tensor) -> None:
        """Log one clip ``(3, T, H, W)`` in [-1, 1] and its reconstruction as an image: frames left to
        right, original on top."""
        if not self.enabled or self.writer is None:
            return
        rows = [torch.cat(list(v.float().clamp(-1, 1).unbind(1)), dim=-1) for v in (original, reconstruction)]
        grid = (torch.cat(rows, dim=-2) + 1) / 2
        self.writer.add_image(tag, grid, step)

    def message(self, text: str) -> None:
        """Log a line without breaking the progress bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            log.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
