"""What every trainer of the project shares: run folder, checkpoints, resume, stop requests, the loop.

:class:`TrainerBase` owns the guarantees; a subclass (the tokenizer's :class:`~magvit2.training.Trainer`,
the language model's :class:`~magvit2.lm.trainer.LMTrainer`) says what to build and what one step is:

* ``setup()`` builds model, optimiser and data (after :meth:`TrainerBase.setup_runtime`);
* ``state_dict()`` / ``load_state_dict()`` give and take everything that changes while training;
  ``checkpoint_groups`` / ``checkpoint_keys`` name what a checkpoint must hold to be resumed from;
* ``config_yaml()`` is the run's configuration as written next to each checkpoint;
* ``_fit_step()`` makes one optimiser step (with its logging, validation and checkpoint);
* ``_run_validation()`` and ``write_final()`` finish a run.

A run killed at any moment resumes from its newest checkpoint that verifies; SIGTERM, SIGINT and the
time limit stop it after the step under way, with a checkpoint (:mod:`magvit2.training.stopping`).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from magvit2.config_io import resolve_path
from magvit2.fileio import remove_path, remove_stale_temps
from magvit2.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from magvit2.training.distributed import DistInfo, barrier, init_distributed, shutdown
from magvit2.training.monitor import Monitor
from magvit2.training.schedule import warmup_cosine
from magvit2.training.stopping import REASONS, StopRequests

log = logging.getLogger("magvit2.train")


def rng_state() -> dict[str, Any]:
    """This process's torch / numpy / python (and CUDA) RNG states, checkpoint-ready."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },  # fmt: skip
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class TrainerBase:
    """A resumable, stoppable, multi-process training run configured by ``cfg``.

    ``cfg`` needs ``output_dir``, ``device``, ``seed``, ``num_threads``, ``precision``, ``max_steps``,
    ``checkpoint_every``, ``keep_checkpoints``, ``time_limit_minutes``, ``progress`` and
    ``tensorboard``. ``resume=True`` continues from the newest complete checkpoint of
    ``output_dir/checkpoints``; without it an output folder that already holds checkpoints is refused.
    """

    #: weight groups and state keys a checkpoint must hold to be resumed from (subclasses extend)
    checkpoint_groups: tuple[str, ...] = ("model",)
    checkpoint_keys: tuple[str, ...] = ("step", "rng")
    #: what :meth:`fit`'s last log line calls the ``final/`` folder
    final_name = "weights"

    def __init__(self, cfg: Any, resume: bool = False, info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.resume_requested = resume
        self.info = info if info is not None else init_distributed(cfg.device)
        self.out = Path(resolve_path(cfg.output_dir))
        self.step = 0
        self.monitor: Monitor | None = None
        self.last_validation: dict[str, float] = {}
        #: why :meth:`fit` stopped before ``max_steps`` ("SIGTERM", "SIGINT", "time limit"), or None
        self.stopped_by: str | None = None
        #: the ``final/`` folder, once :meth:`fit` has written it
        self.final: Path | None = None
        self.setup()

    @classmethod
    def run(cls, cfg: Any, resume: bool = False) -> TrainerBase:
        """Train as ``cfg`` says (under torchrun: one process of the group); returns the finished
        trainer (``final``: the ``final/`` folder; ``stopped_by``: why it stopped early, or None)."""
        info = init_distributed(cfg.device)
        try:
            trainer = cls(cfg, resume=resume, info=info)
            trainer.fit()
            return trainer
        finally:
            shutdown(info)

    # ------------------------------------------------------------------------------------------ subclass
    def setup(self) -> None:
        raise NotImplementedError

    def config_yaml(self) -> str:
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        raise NotImplementedError

    def load_state_dict(self, weights: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        raise NotImplementedError

    def _fit_step(self) -> None:
        raise NotImplementedError

    def _run_validation(self) -> dict[str, float]:
        raise NotImplementedError

    def write_final(self) -> Path:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ setup
    def setup_runtime(self) -> None:
        """Threads, seeds, device and precision from the config."""
        cfg = self.cfg
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        seed_everything(cfg.seed)
        self.device = self.info.device
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")

    def wrap_ddp(self, model: nn.Module) -> DistributedDataParallel | None:
        """``model`` in DistributedDataParallel under torchrun, else None."""
        if not self.info.distributed:
            return None
        return DistributedDataParallel(
            model, device_ids=[self.device] if self.device.type == "cuda" else None
        )

    def prepare_output(self) -> None:
        """Create the run folder, refuse to overwrite a run without ``resume``, delete what killed runs
        left half-written, save ``config.yaml``."""
        if not self.resume_requested and latest_checkpoint(self.out / "checkpoints") is not None:
            raise FileExistsError(
                f"{self.out} already holds checkpoints; pass --resume to continue that run, "
                "or choose another output_dir"
            )
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temps()
            (self.out / "config.yaml").write_text(self.config_yaml())
        barrier(self.info)

    def _remove_stale_temps(self) -> None:
        """Delete checkpoint folders ``step-N.tmp-PID``, ``.final.tmp-PID`` folders and safetensors'
        ``.tmpXXXXXX`` files in ``final/``, all left by killed runs."""
        removed = remove_stale_temps(self.out / "checkpoints") + remove_stale_temps(self.out)
        for name in ("final", "final_raw"):
            for p in (self.out / name).glob(".tmp*") if (self.out / name).is_dir() else []:
                remove_path(p)
                removed.append(p)
        for p in removed:
            log.info("removed %s, left half-written by a run that was killed", p)

    def lr_schedule(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """``optim.warmup_steps`` of linear warm-up, then cosine decay to ``lr * optim.min_lr_ratio``
        at ``max_steps``, for ``opt``."""
        o = self.cfg.optim
        fn = functools.partial(warmup_cosine, warmup_steps=o.warmup_steps, total_steps=self.cfg.max_steps,
                               min_ratio=o.min_lr_ratio)  # fmt: skip
        return torch.optim.lr_scheduler.LambdaLR(opt, fn)

    # ------------------------------------------------------------------------------------------ state
    def gathered_rng_states(self) -> list[dict[str, Any]]:
        """Every rank's RNG states (one entry per process)."""
        if not self.info.distributed:
            return [rng_state()]
        rngs = [None] * self.info.world_size
        dist.all_gather_object(rngs, rng_state())
        return rngs

    def restore_rng_states(self, rngs: list[dict[str, Any]]) -> None:
        """Set this rank's RNG states from a checkpoint's list (warning when the world size changed)."""
        if len(rngs) != self.info.world_size:
            log.warning("checkpoint was written by %d processes, now %d: RNG streams differ", len(rngs),
                        self.info.world_size)  # fmt: skip
        set_rng_state(rngs[self.info.rank % len(rngs)])

    def save(self) -> Path | None:
        """Write checkpoint ``checkpoints/step-XXXXXXXX`` (rank 0 writes; every rank takes part)."""
        weights, state = self.state_dict()
        path = None
        if self.info.is_main:
            path = save_checkpoint(
                self.out / "checkpoints", self.step, weights, state, keep_last=self.cfg.keep_checkpoints,
                extra_files={"config.yaml": self.config_yaml()},
            )  # fmt: skip
        barrier(self.info)
        return path

    def resume(self) -> int:
        """Load the newest checkpoint of ``output_dir`` that verifies completely, if any; returns the
        step reached. Each newer one skipped is logged with the reason; when checkpoints exist but none
        verifies, a ValueError lists them all (nothing is reset silently)."""
        root = self.out / "checkpoints"
        found = list_checkpoints(root)
        if not found:
            log.info("no checkpoint in %s: starting a new run", root)
            return 0
        reasons = []
        for path in reversed(found):
            try:
                weights, state = self._read_checkpoint(path)
            except CheckpointError as err:
                log.warning("skipped checkpoint %s: %s", path.name, err)
                reasons.append(f"{path.name}: {err}")
                continue
            try:
                self.load_state_dict(weights, state)
            except (RuntimeError, KeyError, ValueError) as err:  # a checkpoint of another model or run
                reason = " ".join(str(err).split())[:300]
                raise ValueError(f"{path}: does not fit this run ({reason})") from err
            log.info("resumed from %s (step %d)", path, self.step)
            return self.step
        raise ValueError(f"{root}: no checkpoint verifies completely, cannot resume ({'; '.join(reasons)})")

    def _read_checkpoint(self, path: Path) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
        """(weights, state) of a checkpoint folder that verifies and holds everything this run
        restores; a :class:`CheckpointError` naming what is missing or damaged otherwise."""
        verify_checkpoint(path)
        _, weights, state = load_checkpoint(path)
        missing = [f"{g}.safetensors" for g in self.checkpoint_groups if g not in weights]
        missing += [f"state {k}" for k in self.checkpoint_keys if k not in state]
        if missing:
            raise CheckpointError(f"{path}: lacks {', '.join(missing)}")
        return weights, state

    # ------------------------------------------------------------------------------------------ steps
    def autocast(self):
        """bf16 autocast on this device when the run's precision asks for it."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def clip_gradients(self, params) -> Tensor:
        """Clip the gradient norm of ``params`` to ``optim.grad_clip`` (when > 0) -> the norm before."""
        params = [p for p in params if p.grad is not None]
        if self.cfg.optim.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip).detach()
        return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).detach()

    # ------------------------------------------------------------------------------------------ loop
    def fit(self) -> Path:
        """Train up to ``max_steps`` (checkpointing and validating on the way); write ``final/`` and
        return it.

        SIGTERM, SIGINT or ``time_limit_minutes`` stop the run early, after the step under way: a
        checkpoint and ``final/`` are written (no last validation) and :attr:`stopped_by` says why;
        ``--resume`` continues from there."""
        cfg = self.cfg
        self.stopped_by = None
        self.monitor = Monitor(self.info.is_main, self.out, self.step, cfg.max_steps, cfg.progress,
                               cfg.tensorboard)  # fmt: skip
        limit = cfg.time_limit_minutes * 60 if cfg.time_limit_minutes is not None else None
        t0 = time.perf_counter()
        try:
            self.start_data()
            with StopRequests(limit) as requests:
                while self.step < cfg.max_steps and self.stopped_by is None:
                    self._fit_step()
                    self.stopped_by = self._agreed_stop(requests) if self.step < cfg.max_steps else None
            if self.stopped_by is not None:
                if self.step % cfg.checkpoint_every:
                    self.save()
                self.monitor.message(
                    f"stopped by {self.stopped_by} at step {self.step} of {cfg.max_steps}; "
                    "continue with --resume"
                )
            else:
                self.last_validation = self._run_validation()
            self.final = self.write_final()
        finally:
            self.monitor.close()
        log.info("trained to step %d in %.1f s; %s in %s", self.step, time.perf_counter() - t0,
                 self.final_name, self.final)  # fmt: skip
        return self.final

    def start_data(self) -> None:
        """Open the data stream at the current step (called by :meth:`fit` before the first step)."""

    def end_of_step(self) -> None:
        """Validation and checkpoint due after the step just counted."""
        cfg = self.cfg
        every = cfg.validation.every
        if every and self.step % every == 0 and self.step < cfg.max_steps:
            self.last_validation = self._run_validation()
        if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
            self.save()

    def _agreed_stop(self, requests: StopRequests) -> str | None:
        """Why to stop now, the same answer on every process (the strongest request of any rank)."""
        code = requests.code()
        if self.info.distributed:
            flag = torch.tensor([code], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            code = int(flag.item())
        return REASONS[code]
