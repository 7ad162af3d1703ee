"""COMMIT-style conditional tasks of the masked video model: which tokens of a window are given.

A task is a boolean mask ``given`` over the token grid ``(T, h, w)``: given tokens enter the model as
themselves and are kept exactly in the output; the others are generated.

* ``predict``: the first ``k`` latent frames (frame prediction);
* ``interpolate``: the first ``k`` and the last ``e`` latent frames;
* ``outpaint``: a spatial box in every latent frame (everything around it is generated);
* ``inpaint``: everything but a spatial box in every latent frame (the box is generated);
* ``class``: nothing (class-conditional generation; unconditional for a model without classes).

Training draws a task for every window from the mix of :class:`MaskedSection`; its index enters the
model as a task embedding (COMMIT's task prompt).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

TASKS = ("predict", "interpolate", "outpaint", "inpaint", "class")


@dataclass
class MaskedSection:
    """Training and scoring of a masked model (``model.kind: masked``).

    Attributes:
        predict, interpolate, outpaint, inpaint, class_conditional: relative share of training windows
            drawn for each task (normalised; 0 leaves a task out).
        score_steps: steps of the random unmasking order in which held-out tokens are scored (bits
            per token: :meth:`magvit2.lm.masked.MaskedVideoLM.log_prob`).
    """

    predict: float = 0.3
    interpolate: float = 0.15
    outpaint: float = 0.15
    inpaint: float = 0.15
    class_conditional: float = 0.25
    score_steps: int = 12

    def __post_init__(self) -> None:
        shares = self.shares()
        if any(s < 0 for s in shares) or not sum(shares) > 0:
            raise ValueError(f"masked: task shares must be >= 0 with a positive sum, got {shares}")
        if self.score_steps < 1:
            raise ValueError(f"masked.score_steps must be >= 1, got {self.score_steps}")

    def shares(self) -> list[float]:
        """The shares in the order of :data:`TASKS`."""
        return [self.predict, self.interpolate, self.outpaint, self.inpaint, self.class_conditional]


@dataclass(frozen=True)
class Box:
    """A spatial box of token cells: rows ``top .. top+height-1``, columns ``left .. left+width-1``."""

    top: int
    left: int
    height: int
    width: int


def centre_box(height: int, width: int) -> Box:
    """The centre half of each side of a ``height x width`` grid (at least one cell)."""
    top, left = height // 4, width // 4
    return Box(top, left, max(1, height - 2 * top), max(1, width - 2 * left))


def task_mask(
    task: str, frames: int, height: int, width: int, prompt: int = 1, end: int = 1, box: Box | None = None
) -> Tensor:
    """The given tokens of ``task`` -> bool ``(frames, height, width)``.

    ``prompt``: latent frames given at the start (predict, interpolate); ``end``: at the end
    (interpolate); ``box``: the spatial box given (outpaint) or generated (inpaint), default the centre
    half of each side.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    given = torch.zeros(frames, height, width, dtype=torch.bool)
    if task in ("predict", "interpolate"):
        end = end if task == "interpolate" else 0
        if prompt < 1 or end < 0 or prompt + end >= frames:
            raise ValueError(
                f"task {task}: {prompt} latent frames given first and {end} last leave none of the "
                f"{frames} to generate"
            )
        given[:prompt] = True
        given[frames - end :] = True
    elif task in ("outpaint", "inpaint"):
        b = box or centre_box(height, width)
        inside = b.top >= 0 and b.left >= 0 and b.top + b.height <= height and b.left + b.width <= width
        if b.height < 1 or b.width < 1 or not inside:
            raise ValueError(f"task {task}: box {b} does not lie inside the {height}x{width} token grid")
        given[:, b.top : b.top + b.height, b.left : b.left + b.width] = True
        if task == "inpaint":
            given = ~given
    return given


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """A uniform integer in ``[low, high]``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def random_box(height: int, width: int, generator: torch.Generator) -> Box:
    """A box whose sides are a quarter to three quarters of the grid's (at least 1), placed anywhere."""
    bh = _randint(max(1, math.ceil(height / 4)), max(1, (3 * height) // 4), generator)
    bw = _randint(max(1, math.ceil(width / 4)), max(1, (3 * width) // 4), generator)
    return Box(_randint(0, height - bh, generator), _randint(0, width - bw, generator), bh, bw)


def random_task(
    frames: int, height: int, width: int, section: MaskedSection, generator: torch.Generator
) -> tuple[int, Tensor]:
    """One training window's task -> (task index, given ``(frames, height, width)``). Frame tasks that
    the window is too short for (predict needs 2 latent frames, interpolate 3) become ``class``."""
    task = TASKS[int(torch.multinomial(torch.tensor(section.shares()), 1, generator=generator))]
    if (task == "predict" and frames < 2) or (task == "interpolate" and frames < 3):
        task = "class"
    if task == "predict":
        return 0, task_mask(task, frames, height, width, prompt=_randint(1, frames - 1, generator))
    if task == "interpolate":
        prompt = _randint(1, frames - 2, generator)
        end = _randint(1, frames - 1 - prompt, generator)
        return 1, task_mask(task, frames, height, width, prompt=prompt, end=end)
    if task in ("outpaint", "inpaint"):
        box = random_box(height, width, generator)
        return TASKS.index(task), task_mask(task, frames, height, width, box=box)
    return TASKS.index(task), task_mask(task, frames, height, width)


def random_tasks(
    batch: int, frames: int, height: int, width: int, section: MaskedSection, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Tasks of a micro-batch -> (task indices ``(B,)``, given ``(B, frames, height, width)``)."""
    drawn = [random_task(frames, height, width, section, generator) for _ in range(batch)]
    return torch.tensor([d[0] for d in drawn]), torch.stack([d[1] for d in drawn])


def parse_region(text: str, height: int, width: int, spatial: int) -> Box:
    """``--region Y,X,H,W`` in pixels of a ``height x width`` frame -> the token cells that cover it."""
    try:
        y, x, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--region {text}: expected Y,X,H,W in pixels (four integers)") from None
    if h < 1 or w < 1 or y < 0 or x < 0 or y + h > height or x + w > width:
        raise ValueError(f"--region {text}: the box must lie inside the {height}x{width} frame")
    top, left = y // spatial, x // spatial
    return Box(top, left, -(-(y + h) // spatial) - top, -(-(x + w) // spatial) - left)
