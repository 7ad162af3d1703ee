"""The language-model trainer: ``LMTrainer(config).fit()``, or ``magvit2 lm train CONFIG.yaml``.

It keeps the tokenizer trainer's guarantees with the same parts (:mod:`magvit2.training`): atomic
checkpoints holding the model, EMA, optimiser, schedule, step and every rank's RNG states, and
training windows that are a pure function of the step (:class:`~magvit2.lm.data.WindowSampler`),
so a run killed at any moment and resumed with ``resume=True`` ends with exactly the weights of an
uninterrupted run; torchrun DDP, bf16 autocast, gradient accumulation, warm-up + cosine, tqdm and
TensorBoard, SIGTERM/SIGINT/time-limit stops after the step under way.

One optimiser step: ``optim.grad_accum_steps`` micro-batches of windows (length and batch size from
the progressive schedule, ``data.stages``), loss = weighted mean negative log-likelihood (weights:
``loss``), gradient clipping, AdamW, schedule, EMA. Reported: bits per token (unweighted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from magvit2.config_io import resolve_path
from magvit2.lm.config import LMTrainConfig, lm_config_to_yaml
from magvit2.lm.data import TokenClips, WindowSampler, class_names, eval_windows, load_clips
from magvit2.lm.masked import build_lm, schedule_mask
from magvit2.lm.tasks import random_tasks
from magvit2.lm.transformer import VideoLM
from magvit2.models import VideoTokenizer
from magvit2.models.tokenizer import resolve_pretrained
from magvit2.tokens import model_fingerprint
from magvit2.training.base import TrainerBase
from magvit2.training.distributed import barrier, broadcast_module
from magvit2.training.ema import EMA

log = logging.getLogger("magvit2.lm")
LN2 = math.log(2.0)
UNIGRAM_NAME = "unigram.safetensors"


def load_tokenizer(name: str, device: str | torch.device = "cpu") -> tuple[VideoTokenizer, str]:
    """``default`` or a tokenizer folder -> (model in eval mode, its fingerprint)."""
    model = VideoTokenizer.from_pretrained(resolve_pretrained(resolve_path(name)), device=device).eval()
    return model, model_fingerprint(model.config.to_dict(), model.state_dict())


def frame_weights(frames: int, tokens_per_frame: int, full: int, later: float) -> Tensor:
    """Loss weight of each token of a window ``(frames * tokens_per_frame,)``: 1 for the first
    ``full`` latent frames, ``later`` after them."""
    per_frame = torch.tensor([1.0 if f < full else later for f in range(frames)])
    return per_frame.repeat_interleave(tokens_per_frame)


class LMTrainer(TrainerBase):
    """Trains a :class:`VideoLM` as an :class:`LMTrainConfig` says; ``fit`` returns ``final/``."""

    checkpoint_keys = ("step", "opt", "sched", "rng")
    final_name = "LM"

    # ------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Tokenizer fingerprint, data, model, EMA, optimiser, schedule; resume if asked."""
        cfg, info = self.cfg, self.info
        self.setup_runtime()
        tokenizer, self.fingerprint = load_tokenizer(cfg.tokenizer)
        self.tokenizer_facts = {
            "tokenizer": cfg.tokenizer
            if cfg.tokenizer == "default"
            else str(Path(resolve_path(cfg.tokenizer)).resolve()),
            "tokenizer_fingerprint": self.fingerprint,
            "temporal_factor": tokenizer.temporal_factor,
            "spatial_factor": tokenizer.spatial_factor,
        }
        self.clips = load_clips(cfg.data.paths, self.fingerprint, cfg.tokenizer)
        self.class_names = class_names(self.clips) if cfg.data.class_from == "folder" else []
        self.model_config = self._model_config(tokenizer.codebook_size, self.clips)
        del tokenizer
        self.model = build_lm(self.model_config).to(self.device).train()
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay is not None else None
        broadcast_module(self.model, info)
        self.ddp = self.wrap_ddp(self.model)
        self.opt, self.sched = self._optimizer()
        self.prepare_output()
        if self.resume_requested:
            self.resume()
        labels = None
        if self.class_names:
            labels = [self.class_names.index(Path(s).parent.name) for s in self.clips.sources]
        m, v = self.model_config, cfg.validation
        self.val_windows = None  # read now: a problem with the held-out shards shows before training
        if v.paths:
            held_out = load_clips(v.paths, self.fingerprint, cfg.tokenizer, "validation.paths")
            self.val_windows = eval_windows(
                held_out, v.frames or m.max_frames, m.height, m.width, v.max_windows
            )
        self.sampler = WindowSampler(
            self.clips, m.height, m.width, cfg.data.seed, labels, info.rank, info.world_size
        )

    def _model_config(self, vocabulary: int, clips: TokenClips):
        """The configured network with the sizes taken from the tokenizer and data filled in."""
        cfg = self.cfg
        m = cfg.model
        if m.vocabulary and m.vocabulary != vocabulary:
            raise ValueError(
                f"model.vocabulary {m.vocabulary}: the tokenizer {cfg.tokenizer} has {vocabulary}"
            )
        if clips.vocabulary != vocabulary:
            raise ValueError(
                f"data.paths: shards of vocabulary {clips.vocabulary}, the tokenizer has {vocabulary}"
            )
        h, w = clips.grid
        if self.class_names and m.num_classes not in (0, len(self.class_names)):
            raise ValueError(
                f"model.num_classes {m.num_classes}: the data has {len(self.class_names)} class folders"
            )
        return dataclasses.replace(
            m,
            vocabulary=vocabulary,
            height=m.height or h,
            width=m.width or w,
            max_frames=max(m.max_frames, cfg.data.max_frames),
            num_classes=len(self.class_names) or m.num_classes,
        ).complete()

    def _optimizer(self):
        """AdamW (weight decay on matrices only) + warm-up/cosine LambdaLR."""
        o = self.cfg.optim
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": o.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)
        return opt, self.lr_schedule(opt)

    def config_yaml(self) -> str:
        return lm_config_to_yaml(self.cfg)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        """(weight groups, other state) for a checkpoint; RNG states gathered from every rank."""
        weights = {"model": self.model.state_dict()}
        if self.ema is not None:
            weights["ema"] = self.ema.state_dict()
        rngs = self.gathered_rng_states()
        state = {
            "step": self.step,
            "world_size": self.info.world_size,
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "rng": rngs,
            "data_seed": self.cfg.data.seed,
        }
        return weights, state

    def load_state_dict(self, weights: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        self.model.load_state_dict(weights["model"])
        if self.ema is not None:
            self.ema.load_state_dict(weights.get("ema", weights["model"]))
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.restore_rng_states(state["rng"])
        self.step = int(state["step"])

    # ------------------------------------------------------------------------------------------ steps
    def train_step(self) -> dict[str, float]:
        """One optimiser step over ``grad_accum_steps`` micro-batches -> logs."""
        cfg, m = self.cfg, self.model_config
        stage = cfg.data.stage(self.step)
        accum = cfg.optim.grad_accum_steps
        net = self.ddp if self.ddp is not None else self.model
        weights = frame_weights(stage.frames, m.tokens_per_frame, cfg.loss.full_weight_frames,
                                cfg.loss.later_frame_weight).to(self.device)  # fmt: skip
        self.opt.zero_grad(set_to_none=True)
        nats = 0.0
        for micro in range(accum):
            ids, classes = self.sampler.batch(self.step, micro, stage.frames, stage.batch_size)
            ids = ids.to(self.device)
            if classes is not None:
                drop = torch.rand(classes.shape[0]) < cfg.class_dropout
                classes = classes.masked_fill(drop, m.num_classes).to(self.device)
            sync = self.ddp is None or micro == accum - 1
            if m.kind == "masked":
                nats += self._masked_micro(net, ids, classes, weights, micro, sync) / accum
                continue
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with self.autocast():
                    logp = net(ids, classes).reshape(ids.shape[0], -1).float()
                loss = -(logp * weights).sum(-1).mean() / weights.sum()
                (loss / accum).backward()
            nats += float(-logp.detach().mean()) / accum
        grad_norm = float(self.clip_gradients(self.model.parameters()))
        lr = self.opt.param_groups[0]["lr"]
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return {"bits_per_token": nats / LN2, "grad_norm": grad_norm, "lr": lr, "frames": stage.frames}

    def _masked_micro(self, net, ids: Tensor, classes: Tensor | None, weights: Tensor, micro: int,
                      sync: bool) -> float:  # fmt: skip
        """One micro-batch of a masked model: a task per window and the cosine-schedule mask of its
        tokens to generate (a function of seed, step, micro-batch and rank); backward of the weighted
        mean NLL of the masked tokens -> their mean nats."""
        b, t, h, w = ids.shape
        seed = ((self.cfg.data.seed * 1_000_003 + self.step) * 1_009 + micro) * 1_013 + self.info.rank
        g = torch.Generator().manual_seed(seed)
        tasks, given = random_tasks(b, t, h, w, self.cfg.masked, g)
        masked = schedule_mask(given, g).to(self.device)
        with contextlib.nullcontext() if sync else self.ddp.no_sync():
            with self.autocast():
                logp = net(ids, masked, classes, tasks.to(self.device)).reshape(b, -1).float()
            counted = masked.reshape(b, -1).float() * weights
            loss = -(logp * counted).sum() / counted.sum()
            (loss / self.cfg.optim.grad_accum_steps).backward()
        return float(-logp.detach().sum() / masked.sum())

    # ------------------------------------------------------------------------------------------ validation
    def eval_model(self) -> VideoLM:
        """A copy holding the EMA weights (raw weights when EMA is off), in eval mode."""
        model = build_lm(self.model_config).to(self.device)
        model.load_state_dict(self.ema.state_dict() if self.ema is not None else self.model.state_dict())
        return model.eval()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Bits per token on the held-out shards (rank 0; {} without validation paths)."""
        if self.val_windows is None or not self.info.is_main:
            return {}
        model = self.eval_model()
        total = 0.0
        windows = self.val_windows
        for i in range(0, windows.shape[0], 8):
            batch = windows[i : i + 8].to(self.device)
            with self.autocast():
                total += float(-model.log_prob(batch).float().sum())
        return {"bits_per_token": total / windows.numel() / LN2}

    def _run_validation(self) -> dict[str, float]:
        result = self.validate()
        if result:
            self.monitor.scalars(self.step, {f"val/{k}": v for k, v in result.items()})
            self.monitor.message(f"step {self.step}: held-out {result['bits_per_token']:.4f} bits per token")
            result["step"] = self.step
        barrier(self.info)
        return result

    # ------------------------------------------------------------------------------------------ loop
    def _fit_step(self) -> None:
        cfg = self.cfg
        t = time.perf_counter()
        logs = self.train_step()
        self.step += 1
        self.monitor.advance()
        if not math.isfinite(logs["bits_per_token"]):
            raise FloatingPointError(f"training loss is {logs['bits_per_token']} at step {self.step}")
        if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
            stage = cfg.data.stage(self.step - 1)
            tokens = stage.frames * self.model_config.tokens_per_frame * stage.batch_size
            logs["tokens_per_s"] = (
                tokens * cfg.optim.grad_accum_steps * self.info.world_size / (time.perf_counter() - t)
            )
            self.monitor.scalars(
                self.step, {f"train/{k}": float(v) for k, v in logs.items()},
                {"bits/token": f"{logs['bits_per_token']:.3f}", "frames": str(logs["frames"])},
            )  # fmt: skip
        self.end_of_step()

    def write_final(self) -> Path:
        """``final/``: the LM folder (EMA weights when EMA is on), with the tokenizer's name and
        fingerprint, class names, and the unigram counts of the training tokens (``lm eval``'s
        baseline)."""
        final = self.out / "final"
        if self.info.is_main:
            extra = {**self.tokenizer_facts, "class_names": self.class_names, "trained_steps": self.step}
            counts = self.clips.counts()
            seen = counts.nonzero()[:, 0]
            unigram = {UNIGRAM_NAME: {"ids": seen, "counts": counts[seen]}}
            self.eval_model().save_pretrained(final, extra, unigram)
        barrier(self.info)
        return final


def run_lm_training(cfg: LMTrainConfig, resume: bool = False) -> LMTrainer:
    """Run training as ``cfg`` says (under torchrun: one process of the group)."""
    return LMTrainer.run(cfg, resume)
