"""``magvit2 lm train | generate | eval``: a language model over video tokens (:mod:`magvit2.lm`)."""

from __future__ import annotations

import argparse
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from magvit2.cli.common import at_least, atomic_output, discover_inputs, resolve_device
from magvit2.lm.tasks import TASKS

EXAMPLES = """examples:
  magvit2 lm train configs/lm/bigbuckbunny.yaml --set max_steps=200
  magvit2 lm train configs/lm/bigbuckbunny.yaml --resume
  magvit2 lm generate --lm runs/lm/final -o out.mp4 --frames 33 --seed 1
  magvit2 lm generate --lm runs/lm/final -o cont.mp4 --frames 33 --prompt clip.mp4 --prompt-frames 9
  magvit2 lm eval --lm runs/lm/final held_out_shards/
  magvit2 lm generate --lm runs/masked/final -o mid.mp4 --frames 29 --task interpolate --prompt clip.mp4"""

#: Exit status of a run stopped early (as ``magvit2 train``).
EXIT_STOPPED_EARLY = 75


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``lm`` command and its ``train``, ``generate`` and ``eval`` sub-commands."""
    p = sub.add_parser(
        "lm",
        help="train, sample and evaluate a language model over video tokens",
        description="A decoder-only transformer over the tokens of a tokenizer (Loong-style).\n\n" + EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lm_sub = p.add_subparsers(dest="lm_command", metavar="SUBCOMMAND", required=True)
    _register_train(lm_sub)
    _register_generate(lm_sub)
    _register_eval(lm_sub)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lm", required=True, metavar="DIR", help="LM folder (the final/ of magvit2 lm train)")
    p.add_argument("--model", metavar="DIR", help="tokenizer folder (default: the one the LM records)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampling (same seed, same output)")


def _sampling_args(p: argparse.ArgumentParser, temperature: float) -> None:
    g = p.add_argument_group("sampling (each sub-token in turn)")
    g.add_argument(
        "--temperature", type=float, default=temperature, help=f"0: greedy (default {temperature})"
    )
    g.add_argument(
        "--top-k", type=at_least(0), default=0, metavar="K", help="keep the K most likely (0: all)"
    )
    g.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass (1: all)")
    g.add_argument(
        "--cfg", type=float, default=1.0, metavar="W", help="classifier-free guidance weight (1: off)"
    )
    g.add_argument(
        "--window", type=at_least(2), default=None, metavar="N",
        help="latent frames per window (default: the longest trained); longer videos slide it, "
        "re-encoding the frames they keep",
    )  # fmt: skip
    g.add_argument(
        "--context", type=at_least(1), default=None, metavar="N",
        help="latent frames kept (re-encoded) when the window slides (default: half the window)",
    )  # fmt: skip
    g.add_argument(
        "--steps", type=at_least(1), default=12, metavar="N",
        help="masked LMs: parallel decoding steps (model calls) per clip, and the steps of the "
        "unmasking order lm eval scores in (default 12)",
    )  # fmt: skip


def _options(args):
    from magvit2.lm import SamplingOptions

    return SamplingOptions(args.temperature, args.top_k, args.top_p, args.cfg)


# ---------------------------------------------------------------------------------------------- train


def _register_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train an LM on token shards from a YAML config",
        description="Train as CONFIG.yaml says (fields: magvit2.lm.LMTrainConfig; see --print-config).",
    )
    p.add_argument("config", nargs="?", help="YAML file of LMTrainConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set optim.lr=1e-3 (repeatable)")  # fmt: skip
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from magvit2.lm.config import lm_config_to_yaml, load_lm_train_config

    if args.config is None and not args.print_config:
        raise ValueError("lm train: expected a CONFIG.yaml argument (or --print-config for the defaults)")
    cfg = load_lm_train_config(args.config, args.overrides)
    if args.print_config:
        print(lm_config_to_yaml(cfg), end="")
        return 0
    from magvit2.lm.trainer import run_lm_training

    trainer = run_lm_training(cfg, resume=args.resume)
    print(f"LM: {trainer.final}")
    v = trainer.last_validation
    if v:
        print(f"held-out bits per token at step {v['step']}: {v['bits_per_token']:.4f}")
    if trainer.stopped_by is not None:
        print(f"stopped early by {trainer.stopped_by} at step {trainer.step} of {cfg.max_steps}; "
              "continue with the same command and --resume")  # fmt: skip
        return EXIT_STOPPED_EARLY
    return 0


# ---------------------------------------------------------------------------------------------- generate


def _register_generate(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="sample a video (unconditional, class-conditional, or continuing a prompt clip)",
        description="Sample tokens with the LM and decode them with its tokenizer; writes the video and "
        "the token file (same --seed, same output).",
    )
    _common(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.mp4", help="the video to write")
    p.add_argument("--tokens", metavar="OUT.safetensors", help="token file (default: OUT with .safetensors)")
    p.add_argument("--frames", type=at_least(1), required=True, metavar="F",
                   help="video frames in all, prompt included (whole latent frames: 1 + t*k)")  # fmt: skip
    p.add_argument(
        "--prompt", metavar="CLIP", help="a clip to continue (scaled and centre-cropped to the LM's size)"
    )
    p.add_argument("--prompt-frames", type=at_least(1), default=None, metavar="N",
                   help="frames of the prompt clip to use (rounded down to whole latent frames)")  # fmt: skip
    p.add_argument("--class", dest="cls", metavar="C", help="class name or index (class-conditional LMs)")
    p.add_argument(
        "--task", choices=TASKS, default=None,
        help="what is given: predict (the first --prompt-frames of --prompt), interpolate (its first "
        "--prompt-frames and last --end-frames), outpaint (its --region), inpaint (all but its --region), "
        "class (nothing; the default without --prompt). Masked LMs do all five; autoregressive ones "
        "predict and class",
    )  # fmt: skip
    p.add_argument("--end-frames", type=at_least(1), default=None, metavar="N",
                   help="interpolate: video frames given last (whole latent frames; default t)")  # fmt: skip
    p.add_argument("--region", metavar="Y,X,H,W", default=None,
                   help="outpaint: the box given; inpaint: the box generated (pixels of the LM's frame; "
                   "default the centre half of each side)")  # fmt: skip
    p.add_argument(
        "--fps", type=float, default=None, help="frame rate of the output (default: the prompt's, else 25)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    _sampling_args(p, temperature=1.0)
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from magvit2.data.video_io import probe
    from magvit2.lm.pipeline import generate, load_lm, prompt_ids, whole_latent_frames

    options = _options(args)
    device = resolve_device(args.device)
    lm = load_lm(args.lm, device, args.model)
    latent = 1 + -(-(args.frames - 1) // lm.t)
    if lm.model.config.kind == "masked":
        return _run_masked_generate(args, lm, latent, options)
    if args.task not in (None, "predict", "class") or (args.task == "class" and args.prompt):
        raise ValueError(
            f"--task {args.task}{' with --prompt' if args.task == 'class' else ''}: this autoregressive "
            "LM continues a --prompt or starts from nothing; a masked LM (model.kind: masked) does the rest"
        )
    if args.task == "predict" and args.prompt is None:
        raise ValueError("--task predict needs --prompt CLIP and --prompt-frames N")
    if (args.prompt is None) != (args.prompt_frames is None):
        raise ValueError("--prompt and --prompt-frames go together")
    prompt, fps = None, args.fps
    if args.prompt is not None:
        prompt, _ = prompt_ids(lm, args.prompt, args.prompt_frames)
        if prompt.shape[1] >= latent:
            raise ValueError(
                f"--frames {args.frames} must reach past the prompt's "
                f"{whole_latent_frames(args.prompt_frames, lm.t)} latent frames"
            )
        fps = fps or float(probe(args.prompt).fps)
    video, ids = generate(
        lm, latent, prompt, lm.class_id(args.cls), options, args.seed, args.window, args.context
    )
    return _write_generated(args, lm, video, ids, fps)


def _run_masked_generate(args: argparse.Namespace, lm, latent: int, options) -> int:
    """``lm generate`` with a masked LM: the task's given tokens from --prompt, MaskGIT decoding."""
    from magvit2.data.video_io import probe
    from magvit2.lm.masked import DecodeOptions, generate_task, task_inputs

    task = args.task or ("predict" if args.prompt else "class")
    ids, given = task_inputs(lm, task, latent, args.prompt, args.prompt_frames, args.end_frames, args.region)
    decoding = DecodeOptions(args.steps, options.temperature, options.top_k, options.top_p, options.cfg)
    video, ids = generate_task(lm, ids, given, task, lm.class_id(args.cls), decoding, args.seed)
    fps = args.fps or (float(probe(args.prompt).fps) if args.prompt else None)
    return _write_generated(args, lm, video, ids, fps)


def _write_generated(args: argparse.Namespace, lm, video, ids, fps: float | None) -> int:
    """Write the first ``--frames`` frames of video ``(1, 3, F, H, W)`` and the token file of ids."""
    from magvit2.data.video_io import to_uint8, write_video
    from magvit2.tokens import TokenFile, save_tokens

    frames = to_uint8(video[0, :, : args.frames])
    out = Path(args.output)
    tokens = Path(args.tokens) if args.tokens else out.with_suffix(".safetensors")
    rate = Fraction(fps or 25).limit_denominator(1001000)
    with atomic_output(out, args.overwrite) as tmp:
        write_video(tmp, frames, fps=rate, lossless=False, crf=12)
    h, w = frames.shape[1:3]
    tf = TokenFile(
        ids=ids[0].cpu(), model=lm.meta["tokenizer_fingerprint"], vocabulary=lm.model.config.vocabulary,
        frames=len(frames), height=h, width=w, fps=rate, source=out.name, encoding="lm",
    )  # fmt: skip
    with atomic_output(tokens, args.overwrite) as tmp:
        save_tokens(tmp, tf)
    print(f"{out}: {len(frames)} frames {w}x{h} ({ids.shape[1]} latent frames); tokens: {tokens}")
    return 0


# ---------------------------------------------------------------------------------------------- eval


def _register_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="held-out bits per token and continuation quality, next to baselines",
        description="Score held-out token shards or clips: bits per token and per pixel of the LM, the "
        "unigram of the training tokens and copy-the-previous-latent-frame; continuation PSNR/SSIM "
        "next to repeating the last prompt frame; FVD with --i3d.",
    )
    _common(p)
    p.add_argument("inputs", nargs="+", metavar="SHARDS_OR_CLIPS",
                   help="token shards (*.parquet, or folders of them) or video clips")  # fmt: skip
    p.add_argument("--frames", type=at_least(1), default=None, metavar="N",
                   help="latent frames per scored window (default: the longest trained)")  # fmt: skip
    p.add_argument(
        "--max-frames", type=at_least(1), default=None, help="read at most this many frames of a clip"
    )
    p.add_argument(
        "--prompt-frames",
        type=at_least(1),
        default=None,
        metavar="N",
        help="video frames given as the prompt of each continuation (default: half the window)",
    )
    p.add_argument("--continuations", type=at_least(0), default=4, metavar="K",
                   help="windows continued and compared with the truth (default 4; 0: none)")  # fmt: skip
    p.add_argument("--i3d", metavar="FILE", help="I3D TorchScript file: FVD of the continuations")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    _sampling_args(p, temperature=0.0)
    p.set_defaults(func=run_eval)


def _read_inputs(lm, inputs: list[str], max_frames: int | None):
    """-> (TokenClips of the inputs, true frames per clip or None for shards)."""
    from magvit2.data.video_io import to_tensor
    from magvit2.lm.data import TokenClips, load_clips
    from magvit2.lm.pipeline import read_clip

    shards = [
        i for i in inputs if i.endswith(".parquet") or (Path(i).is_dir() and any(Path(i).glob("*.parquet")))
    ]
    if shards:
        if len(shards) != len(inputs):
            raise ValueError("lm eval: give token shards or clips, not both")
        return load_clips(
            shards, lm.meta["tokenizer_fingerprint"], lm.meta.get("tokenizer", ""), "inputs"
        ), None
    ids, sources, pixels = [], [], []
    for path, _ in discover_inputs(inputs):
        frames = read_clip(path, max_frames, *lm.pixel_size)
        n = 1 + (len(frames) - 1) // lm.t
        frames = frames[: 1 + lm.t * (n - 1)]
        ids.append(lm.encode(to_tensor(frames)[None])[0].cpu())
        sources.append(str(path))
        pixels.append(frames)
    return TokenClips(ids, sources, lm.model.config.vocabulary), pixels


def _continuations(lm, clips, pixels, window: int, prompt_frames: int | None, count: int, args) -> dict:
    """PSNR/SSIM of generated continuations against the truth, and of repeating the last prompt frame."""
    from magvit2.data.video_io import to_uint8
    from magvit2.inference.metrics import ReconstructionMetrics
    from magvit2.lm.pipeline import generate, whole_latent_frames
    from magvit2.models import video_frames

    p = whole_latent_frames(prompt_frames, lm.t) if prompt_frames else max(1, window // 2)
    if p >= window:
        raise ValueError(
            f"--prompt-frames: the prompt's {p} latent frames must be fewer than the window's {window}"
        )
    gen, rep, rec = ReconstructionMetrics(), ReconstructionMetrics(), ReconstructionMetrics()
    fvd = None
    if args.i3d:
        from magvit2.evaluation.fvd import FrechetVideoDistance

        fvd = FrechetVideoDistance(args.i3d, device=next(lm.model.parameters()).device)
    done = 0
    for i, ids in enumerate(clips.ids):
        if done == count or ids.shape[0] < window:
            continue
        ids = ids[None, :window].to(next(lm.model.parameters()).device)
        video, _ = generate(lm, window, ids[:, :p], None, _options(args), args.seed + done, steps=args.steps)
        n0, n1 = video_frames(p, lm.t), video_frames(window, lm.t)
        decoded_truth = to_uint8(lm.decode(ids)[0])
        truth = pixels[i][:n1] if pixels is not None else decoded_truth
        generated = to_uint8(video[0])
        gen.update(truth[n0:n1], generated[n0:n1])
        rep.update(truth[n0:n1], np.repeat(truth[n0 - 1 : n0], n1 - n0, axis=0))
        if pixels is not None:
            rec.update(truth[n0:n1], decoded_truth[n0:n1])
        if fvd is not None:
            from magvit2.data.video_io import to_tensor

            fvd.update(real=to_tensor(truth)[None], fake=to_tensor(generated)[None])
        done += 1
    if not done:
        return {"clips": 0}
    out = {
        "clips": done, "prompt_latent_frames": p, "generated_latent_frames": window - p,
        "truth": "source frames" if pixels is not None else "decoded true tokens",
        "lm_psnr": gen.psnr, "lm_ssim": gen.ssim, "repeat_last_frame_psnr": rep.psnr,
        "repeat_last_frame_ssim": rep.ssim,
    }  # fmt: skip
    if pixels is not None:
        out |= {"tokenizer_psnr": rec.psnr, "tokenizer_ssim": rec.ssim}
    if fvd is not None:
        out["fvd"] = fvd.compute() if done > 1 else math.nan
    return out


def _finite(obj):
    """NaN / inf -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def run_eval(args: argparse.Namespace) -> int:
    from magvit2.lm.data import eval_windows
    from magvit2.lm.evaluate import bits_report
    from magvit2.lm.pipeline import load_lm

    device = resolve_device(args.device)
    lm = load_lm(args.lm, device, args.model)
    cfg = lm.model.config
    window = args.frames or cfg.max_frames
    clips, pixels = _read_inputs(lm, args.inputs, args.max_frames)
    windows = eval_windows(clips, window, cfg.height, cfg.width)
    torch.manual_seed(args.seed)
    if cfg.kind == "masked":
        lm.model.score_steps = args.steps
    report = {"bits": bits_report(lm.model, windows, lm.unigram_counts(), lm.t, lm.tokenizer.spatial_factor)}
    if cfg.kind == "masked":
        report["bits"]["masked_order_steps"] = args.steps
    if args.continuations:
        report["continuation"] = _continuations(
            lm, clips, pixels, window, args.prompt_frames, args.continuations, args
        )
    if args.json:
        print(json.dumps(_finite(report), indent=2))
        return 0
    b = report["bits"]
    print(f"held-out bits per token ({b['windows']} windows of {b['latent_frames']} latent frames, "
          f"{b['tokens']} tokens): LM {b['lm_bits_per_token']:.4f}, "
          f"unigram {b['unigram_bits_per_token']:.4f}, copy previous latent frame "
          f"{b['copy_bits_per_token']:.4f}; LM bits per pixel {b['lm_bits_per_pixel']:.5f}")  # fmt: skip
    c = report.get("continuation", {})
    if c.get("clips"):
        fvd = f"; FVD {c['fvd']:.1f}" if "fvd" in c else ""
        print(f"continuation ({c['clips']} clips, {c['prompt_latent_frames']} latent frames given, "
              f"{c['generated_latent_frames']} generated; truth: {c['truth']}): "
              f"LM PSNR {c['lm_psnr']:.2f} dB SSIM {c['lm_ssim']:.4f}; repeat last prompt frame "
              f"{c['repeat_last_frame_psnr']:.2f} dB "
              f"SSIM {c['repeat_last_frame_ssim']:.4f}{fvd}")  # fmt: skip
    return 0
