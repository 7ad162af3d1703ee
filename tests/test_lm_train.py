"""``magvit2 lm train | generate | eval`` on token shards of a tiny tokenizer: exact resume after
SIGKILL, refused shards and configs (one-line errors), generation and evaluation, the benchmark."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from small_models import perturbed, small_config

import magvit2
from magvit2.cli.main import main
from magvit2.data.video_io import write_video
from magvit2.models import VideoTokenizer
from magvit2.tokens import load_tokens, model_fingerprint
from magvit2.tokens.shards import write_shard
from magvit2.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

SRC = Path(magvit2.__file__).resolve().parents[1]
ROOT = SRC.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def striped_clip(g: torch.Generator, frames: int = 6) -> torch.Tensor:
    """Token grid ``(frames, 2, 3)``: one random id per row, the same in every latent frame (an LM can
    learn both copies; the copy baseline knows only the one in time, the unigram neither)."""
    rows = torch.randint(0, 64, (2, 1), generator=g)
    return rows.expand(2, 3)[None].repeat(frames, 1, 1)


def rows(clips: list[torch.Tensor], folder: str) -> list[dict]:
    return [
        {"source": f"{folder}/c{i}.mp4", "frames": 1 + 4 * (c.shape[0] - 1), "height": 8, "width": 12,
         "fps": 25.0, "shape": list(c.shape), "ids": c.reshape(-1).tolist()}
        for i, c in enumerate(clips)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A tiny tokenizer folder (6-bit LFQ, 4x4x4 factors), training shards of two class folders and a
    held-out shard, all of striped clips."""
    root = tmp_path_factory.mktemp("lm")
    tok = perturbed(VideoTokenizer(small_config()), 0)
    tok.save_pretrained(root / "tok")
    tok = VideoTokenizer.from_pretrained(root / "tok")
    fp = model_fingerprint(tok.config.to_dict(), tok.state_dict())
    g = torch.Generator().manual_seed(0)
    clips = [striped_clip(g) for _ in range(1028)]
    (root / "train").mkdir()
    write_shard(root / "train" / "shard-00000.parquet", rows(clips[:512], "a") + rows(clips[512:1024], "b"),
                model=fp, vocabulary=64, spatial_factor=4)  # fmt: skip
    (root / "val").mkdir()
    write_shard(
        root / "val" / "shard-00000.parquet",
        rows(clips[1024:], "a"),
        model=fp,
        vocabulary=64,
        spatial_factor=4,
    )
    (root / "other").mkdir()
    write_shard(root / "other" / "shard-00000.parquet", rows(clips[:1], "a"), model="0123456789abcdef",
                vocabulary=64, spatial_factor=4)  # fmt: skip
    frames = np.random.default_rng(0).integers(0, 255, (21, 8, 12, 3), dtype=np.uint8)
    write_video(root / "clip.mp4", frames, fps=25)
    return root


def config(data: Path, out: Path, **top) -> dict:
    cfg = {
        "output_dir": str(out), "tokenizer": str(data / "tok"), "max_steps": 40, "checkpoint_every": 10,
        "log_every": 5, "num_threads": 1, "progress": False, "tensorboard": False, "ema_decay": 0.9,
        "model": {"dim": 32, "depth": 2, "heads": 2, "split_tokens": [3, 3], "dropout": 0.1},
        "data": {"paths": [str(data / "train")], "seed": 1,
                 "stages": [{"start_step": 0, "frames": 2, "batch_size": 8},
                            {"start_step": 10, "frames": 4, "batch_size": 4}]},
        "loss": {"later_frame_weight": 0.5},
        "optim": {"lr": 3e-3, "warmup_steps": 3, "grad_accum_steps": 2},
        "validation": {"paths": [str(data / "val")], "every": 20},
    }  # fmt: skip
    for key, value in top.items():
        section, _, field = key.partition("__")
        cfg[section] = {**cfg[section], field: value} if field else value
    return cfg


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}  # fmt: skip


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("magvit2 lm: error: "), err
    return err


# ---------------------------------------------------------------------------------------------- errors


def test_malformed_configs_give_one_line_errors(data, tmp_path, capsys):
    bad = {
        "unknown field": config(data, tmp_path / "r", modle={}),
        "expected int": config(data, tmp_path / "r", max_steps="many"),
        "must start at step 0": config(data, tmp_path / "r", data__stages=[{"start_step": 2, "frames": 2}]),
        "multiple of model.heads": config(data, tmp_path / "r", model={"dim": 30, "heads": 4}),
    }
    for i, (expected, cfg) in enumerate(bad.items()):
        path = write(tmp_path / f"bad{i}.yaml", cfg)
        err = one_line_error(capsys, ["lm", "train", str(path)])
        assert expected in err and str(path) in err, err
    (tmp_path / "broken.yaml").write_text("max_steps: [1,\n")
    assert "not valid YAML" in one_line_error(capsys, ["lm", "train", str(tmp_path / "broken.yaml")])
    path = write(tmp_path / "ok.yaml", config(data, tmp_path / "r"))
    assert "unknown field" in one_line_error(capsys, ["lm", "train", str(path), "--set", "optim.lrr=1"])


def test_shards_of_another_tokenizer_are_refused(data, tmp_path, capsys):
    path = write(tmp_path / "c.yaml", config(data, tmp_path / "r", data__paths=[str(data / "other")]))
    err = one_line_error(capsys, ["lm", "train", str(path)])
    assert (
        str(data / "other" / "shard-00000.parquet") in err
        and "0123456789abcdef" in err
        and "fingerprint" in err
    )
    assert not (tmp_path / "r" / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------- resume


def test_sigkill_and_resume_ends_with_identical_weights(data, tmp_path):
    """Kill -9 a run after its third checkpoint, resume it: the final weights, EMA and optimiser state
    equal those of an uninterrupted run bit for bit (progressive stages, dropout, accumulation)."""
    from magvit2.lm.config import load_lm_train_config
    from magvit2.lm.trainer import LMTrainer

    over = dict(max_steps=16, checkpoint_every=1, validation__every=0)
    run_cfg = write(tmp_path / "run.yaml", config(data, tmp_path / "run", **over))
    ckpts = tmp_path / "run" / "checkpoints"
    cmd = [sys.executable, "-m", "magvit2.cli.main", "lm", "train", str(run_cfg)]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        done = list_checkpoints(ckpts)
        if done and int(done[-1].name.split("-")[1]) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest_checkpoint(ckpts).name.split("-")[1])
    assert 3 <= killed_at < 16 and not (tmp_path / "run" / "final").exists()
    resumed = LMTrainer(load_lm_train_config(run_cfg), resume=True)
    assert resumed.step == killed_at
    resumed.fit()
    ref = LMTrainer(
        load_lm_train_config(write(tmp_path / "ref.yaml", config(data, tmp_path / "ref", **over)))
    )
    ref.fit()
    for group in ("model", "ema"):
        a = load_file(str(latest_checkpoint(tmp_path / "ref" / "checkpoints") / f"{group}.safetensors"))
        b = load_file(str(latest_checkpoint(ckpts) / f"{group}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), group
    sa = load_checkpoint(latest_checkpoint(tmp_path / "ref" / "checkpoints"))[2]["opt"]["state"]
    sb = load_checkpoint(latest_checkpoint(ckpts))[2]["opt"]["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)
    # the run moved away from its first checkpoint's weights
    first = load_file(str(list_checkpoints(tmp_path / "ref" / "checkpoints")[0] / "model.safetensors"))
    assert not torch.equal(first["embed.tables.0.weight"], a["embed.tables.0.weight"])


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # the I3D stand-in is TorchScript
def test_train_generate_eval(data, tmp_path, capsys):
    """A class-conditional LM learns the striped clips (held-out bits below both baselines); generation
    is reproducible by seed, follows the class, continues prompts and slides past its window."""
    learn = dict(max_steps=200, model={"dim": 48, "depth": 2, "heads": 2, "split_tokens": [3, 3]},
                 optim__grad_accum_steps=1,
                 data__stages=[], data__frames=4, data__batch_size=8, data__class_from="folder")  # fmt: skip
    cfg = write(tmp_path / "c.yaml", config(data, tmp_path / "run", **learn))
    assert main(["lm", "train", str(cfg)]) == 0
    out = capsys.readouterr().out
    lm = tmp_path / "run" / "final"
    meta = json.loads((lm / "config.json").read_text())
    assert (
        meta["class_names"] == ["a", "b"]
        and meta["model"]["num_classes"] == 2
        and meta["model"]["max_frames"] == 4
    )
    assert "held-out bits per token" in out

    def gen(name, *extra):
        assert (
            main(
                [
                    "lm",
                    "generate",
                    "--lm",
                    str(lm),
                    "-o",
                    str(tmp_path / f"{name}.mp4"),
                    "--device",
                    "cpu",
                    *extra,
                ]
            )
            == 0
        )
        return load_tokens(tmp_path / f"{name}.safetensors")

    a, b, c = (
        gen("a", "--frames", "13", "--seed", "1"),
        gen("b", "--frames", "13", "--seed", "1"),
        gen("c", "--frames", "13", "--seed", "2"),
    )
    assert (
        a.ids.shape == (4, 2, 3)
        and a.frames == 13
        and torch.equal(a.ids, b.ids)
        and not torch.equal(a.ids, c.ids)
    )
    guided = gen("g", "--frames", "13", "--class", "b", "--cfg", "2", "--temperature", "0")
    assert guided.ids.shape == (4, 2, 3)
    long = gen(
        "l",
        "--frames",
        "25",
        "--prompt",
        str(data / "clip.mp4"),
        "--prompt-frames",
        "5",
        "--window",
        "4",
        "--context",
        "2",
    )
    assert long.ids.shape == (7, 2, 3) and long.frames == 25
    capsys.readouterr()
    from test_metrics_frechet import _FakeI3D  # a TorchScript stand-in for the I3D file

    i3d = tmp_path / "i3d.pt"
    torch.jit.save(torch.jit.script(_FakeI3D().eval()), str(i3d))
    assert (
        main(
            [
                "lm",
                "eval",
                "--lm",
                str(lm),
                str(data / "val"),
                "--json",
                "--device",
                "cpu",
                "--continuations",
                "2",
                "--i3d",
                str(i3d),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert math.isfinite(report["continuation"]["fvd"])  # 2 clips: a rank-deficient estimate
    bits = report["bits"]
    assert bits["lm_bits_per_token"] < min(bits["unigram_bits_per_token"], bits["copy_bits_per_token"])
    assert bits["windows"] == 4 and len(bits["lm_bits_per_token_by_frame"]) == 4
    cont = report["continuation"]
    assert (
        cont["clips"] == 2 and cont["truth"] == "decoded true tokens" and cont["generated_latent_frames"] == 2
    )
    assert main(["lm", "eval", "--lm", str(lm), str(data / "clip.mp4"), "--device", "cpu"]) == 0
    assert "repeat last prompt frame" in capsys.readouterr().out
    err = one_line_error(
        capsys,
        ["lm", "generate", "--lm", str(lm), "-o", str(tmp_path / "x.mp4"), "--frames", "5", "--class", "z"],
    )
    assert "--class z" in err


def test_documented_lm_commands_load(capsys):
    """Every ``magvit2 lm`` command of the docs parses, and each ``lm train``'s config and overrides load."""
    import shlex

    from test_readme import _placeholder, shell_commands

    from magvit2.cli.main import build_parser
    from magvit2.lm.config import load_lm_train_config

    commands = [c for c in shell_commands() if c[2].startswith("magvit2 lm ")]
    assert len(commands) >= 4
    for _, _, command in commands:
        if _placeholder(command):
            continue
        args = build_parser().parse_args(shlex.split(command)[1:])
        if args.lm_command == "train" and args.config:
            load_lm_train_config(ROOT / args.config, args.overrides)


def test_benchmark_smoke(monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", ["lm.py", "--smoke"])
    runpy.run_path(str(ROOT / "benchmarks" / "lm.py"), run_name="__main__")
    result = json.loads(capsys.readouterr().out)
    assert result["train_tokens_per_s"] > 0 and result["sample_tokens_per_s"]["cache"] > 0
    assert result["kv_cache_speedup"] == pytest.approx(
        result["sample_tokens_per_s"]["cache"] / result["sample_tokens_per_s"]["no_cache"], rel=1e-6
    )
    assert len(result["peak_memory"]) >= 2


_DDP_WORKER = """
import os, sys
from safetensors.torch import save_file
from magvit2.lm.config import load_lm_train_config
from magvit2.lm.trainer import run_lm_training

trainer = run_lm_training(load_lm_train_config(sys.argv[1]))
state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
save_file(state, os.path.join(sys.argv[2], f"rank{trainer.info.rank}.safetensors"))
"""


def test_torchrun_two_processes_keep_identical_replicas(data, tmp_path):
    """``torchrun --nproc_per_node 2`` (gloo): each rank draws its own windows, gradients are averaged,
    so the two replicas end bit-identical and away from where they started; only rank 0 writes
    checkpoints and ``final/``. Without the gradient all-reduce the replicas would part at step 1."""
    script = tmp_path / "worker.py"
    script.write_text(_DDP_WORKER)
    over = dict(max_steps=4, checkpoint_every=2, validation__every=0, device="cpu")
    cfg = write(tmp_path / "ddp.yaml", config(data, tmp_path / "ddp", **over))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    res = subprocess.run([*launch, str(script), str(cfg), str(tmp_path)], env=env(), capture_output=True,
                         text=True, timeout=180)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert r0.keys() == r1.keys() and all(torch.equal(r0[k], r1[k]) for k in r0)
    first = load_file(str(list_checkpoints(tmp_path / "ddp" / "checkpoints")[0] / "model.safetensors"))
    assert any(not torch.equal(first[k], r0[k]) for k in first)
    assert (tmp_path / "ddp" / "final" / "model.safetensors").is_file()
