"""Stopping a run early without losing it: SIGTERM / SIGINT and ``time_limit_minutes`` finish the step
under way, write a checkpoint and ``final/``, and ``--resume`` ends with the weights of a run that was
never stopped. The runs are test_train's tiny ones (well under a second a step)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from test_train import assert_same, cli, env, tiny_config, weights, write_config

from magvit2.training.checkpoint import list_checkpoints
from magvit2.training.config import load_train_config
from magvit2.training.stopping import StopRequests
from magvit2.training.trainer import Trainer


def _steps(run) -> list[int]:
    return [int(p.name.split("-")[1]) for p in list_checkpoints(run / "checkpoints")]


def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resume_matches(tmp_path):
    """SIGTERM arrives during step 3 of 7 (checkpoint_every 100: no checkpoint would be due): the run
    finishes step 3, writes checkpoint 3 and final/, puts the old handler back; resuming to step 7 gives
    bit for bit the weights of an uninterrupted run."""
    over = {"max_steps": 7, "checkpoint_every": 100}
    run_cfg = load_train_config(write_config(tmp_path / "run.yaml", tiny_config(tmp_path / "run", **over)))
    before = signal.getsignal(signal.SIGTERM)
    trainer = Trainer(run_cfg)
    step_once = trainer.train_step

    def step_and_signal(batches):
        out = step_once(batches)
        if trainer.step == 2:  # the step being taken is step 3
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    trainer.train_step = step_and_signal
    trainer.fit()
    assert trainer.stopped_by == "SIGTERM" and trainer.step == 3
    assert signal.getsignal(signal.SIGTERM) is before
    assert _steps(tmp_path / "run") == [3]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()

    resumed = Trainer(run_cfg, resume=True)
    assert resumed.step == 3
    resumed.fit()
    assert resumed.stopped_by is None and resumed.step == 7
    ref_cfg = load_train_config(write_config(tmp_path / "ref.yaml", tiny_config(tmp_path / "ref", **over)))
    Trainer(ref_cfg).fit()
    assert_same(weights(tmp_path / "ref"), weights(tmp_path / "run"), exact=True)


def test_time_limit_stops_the_cli_with_exit_75_and_resume_finishes(tmp_path):
    """A time limit shorter than one step stops the CLI run after step 1 (exit status 75, a message
    that says how to continue); the same command with --resume runs the remaining steps."""
    run = tiny_config(tmp_path / "run", max_steps=3, checkpoint_every=100)
    cfg = write_config(tmp_path / "run.yaml", run)
    stopped = subprocess.run(cli(str(cfg), "--set", "time_limit_minutes=1e-6"), env=env(),
                             capture_output=True, text=True)  # fmt: skip
    assert stopped.returncode == 75, stopped.stderr[-3000:]
    assert "stopped early by time limit at step 1 of 3" in stopped.stdout
    assert _steps(tmp_path / "run") == [1]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    done = subprocess.run(cli(str(cfg), "--resume"), env=env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(step 1)" in done.stderr and _steps(tmp_path / "run") == [1, 3]


def test_stop_requests_catch_only_the_first_signal():
    """The first SIGINT is recorded, not raised; the handler that was there before gets the second."""
    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with StopRequests() as requests:
            assert requests.code() == 0
            os.kill(os.getpid(), signal.SIGINT)
            assert requests.signal_name == "SIGINT" and requests.code() == 2 and seen == []
            os.kill(os.getpid(), signal.SIGINT)
            assert seen == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)


def test_time_limit_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="time_limit_minutes must be > 0"):
        cfg = tiny_config(tmp_path / "r", time_limit_minutes=0)
        load_train_config(write_config(tmp_path / "c.yaml", cfg))


_WORKER = """
import os, signal, sys
from magvit2.training.config import load_train_config
from magvit2.training.distributed import init_distributed, shutdown
from magvit2.training.trainer import Trainer

info = init_distributed("cpu")
trainer = Trainer(load_train_config(sys.argv[1]), info=info)
step_once = trainer.train_step

def step(batches):
    out = step_once(batches)
    if info.rank == 1 and trainer.step == 1:  # only rank 1 is told to stop, during step 2
        os.kill(os.getpid(), signal.SIGTERM)
    return out

trainer.train_step = step
trainer.fit()
print(f"rank {info.rank} stopped_by={trainer.stopped_by} step={trainer.step}")
shutdown(info)
"""


def test_ranks_agree_on_the_step_to_stop_at(tmp_path):
    """torchrun, 2 CPU processes: SIGTERM reaches rank 1 alone during step 2 of 6; both ranks stop
    after step 2 (neither waits for the other in a collective), and rank 0 writes checkpoint 2."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    cfg = write_config(tmp_path / "run.yaml", tiny_config(tmp_path / "run", checkpoint_every=100))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    res = subprocess.run([*launch, str(script), str(cfg)], env=env(), capture_output=True, text=True,
                         timeout=180)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    for rank in (0, 1):
        assert f"rank {rank} stopped_by=SIGTERM step=2" in res.stdout, res.stdout
    assert _steps(tmp_path / "run") == [2]
