"""Configs of the video language model: :class:`LMConfig` (the network) and :class:`LMTrainConfig`
(a training run), plain dataclasses read from YAML and changed with ``--set section.field=value``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from magvit2.config_io import apply_overrides, from_dict, read_yaml, to_dict
from magvit2.lm.tasks import MaskedSection
from magvit2.training.config import check_run_fields

POSITIONS = ("rope", "axial")
#: ``ar``: the decoder-only model of :mod:`magvit2.lm.transformer`; ``masked``: the bidirectional
#: masked model of :mod:`magvit2.lm.masked` (MaskGIT decoding, COMMIT task masks).
KINDS = ("ar", "masked")
#: Vocabularies up to this size get one embedding table and one softmax head; larger ones (LFQ) are
#: split into sub-tokens (``split_tokens``).
MAX_PLAIN_VOCABULARY = 2**16


def default_split(vocabulary: int) -> list[int] | None:
    """None (plain head) for vocabularies <= 2^16; else two halves of its bits (2^18 -> [9, 9])."""
    if vocabulary <= MAX_PLAIN_VOCABULARY:
        return None
    bits = (vocabulary - 1).bit_length()
    return [bits - bits // 2, bits // 2]


@dataclass
class LMConfig:
    """The transformer over a video's token grid (latent frame, row, column).

    Attributes:
        kind: ``ar`` (decoder-only, one token at a time) or ``masked`` (bidirectional, predicts
            masked tokens in parallel: :mod:`magvit2.lm.masked`).
        vocabulary: token ids lie in ``[0, vocabulary)`` (0 in a training config: the tokenizer's).
        height, width: the latent grid of one latent frame (0 in a training config: the shards').
        max_frames: latent frames of the longest training window (0 in a training config: from
            ``data``); learned axial positions cover that many, rotary ones any number.
        split_tokens: bit widths of the sub-tokens of an id, lowest bits first (``[9, 9]`` for LFQ
            2^18, Open-MAGVIT2's ``[6, 12]``); each enters through its own embedding (summed) and leaves
            through its own head, conditioned on the sub-tokens before it. Null: one table and one
            softmax for vocabularies up to 2^16, two halves of the bits for larger ones.
        dim, depth, heads, mlp_ratio: transformer width, blocks, attention heads, MLP width / dim.
        positions: ``rope`` (3D rotary: a third of each head's frequencies per axis) or ``axial``
            (learned frame + row + column embeddings added to the input).
        rope_base: the rotary frequency base.
        num_classes: classes for class-conditional models (0: unconditional); one more id is the
            "no class" of classifier-free guidance.
        dropout: dropout on attention outputs and MLPs.
    """

    kind: str = "ar"
    vocabulary: int = 0
    height: int = 0
    width: int = 0
    max_frames: int = 0
    split_tokens: list[int] | None = None
    dim: int = 256
    depth: int = 6
    heads: int = 8
    mlp_ratio: float = 4.0
    positions: str = "rope"
    rope_base: float = 10000.0
    num_classes: int = 0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        if self.positions not in POSITIONS:
            raise ValueError(f"model.positions must be one of {POSITIONS}, got {self.positions!r}")
        if self.dim < 1 or self.heads < 1 or self.dim % self.heads:
            raise ValueError(
                f"model.dim ({self.dim}) must be a positive multiple of model.heads ({self.heads})"
            )
        if self.depth < 1:
            raise ValueError(f"model.depth must be >= 1, got {self.depth}")
        if self.positions == "rope" and self.dim // self.heads < 6:
            raise ValueError(
                f"model.positions=rope needs dim/heads >= 6 (2 per axis), got {self.dim // self.heads}"
            )
        if self.split_tokens is not None and (
            not self.split_tokens or any(not isinstance(w, int) or w < 1 for w in self.split_tokens)
        ):
            raise ValueError(
                f"model.split_tokens must be a list of positive ints or null, got {self.split_tokens}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must lie in [0, 1), got {self.dropout}")
        for name in ("vocabulary", "height", "width", "max_frames", "num_classes"):
            if getattr(self, name) < 0:
                raise ValueError(f"model.{name} must be >= 0, got {getattr(self, name)}")

    def complete(self) -> LMConfig:
        """This config with ``split_tokens`` resolved; checks that the derived sizes are set and the
        split covers the vocabulary."""
        for name in ("vocabulary", "height", "width", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1 to build a model, got {getattr(self, name)}")
        split = self.split_tokens if self.split_tokens is not None else default_split(self.vocabulary)
        if split is not None and 2 ** sum(split) != self.vocabulary:
            raise ValueError(
                f"model.split_tokens {split} hold {sum(split)} bits; vocabulary {self.vocabulary} needs "
                f"widths summing to log2(vocabulary) (a power of two)"
            )
        if split is None and self.vocabulary > MAX_PLAIN_VOCABULARY:
            raise ValueError(f"vocabulary {self.vocabulary} > 2^16 needs model.split_tokens")
        return dataclasses.replace(self, split_tokens=split)

    @property
    def tokens_per_frame(self) -> int:
        return self.height * self.width

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "config") -> LMConfig:
        return from_dict(cls, data, where=where)


@dataclass
class Stage:
    """One step of the progressive (short-to-long) schedule: from ``start_step`` on, windows of
    ``frames`` latent frames, ``batch_size`` of them per micro-batch and process."""

    start_step: int = 0
    frames: int = 2
    batch_size: int = 8


@dataclass
class LMDataSection:
    """Training windows: random runs of whole latent frames from the clips of the Parquet shards.

    Attributes:
        paths: token shards (``magvit2 tokenize ... --shard-size N``) or folders of them.
        frames: latent frames per window (when ``stages`` is empty).
        batch_size: windows per micro-batch and process (when ``stages`` is empty).
        stages: Loong's progressive training: a list of :class:`Stage` (``{start_step, frames,
            batch_size}``), the first starting at step 0; the window grows on that schedule.
        class_from: null (unconditional) or ``folder``: a clip's class is the name of the folder its
            source file lay in (sorted names are the class ids; ``model.num_classes`` is set from them).
        seed: the window draws are a function of (seed, step, micro-batch, rank) only, so a resumed
            run reads exactly what an uninterrupted one would.
    """

    paths: list[str] = field(default_factory=list)
    frames: int = 4
    batch_size: int = 8
    stages: list[Stage] = field(default_factory=list)
    class_from: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.stages = [
            s if isinstance(s, Stage) else from_dict(Stage, s, where="data.stages") for s in self.stages
        ]
        if self.class_from not in (None, "folder"):
            raise ValueError(f"data.class_from must be null or 'folder', got {self.class_from!r}")
        if self.stages and self.stages[0].start_step != 0:
            raise ValueError(
                f"data.stages: the first stage must start at step 0, got {self.stages[0].start_step}"
            )
        starts = [s.start_step for s in self.stages]
        if starts != sorted(set(starts)):
            raise ValueError(f"data.stages: start_step must increase, got {starts}")
        for s in [*self.stages, Stage(0, self.frames, self.batch_size)]:
            if s.frames < 1 or s.batch_size < 1:
                raise ValueError(f"data: frames and batch_size must be >= 1, got {s}")

    def stage(self, step: int) -> Stage:
        """The window length and batch size at ``step``."""
        current = Stage(0, self.frames, self.batch_size)
        for s in self.stages:
            if s.start_step <= step:
                current = s
        return current

    @property
    def max_frames(self) -> int:
        return max([s.frames for s in self.stages] or [self.frames])


@dataclass
class LMLossSection:
    """Loong's loss re-weighting: later latent frames are easy (much is copied from the frames
    before), so on long windows their many tokens would dominate the mean loss. Tokens of the window's
    latent frames from ``full_weight_frames`` on are weighted ``later_frame_weight`` (1: plain mean)."""

    full_weight_frames: int = 1
    later_frame_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.full_weight_frames < 1 or not self.later_frame_weight > 0:
            raise ValueError(f"loss: full_weight_frames must be >= 1 and later_frame_weight > 0, got {self}")


@dataclass
class LMOptimSection:
    """AdamW with linear warm-up then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""

    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum_steps: int = 1

    def __post_init__(self) -> None:
        if self.grad_accum_steps < 1:
            raise ValueError(f"optim.grad_accum_steps must be >= 1, got {self.grad_accum_steps}")


@dataclass
class LMValidationSection:
    """Held-out shards scored in bits per token every ``every`` steps (0: at the end only), on
    non-overlapping windows of ``frames`` latent frames (0: the longest training window), at most
    ``max_windows`` of them."""

    paths: list[str] = field(default_factory=list)
    every: int = 500
    frames: int = 0
    max_windows: int = 64


@dataclass
class LMTrainConfig:
    """A language-model training run; saved as ``output_dir/config.yaml``.

    Attributes:
        output_dir: ``config.yaml``, ``checkpoints/``, ``tensorboard/`` and at the end ``final/`` (the
            LM folder that ``magvit2 lm generate`` and ``lm eval`` read).
        tokenizer: the tokenizer whose tokens the shards hold: ``default`` (the built-in model) or a
            ``save_pretrained`` folder; shards made by another one are refused (by fingerprint).
        seed, max_steps, time_limit_minutes, device, precision, num_threads, ema_decay,
        checkpoint_every, keep_checkpoints, log_every, progress, tensorboard: as in the tokenizer's
            :class:`magvit2.training.TrainConfig` (``precision: auto`` is bf16 on CUDA, fp32 on CPU).
        class_dropout: chance that a class-conditional window trains as "no class" (for CFG).
        masked: the task mix and scoring of ``model.kind: masked`` (ignored by ``ar``).
    """

    output_dir: str = "runs/lm"
    tokenizer: str = "default"
    seed: int = 0
    max_steps: int = 10000
    time_limit_minutes: float | None = None
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    ema_decay: float | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True
    class_dropout: float = 0.1
    model: LMConfig = field(default_factory=LMConfig)
    data: LMDataSection = field(default_factory=LMDataSection)
    loss: LMLossSection = field(default_factory=LMLossSection)
    optim: LMOptimSection = field(default_factory=LMOptimSection)
    validation: LMValidationSection = field(default_factory=LMValidationSection)
    masked: MaskedSection = field(default_factory=MaskedSection)

    def __post_init__(self) -> None:
        check_run_fields(self)
        if not 0.0 <= self.class_dropout < 1.0:
            raise ValueError(f"class_dropout must lie in [0, 1), got {self.class_dropout}")


def lm_config_to_yaml(cfg: LMTrainConfig) -> str:
    """The config as YAML text (what ``output_dir/config.yaml`` holds)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def load_lm_train_config(path: str | Path | None = None, overrides: list[str] | None = None) -> LMTrainConfig:
    """Read a YAML config (defaults when ``path`` is None) and apply ``--set`` overrides; every
    problem is a one-line ValueError naming the file or the override."""
    where = str(path or "config")
    data = read_yaml(path) if path is not None else {}
    try:
        cfg = from_dict(LMTrainConfig, data, where=where)
        return apply_overrides(cfg, list(overrides or []))
    except (TypeError, ValueError) as err:
        message = " ".join(str(err).split())
        raise ValueError(message if message.startswith(where) else f"{where}: {message}") from None
