"""The tokenizer trainer: ``Trainer(config).fit()``, or ``magvit2 train CONFIG.yaml``.

One optimiser step (``train_step`` then ``disc_step``):

1. fetch ``optim.grad_accum_steps`` micro-batches; each holds a video part and/or an image part
   (``magvit2.data`` joint batches); every part is one *chunk*, weighted by its share of the step's
   samples, so the step's loss is the mean over all its samples;
2. per chunk: forward (bf16 autocast if asked), :class:`magvit2.losses.TokenizerLoss` generator loss,
   backward (DDP synchronises the gradients only at the step's last chunk);
3. clip the gradient norm, AdamW step, LR schedule step, EMA update;
4. once ``loss.disc_start`` is reached: the discriminator loss on the same real clips and their
   detached reconstructions, gradients averaged over ranks, clip, AdamW step, LeCam averages
   synchronised over ranks.

Under ``torchrun`` the tokenizer is wrapped in ``DistributedDataParallel`` (gloo on CPU, NCCL on
GPU); the discriminator is not wrapped (it runs in both the generator and discriminator passes and
R1 needs a double backward, which DDP's hooks do not support), its gradients are averaged with one
``all_reduce`` instead. LFQ averages its code distribution over ranks by itself. Each rank reads its own
shard of the data; rank 0 writes checkpoints, TensorBoard and the progress bar.

Everything that changes during training is in the checkpoint (model, EMA, discriminator and LeCam
buffers, both optimisers and schedulers, the step, which fixes the data position and the entropy-weight
schedule, and every rank's torch/numpy/python RNG states), so a run killed at any moment and resumed
with ``resume=True`` ends with exactly the weights of an uninterrupted run. SIGTERM, SIGINT and
``time_limit_minutes`` need no kill: the run stops after the step under way and writes a checkpoint
first (:mod:`magvit2.training.stopping`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from magvit2.config_io import resolve_path
from magvit2.data import JointBatchDataset, find_files, make_loader, read_video, to_tensor
from magvit2.data.media import resized_size
from magvit2.data.video_io import probe
from magvit2.fileio import atomic_path
from magvit2.losses import TokenizerLoss
from magvit2.models import VideoTokenizer
from magvit2.models.checks import read_model_config, state_dict_mismatch
from magvit2.modules.blocks import ResBlock
from magvit2.training.base import TrainerBase
from magvit2.training.config import TrainConfig, config_to_yaml, tokenizer_config, with_model_frames
from magvit2.training.distributed import (
    DistInfo,
    average_buffers,
    average_gradients,
    barrier,
    broadcast_module,
)
from magvit2.training.ema import EMA

log = logging.getLogger("magvit2.train")


# ---------------------------------------------------------------------------------------- building blocks


def freeze_parameters(model: nn.Module, prefixes: list[str]) -> int:
    """Set ``requires_grad=False`` on every parameter whose name starts with one of ``prefixes``
    (``"decoder"`` matches ``decoder.*``); returns how many tensors were frozen. A prefix that matches
    nothing is an error (a typo would otherwise silently train everything)."""
    params = dict(model.named_parameters())
    frozen: set[str] = set()
    for prefix in prefixes:
        hits = {n for n in params if n == prefix or n.startswith(prefix.rstrip(".") + ".")}
        if not hits:
            tops = sorted({n.split(".")[0] for n in params})
            raise ValueError(f"model.freeze: {prefix!r} matches no parameter; top-level modules are {tops}")
        frozen |= hits
    for name in frozen:
        params[name].requires_grad_(False)
    return len(frozen)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Make every residual block recompute its activations in the backward pass; returns how many.

    Only training passes (gradients on, no causal cache) are checkpointed; weights and state dict keys
    are unchanged.
    """
    blocks = [m for m in model.modules() if isinstance(m, ResBlock)]
    for block in blocks:
        block.gradient_checkpointing = True
    return len(blocks)


def load_clip(
    path: str, num_frames: int, start: int, stride: int, resolution: int, short_side: int | None = None
) -> Tensor:
    """Frames ``start, start+stride, ...`` (``num_frames`` of them) of a video or image, short side resized
    to ``short_side`` (default ``resolution``) then centre-cropped square ->
    ``(3, T, resolution, resolution)`` in [-1, 1]."""
    info = probe(path)
    size = resized_size(info.height, info.width, (resolution, resolution), "center_crop", short_side)
    frames = read_video(path, start=start, stride=stride, max_frames=num_frames, size=size)
    if frames.shape[0] < num_frames:
        raise ValueError(
            f"validation clip {path}: expected {num_frames} frames from frame {start} (stride {stride}), "
            f"the file has only {frames.shape[0]} there"
        )
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return to_tensor(frames[:, top : top + resolution, left : left + resolution])


# ------------------------------------------------------------------------------------------------ trainer


def load_weights(model: VideoTokenizer, source: VideoTokenizer, where: str) -> None:
    """Copy ``source``'s weights into ``model``; a ValueError naming ``where`` unless the two have
    the same architecture."""
    state = source.state_dict()
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise ValueError(f"{where}: its architecture differs from model.config; {mismatch}")
    model.load_state_dict(state)


class Trainer(TrainerBase):
    """Trains a :class:`VideoTokenizer` as a :class:`TrainConfig` says.

    ``Trainer(cfg, resume=True).fit()`` continues from the newest complete checkpoint in
    ``cfg.output_dir/checkpoints`` (or starts fresh when there is none). Without ``resume`` an output
    folder that already holds checkpoints is refused. ``fit`` returns the ``final/`` folder.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False, info: DistInfo | None = None) -> None:
        super().__init__(with_model_frames(cfg), resume, info)

    # ------------------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Build model, EMA, loss/discriminator, optimisers, schedules and data; resume if asked."""
        cfg, info = self.cfg, self.info
        self.setup_runtime()
        self.model = self._build_model().to(self.device).train()
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.loss_fn = TokenizerLoss(cfg.loss, in_channels=self.model.config.in_channels).to(self.device)
        self.entropy_schedule = cfg.loss.entropy_schedule()
        broadcast_module(self.model, info)
        broadcast_module(self.loss_fn, info)
        self.ddp = self.wrap_ddp(self.model)
        self._build_optimizers()
        self.data_cfg = replace(cfg.data, paths=[resolve_path(p) for p in cfg.data.paths])
        self.prepare_output()
        self.dataset = JointBatchDataset(self.data_cfg, info.rank, info.world_size)
        self._val_clips: Tensor | None = None
        self._loader = None
        if self.resume_requested:
            self.resume()  # last: nothing may draw from the restored RNG states before the first step

    def config_yaml(self) -> str:
        return config_to_yaml(self.cfg)

    def _build_model(self) -> VideoTokenizer:
        """The configured tokenizer: started from ``model.init_from``'s weights if given,
        ``model.freeze`` applied, activation checkpointing on if asked."""
        cfg = self.cfg
        model = VideoTokenizer.from_config(tokenizer_config(cfg))
        if cfg.model.init_from:
            source = resolve_path(cfg.model.init_from)
            read_model_config(source)  # a malformed config.json: one line naming the file and the field
            load_weights(model, VideoTokenizer.from_pretrained(source), f"model.init_from {source}")
        freeze_parameters(model, cfg.model.freeze)
        if cfg.model.activation_checkpointing:
            enable_activation_checkpointing(model)
        return model

    def _build_optimizers(self) -> None:
        """AdamW + schedule for the trainable tokenizer parameters, and for the discriminator if any
        (its ``disc_*`` options fall back to the tokenizer's)."""
        o = self.cfg.optim
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt_g, self.sched_g = self._optimizer(trainable, o.lr, o.betas, o.weight_decay)
        self.disc = self.loss_fn.discriminator
        self.opt_d = self.sched_d = None
        if self.disc is not None:
            self.opt_d, self.sched_d = self._optimizer(
                self.disc.parameters(),
                o.disc_lr if o.disc_lr is not None else o.lr,
                o.disc_betas if o.disc_betas is not None else o.betas,
                o.disc_weight_decay if o.disc_weight_decay is not None else o.weight_decay,
            )

    def _optimizer(self, params, lr: float, betas, weight_decay: float):
        """AdamW + warm-up/cosine LambdaLR."""
        o = self.cfg.optim
        opt = torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, eps=o.eps)
        return opt, self.lr_schedule(opt)

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        """(weight groups, other state) for a checkpoint; RNG states gathered from every rank."""
        weights = {"model": self.model.state_dict(), "loss": self.loss_fn.state_dict()}
        if self.ema is not None:
            weights["ema"] = self.ema.state_dict()
        rngs = self.gathered_rng_states()
        state = {
            "step": self.step,
            "world_size": self.info.world_size,
            "opt_g": self.opt_g.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "rng": rngs,
            "data": {
                "micro_batches": self.step * self.cfg.optim.grad_accum_steps,
                "seed": self.data_cfg.seed,
            },
        }
        if self.opt_d is not None:
            state["opt_d"] = self.opt_d.state_dict()
            state["sched_d"] = self.sched_d.state_dict()
        return weights, state

    def load_state_dict(self, weights: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave."""
        self.model.load_state_dict(weights["model"])
        self.loss_fn.load_state_dict(weights["loss"])
        if self.ema is not None:
            self.ema.load_state_dict(weights["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.opt_d is not None and "opt_d" in state:
            self.opt_d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
        self.restore_rng_states(state["rng"])
        self.step = int(state["step"])

    @property
    def checkpoint_groups(self) -> tuple[str, ...]:
        return ("model", "loss") + (("ema",) if self.ema is not None else ())

    @property
    def checkpoint_keys(self) -> tuple[str, ...]:
        return ("step", "opt_g", "sched_g", "rng") + (("opt_d", "sched_d") if self.opt_d is not None else ())

    # ------------------------------------------------------------------------------------------ steps
    def _chunks(self, batches: list[dict]) -> list[tuple[Tensor, float]]:
        """Micro-batch dicts -> (clips ``(B, 3, T, H, W)``, weight = share of the step's samples)."""
        parts = [b[k] for b in batches for k in ("video", "image") if b.get(k) is not None]
        total = sum(p.shape[0] for p in parts)
        return [(p.to(self.device, non_blocking=True), p.shape[0] / total) for p in parts]

    def train_step(self, batches: list[dict]) -> tuple[dict[str, Tensor], list[tuple[Tensor, Tensor]]]:
        """One tokenizer update from the step's micro-batches -> (weighted mean logs, (real, fake) pairs)."""
        step = self.step
        chunks = self._chunks(batches)
        net = self.ddp if self.ddp is not None else self.model
        if hasattr(self.model.quantizer, "entropy_weight"):
            self.model.quantizer.entropy_weight = self.entropy_schedule(step)
        if self.disc is not None:
            self.disc.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        logs: dict[str, Tensor] = {}
        pairs = []
        for i, (x, weight) in enumerate(chunks):
            sync = self.ddp is None or i == len(chunks) - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with self.autocast():
                    out = net(x)
                    loss, chunk_logs = self.loss_fn(
                        x, out.reconstruction, out.quantizer, step, last_layer=self.model.last_layer_weight()
                    )
                (loss * weight).backward()
            pairs.append((x, out.reconstruction.detach()))
            for k, v in chunk_logs.items():
                logs[k] = logs.get(k, 0.0) + weight * v.float()
        logs["grad_norm"] = self.clip_gradients(self.model.parameters())
        logs["lr"] = torch.tensor(self.opt_g.param_groups[0]["lr"])  # the rate this step uses
        self.opt_g.step()
        self.sched_g.step()
        if self.ema is not None:
            self.ema.update(self.model)
        logs["entropy_weight"] = torch.tensor(float(getattr(self.model.quantizer, "entropy_weight", 0.0)))
        return logs, pairs

    def disc_step(self, pairs: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        """One discriminator update on (real, detached fake) pairs; no-op before ``disc_start``."""
        if self.disc is None or not self.loss_fn.disc_active(self.step):
            return {}
        self.disc.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        total = sum(real.shape[0] for real, _ in pairs)
        logs: dict[str, Tensor] = {}
        for real, fake in pairs:
            weight = real.shape[0] / total
            with self.autocast():
                loss, chunk_logs = self.loss_fn.discriminator_loss(real, fake, self.step)
            (loss * weight).backward()
            for k, v in chunk_logs.items():
                logs[k] = logs.get(k, 0.0) + weight * v.float()
        average_gradients(list(self.disc.parameters()), self.info)
        logs["disc_grad_norm"] = self.clip_gradients(self.disc.parameters())
        self.opt_d.step()
        self.sched_d.step()
        average_buffers(self.loss_fn.lecam, self.info)
        return logs

    # ------------------------------------------------------------------------------------------ validation
    def eval_model(self) -> VideoTokenizer:
        """A copy of the tokenizer holding the EMA weights (raw weights when EMA is off), in eval mode,
        with quantizer statistics local to this process."""
        model = VideoTokenizer(self.model.config).to(self.device)
        if self.ema is not None:
            self.ema.copy_to(model)
        else:
            model.load_state_dict(self.model.state_dict())
        for m in model.modules():
            if hasattr(m, "distributed"):
                m.distributed = False
        return model.eval()

    def validation_clips(self) -> Tensor | None:
        """The held-out clips ``(N, 3, T, R, R)``, read once."""
        v = self.cfg.validation
        if not v.paths:
            return None
        if self._val_clips is None:
            clips = []
            for path in find_files([resolve_path(p) for p in v.paths]):
                for c in range(v.clips_per_file):
                    start = v.start_frame + c * v.num_frames * v.frame_stride
                    clips.append(
                        load_clip(path, v.num_frames, start, v.frame_stride, v.resolution, v.short_side)
                    )
            if not clips:
                raise ValueError(f"validation.paths {v.paths}: expected video/image files, found none")
            self._val_clips = torch.stack(clips)
        return self._val_clips

    @torch.no_grad()
    def validate(self, model: VideoTokenizer | None = None) -> dict[str, float]:
        """PSNR / SSIM (dB, [0..1]; per frame, mean over clips) and distinct codes on the held-out clips;
        logs the first clip's reconstruction to TensorBoard. Rank 0 only; {} without validation paths."""
        from magvit2.evaluation import psnr, ssim

        clips = self.validation_clips()
        if clips is None or not self.info.is_main:
            return {}
        model = model if model is not None else self.eval_model()
        bs = self.cfg.validation.batch_size
        p_sum = s_sum = 0.0
        ids = []
        first = None
        for i in range(0, clips.shape[0], bs):
            x = clips[i : i + bs].to(self.device)
            with self.autocast():
                out = model(x)
            rec = out.reconstruction.float().clamp(-1, 1)
            p_sum += float(psnr(rec, x, data_range=(-1.0, 1.0), reduction="none").sum())
            s_sum += float(ssim(rec, x, data_range=(-1.0, 1.0), reduction="none").sum())
            ids.append(out.quantizer.indices.reshape(-1))
            if first is None:
                first = (x[0].cpu(), rec[0].cpu())
        n = clips.shape[0]
        result = {"psnr": p_sum / n, "ssim": s_sum / n, "used_codes": float(torch.cat(ids).unique().numel())}
        if self.monitor is not None:
            self.monitor.video_pair("val/reconstruction", self.step, *first)
        return result

    # ------------------------------------------------------------------------------------------ loop
    def _samples_per_step(self) -> int:
        return self.cfg.data.batch_size * self.cfg.optim.grad_accum_steps * self.info.world_size

    def _log(self, logs: dict[str, Tensor]) -> None:
        steps_s, samples_s = self.monitor.throughput(self.step, self._samples_per_step())
        values = {f"train/{k}": float(v) for k, v in logs.items()}
        values["train/steps_per_s"] = steps_s
        values["train/clips_per_s"] = samples_s
        self.monitor.scalars(
            self.step, values,
            {"loss": f"{float(logs['total']):.4f}", "clips/s": f"{samples_s:.2f}"},
        )  # fmt: skip

    def _run_validation(self) -> dict[str, float]:
        result = self.validate()
        if result:
            self.monitor.scalars(self.step, {f"val/{k}": v for k, v in result.items()})
            self.monitor.message(
                f"step {self.step}: val PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.4f}  "
                f"codes {int(result['used_codes'])}"
            )
        barrier(self.info)
        return result

    def start_data(self) -> None:
        accum = self.cfg.optim.grad_accum_steps
        self._loader = iter(
            make_loader(self.dataset, start_step=self.step * accum, stop_step=self.cfg.max_steps * accum)
        )

    def _fit_step(self) -> None:
        """One optimiser step of :meth:`fit`, with its logging, validation and checkpoint."""
        cfg = self.cfg
        batches = [next(self._loader) for _ in range(cfg.optim.grad_accum_steps)]
        logs, pairs = self.train_step(batches)
        logs.update(self.disc_step(pairs))
        self.step += 1
        self.monitor.advance()
        if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
            self._log(logs)
        if not math.isfinite(float(logs["total"])):
            raise FloatingPointError(f"training loss is {float(logs['total'])} at step {self.step}")
        self.end_of_step()

    def write_final(self) -> Path:
        """``final/`` = EMA weights, ``final_raw/`` = raw weights, both ``save_pretrained`` folders,
        each written to a temporary folder and renamed into place (never half-written)."""
        final = self.out / "final"
        if self.info.is_main:
            if self.ema is not None:
                _save_folder(self.eval_model(), final)
                _save_folder(self.model, self.out / "final_raw")
            else:
                _save_folder(self.model, final)
        barrier(self.info)
        return final


def _save_folder(model: VideoTokenizer, folder: Path) -> None:
    """``model.save_pretrained`` into ``folder`` atomically; a failed write (a full disk) is an
    OSError naming the folder, and leaves the previous one, if any."""
    with atomic_path(folder, replace_dir=True) as tmp:
        try:
            model.save_pretrained(tmp)
        except Exception as err:  # safetensors raises its own error type for a full disk
            raise OSError(f"{folder}: cannot write the weights ({' '.join(str(err).split())})") from err


def run_training(cfg: TrainConfig, resume: bool = False) -> Trainer:
    """Run training as ``cfg`` says (under torchrun: one process of the group); returns the finished
    :class:`Trainer` (``final``: the ``final/`` folder; ``stopped_by``: why it stopped early, or None)."""
    return Trainer.run(cfg, resume)


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """:func:`run_training`, returning only the ``final/`` folder."""
    return run_training(cfg, resume).final
