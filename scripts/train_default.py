"""Make the built-in ``default`` tokenizer, or train one like it on synthesised clips of ordinary footage.

    magvit2 trainset data/trainset                                   # once: photographs, objects, a cartoon
    python scripts/train_default.py --data data/trainset --out runs/default --mean-bits 6 6 6 \
        --mean-slope 0.75 --mean-chroma-share 2 --mean-detail-bits 9 --decoder-network no ...   # the built-in
    python scripts/train_default.py --data data/trainset --out runs/net --minutes 7        # a network, GPU
    python scripts/train_default.py --data data/trainset --out runs/net --steps 20000      # CPU, resumable
    python scripts/train_default.py ... --resume                     # continue after a kill

A model with every bit fixed and no decoder network (the built-in one; docs/default-model.md, "Recipe")
has no weights: its detail patterns are fitted by k-means on ``--fit-clips`` training clips
(:func:`magvit2.modules.block_mean.fit_detail`), scored on the validation sets and written to
``OUT/best``. Otherwise the model's weights are trained:

Clips come from :class:`magvit2.data.synthetic.ClipSynth` on the training device (camera motion over
photographs, moving objects, cartoon frames, cuts, fades, flat colours and ramps); every
``--image-every``-th step is a batch of images, and with ``--flat-every`` some of the others are small
flat-colour clips (``ClipSynth.flat_batch``). Loss: MSE + 0.2 L1 in [-1, 1] + 0.1 x the quantizer's
entropy and commitment terms (the entropy term's own weight is ``--entropy-weight``, 0.1 by default)
+ ``--mean-weight`` x the squared error of each clip's mean colour (against colour casts); AdamW,
warm-up then cosine decay; EMA of the weights. Every ``--val-every`` steps the EMA weights are scored
on clips synthesised from the validation split of the same sources (never on a held-out clip) and on
flat colours and ramps, and the best (``--select``; with ``--guard`` only weights no worse than the
``--init`` ones) are written to ``OUT/best`` (fp16). With ``--minutes`` the number of steps is set
after the first steps from their measured speed, so the run ends within the budget. Progress is
printed as JSON lines and kept in ``OUT/log.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from magvit2 import VideoTokenizer
from magvit2.data.synthetic import ClipSynth, SynthConfig
from magvit2.data.video_io import to_tensor
from magvit2.evaluation.sanity import flat_clips, ramp_clips
from magvit2.models import get_preset
from magvit2.modules.block_mean import fit_detail
from magvit2.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from magvit2.training.ema import EMA
from magvit2.training.schedule import warmup_cosine


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder written by `magvit2 trainset`")
    p.add_argument("--out", required=True, help="run folder (checkpoints, best model, log)")
    p.add_argument("--preset", default="small")
    p.add_argument("--init", default=None, help="start from this model folder's weights")
    p.add_argument("--padding", choices=["zeros", "replicate"], default=None, help="default: the preset's")
    p.add_argument("--mean-bits", type=int, nargs=3, default=None, metavar=("Y", "CO", "CG"),
                   help="block-mean bits (TokenizerConfig.mean_bits); default: --init's")  # fmt: skip
    p.add_argument("--mean-slope", type=float, default=None,
                   help="TokenizerConfig.mean_slope; default: --init's")  # fmt: skip
    p.add_argument("--mean-slope-bits", type=int, default=None, choices=(0, 2),
                   help="TokenizerConfig.mean_slope_bits; default: --init's")  # fmt: skip
    p.add_argument("--mean-chroma-share", type=int, default=None, choices=(1, 2),
                   help="TokenizerConfig.mean_chroma_share; default: --init's")  # fmt: skip
    p.add_argument("--mean-detail-bits", type=int, default=None,
                   help="TokenizerConfig.mean_detail_bits; default: --init's")  # fmt: skip
    p.add_argument("--decoder-network", choices=("yes", "no"), default=None,
                   help="TokenizerConfig.decoder_network; default: --init's. 'no' with every bit fixed: "
                        "no weights to train, the detail table is fitted (--fit-clips); 'yes' from an "
                        "--init without one: a new network (its output starting at zero) learns a "
                        "correction to the fixed reconstruction")  # fmt: skip
    p.add_argument("--fit-clips", type=int, default=96, help="training clips the detail table is fitted on")
    p.add_argument("--fit-iters", type=int, default=30, help="k-means iterations of that fit")
    p.add_argument("--steps", type=int, default=20000,
                   help="total steps (ignored with --minutes); 0: write the --init weights under this "
                        "run's config to OUT/best, validated")  # fmt: skip
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget; sets --steps")
    p.add_argument("--batch", type=int, default=16, help="clips per video step")
    p.add_argument("--image-batch", type=int, default=64, help="images per image step")
    p.add_argument("--image-every", type=int, default=4, help="every k-th step is an image step")
    p.add_argument("--flat-every", type=int, default=0, help="every k-th non-image step is a flat one")
    p.add_argument("--flat-batch", type=int, default=32, help="flat clips per flat step")
    p.add_argument("--flat-size", type=int, default=24, help="side of the flat clips")
    p.add_argument("--flat-frames", type=int, default=None, help="frames of flat clips (default: --frames)")
    p.add_argument("--size", type=int, default=128, help="side of the training clips")
    p.add_argument("--frames", type=int, default=17, help="frames of the training clips")
    p.add_argument("--image-size", type=int, default=None, help="side of the images (default: --size)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--entropy-weight", type=float, default=None,
                   help="LFQ entropy-loss weight for this run (default: the model config's)")  # fmt: skip
    p.add_argument("--mean-weight", type=float, default=0.0,
                   help="weight of the squared error of each clip's per-channel mean colour")  # fmt: skip
    p.add_argument("--val-every", type=int, default=150)
    p.add_argument("--val-clips", type=int, default=48)
    p.add_argument("--val-frames", type=int, default=None, help="default: --frames")
    p.add_argument("--val-size", type=int, default=None, help="default: --size")
    p.add_argument("--select", choices=["video", "all"], default="video",
                   help="keep the weights with the best val_video, or the best mean of val_video, "
                   "val_image and flat (flat colours and ramps, each capped at 40 dB)")  # fmt: skip
    p.add_argument("--guard", action="store_true",
                   help="with --init: OUT/best only takes weights that beat the --init weights' score "
                   "and are no worse on val_video, val_late, val_cast and flat_min (the --init weights "
                   "are validated before the first step)")  # fmt: skip
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--p-flat", type=float, default=0.12, help="share of flat, ramp and texture clips")
    p.add_argument("--p-pure", type=float, default=0.0, help="share of flat colours from the extremes")
    p.add_argument("--ramp-span", type=float, nargs=2, default=None, help="ramp length range, in frame sides")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    if args.guard and not args.init:
        p.error("--guard compares with the --init weights: give --init")
    args.image_size = args.image_size or args.size
    args.val_frames = args.val_frames or args.frames
    args.flat_frames = args.flat_frames or args.frames
    args.val_size = args.val_size or args.size
    return args


#: Highest PSNR a simple-content clip counts for: past 40 dB an error is invisible, and one flat
#: colour far above that must not make up for another below it.
SIMPLE_CAP = 40.0


def item_psnr(rec: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Each item's PSNR in dB for values in [-1, 1], ``rec`` clamped to them: ``(B, ...)`` -> ``(B,)``."""
    mse = (rec.float().clamp(-1, 1) - ref.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4 / mse.clamp_min(1e-10))


def psnr(rec: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of each item's PSNR in dB for values in [-1, 1]; ``(B, ...)`` -> scalar."""
    return item_psnr(rec, ref).mean()


def channel_mean_error(rec: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Each item's per-channel mean of ``rec - ref`` (unclamped), the batched tensor form of
    :func:`magvit2.evaluation.sanity.channel_mean_error`: ``(B, C, ...)`` -> ``(B, C)``."""
    return (rec.float() - ref.float()).flatten(2).mean(2)


def colour_cast(rec: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Each item's largest per-channel mean error in 1/255 of the full range, ``rec`` clamped to
    [-1, 1] as when shown: ``(B, C, ...)`` -> ``(B,)``."""
    return channel_mean_error(rec.clamp(-1, 1), ref).abs().amax(1) * 255 / 2


@torch.no_grad()
def validate(model: VideoTokenizer, val: dict[str, torch.Tensor], batch: int) -> dict[str, float]:
    """Mean PSNR of ``model`` on each validation set (name -> clips), in fp32, ``batch`` items at a
    time; on ``flat`` each clip counts for at most :data:`SIMPLE_CAP` dB and ``flat_min`` is its worst
    clip. ``val_late`` is ``val_video``'s PSNR over its last quarter of frames (quality late in a clip)
    and ``val_cast`` the mean over its clips of the largest per-channel mean-colour error, in 1/255."""
    model.eval()
    scores = {}
    for name, clips in val.items():
        total = late = cast = 0.0
        worst = math.inf
        for part in clips.split(batch):
            rec = model(part).reconstruction
            each = item_psnr(rec, part)
            if name == "flat":
                worst = min(worst, float(each.min()))
                each = each.clamp_max(SIMPLE_CAP)
            total += float(each.sum())
            if name == "val_video":
                tail = max(1, part.shape[2] // 4)
                late += float(psnr(rec[:, :, -tail:], part[:, :, -tail:])) * len(part)
                cast += float(colour_cast(rec, part).sum())
        scores[name] = round(total / len(clips), 3)
        if name == "val_video":
            scores["val_late"] = round(late / len(clips), 3)
            scores["val_cast"] = round(cast / len(clips), 3)
        if name == "flat":
            scores["flat_min"] = round(worst, 3)
    model.train()
    return scores


def selection_score(scores: dict[str, float], select: str) -> float:
    """What ``OUT/best`` maximises: ``val_video``, or (``all``) the mean of ``val_video``, ``val_image``
    and ``flat`` with ``flat`` capped at :data:`SIMPLE_CAP` dB."""
    if select == "video":
        return scores["val_video"]
    return round((scores["val_video"] + scores["val_image"] + min(scores["flat"], SIMPLE_CAP)) / 3, 3)


def simple_content(frames: int, size: int = 64) -> torch.Tensor:
    """The flat colours and ramps of :mod:`magvit2.evaluation.sanity` (what
    ``benchmarks/builtin_checks.py`` reports), ``(13, 3, frames, size, size)`` in [-1, 1]."""
    clips = {**flat_clips(frames, size), **ramp_clips(frames, size)}
    return torch.stack([to_tensor(clip) for clip in clips.values()])


def random_flats(count: int, frames: int, size: int = 64, seed: int = 4321) -> torch.Tensor:
    """``count`` flat clips of colours drawn uniformly from the RGB cube's 256 levels per channel (a
    fixed seed), ``(count, 3, frames, size, size)`` in [-1, 1]: flat colour in general."""
    levels = torch.randint(0, 256, (count, 3), generator=torch.Generator().manual_seed(seed))
    colours = levels.float() / 127.5 - 1
    return colours[:, :, None, None, None].expand(-1, -1, frames, size, size).contiguous()


#: Figures a ``--guard`` run may not worsen, and which way is better (+1: higher).
GUARDED = {"val_video": 1, "val_late": 1, "flat_min": 1, "val_cast": -1}


def no_worse(scores: dict[str, float], floor: dict[str, float]) -> bool:
    """Whether ``scores`` are at least as good as ``floor`` on every :data:`GUARDED` figure."""
    return all(sign * (scores[key] - floor[key]) >= 0 for key, sign in GUARDED.items())


def validation_sets(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Fixed validation clips from the validation split; flat colours (the checks' eleven and 16 drawn
    at random) and ramps."""
    synth = ClipSynth.from_folder(args.data, "val", device=args.device, seed=1234)
    n, frames = args.val_clips, args.val_frames
    return {
        "val_video": synth.batch(n, frames, args.val_size),
        "val_image": synth.batch(n, 1, args.val_size)[:, :, 0],
        "flat": torch.cat([simple_content(frames), random_flats(16, frames)]).to(args.device),
    }


def make_batch(synth: ClipSynth, args: argparse.Namespace, step: int) -> torch.Tensor:
    """Step ``step``'s batch: images ``(B, 3, I, I)`` (``I``: ``--image-size``) every ``--image-every``-th
    step; of the other steps every ``--flat-every``-th is flat clips, the rest clips ``(B, 3, T, S, S)``."""
    every = args.image_every
    if every > 0 and step % every == every - 1:
        return synth.batch(args.image_batch, 1, args.image_size)[:, :, 0]
    clip_index = step - step // every if every > 0 else step  # steps so far that were not image steps
    if args.flat_every > 0 and clip_index % args.flat_every == args.flat_every - 1:
        return synth.flat_batch(args.flat_batch, args.flat_frames, args.flat_size)
    return synth.batch(args.batch, args.frames, args.size)


def to_cpu(obj):
    """``obj`` (nested dicts, lists, tensors) with every tensor moved to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


#: Scale of the decoder's last conv when ``--init`` weights gain the block-mean code (see init_weights).
MEAN_INIT_SCALE = 0.1


def init_weights(model: VideoTokenizer, source: VideoTokenizer) -> None:
    """Start ``model`` from ``source``'s weights (and tables). They may differ only in the block-mean
    code (``mean_bits``, ``mean_slope``, ``mean_slope_bits``, ``mean_chroma_share``,
    ``mean_detail_bits``) and in ``decoder_network``:

    * the encoder keeps the first of ``source``'s latent channels it still learns (none: no encoder
      network); a model without a decoder network drops ``source``'s;
    * a decoder network new to the model starts with its last conv at zero: the model starts as
      exactly ``source`` (so ``--guard`` compares with it), and the first step's gradient reaches
      that conv and then the layers before it;
    * a trained decoder that gains the block-mean code starts with its last conv scaled by
      ``MEAN_INIT_SCALE``: it first outputs the upsampled block means plus a small correction.
      (Scaled to zero, its other layers got no useful gradient and the correction did not learn.)"""
    mine, theirs = model.config, source.config
    code = ("mean_bits", "mean_slope", "mean_slope_bits", "mean_chroma_share", "mean_detail_bits")
    if dataclasses.replace(theirs, **{k: getattr(mine, k) for k in (*code, "decoder_network")}) != mine:
        raise ValueError(f"--init: {theirs} differs from the model's {mine} in more than {', '.join(code)}")
    state, wanted = source.state_dict(), model.state_dict()
    last = ("decoder.conv_out.conv_1.weight", "decoder.conv_out.conv_1.bias")
    if mine.decoder_network and not theirs.decoder_network:
        state.update({k: wanted[k] for k in wanted if k.startswith("decoder.") and k not in state})
    state.update({k: wanted[k] for k in wanted if k.endswith("block_mean.detail") and k not in state})
    for side, kept in (("encoder.", mine.learned_channels > 0), ("decoder.", mine.decoder_network)):
        if not kept:  # no network on this side: only its tables (the detail patterns) stay
            state = {k: v for k, v in state.items() if not k.startswith(side) or k in wanted}
    if mine.learned_channels and theirs.learned_channels != mine.learned_channels:
        for key in ("encoder.conv_out.conv_1.weight", "encoder.conv_out.conv_1.bias"):
            state[key] = state[key][: mine.learned_channels]
    if mine.decoder_network and not theirs.decoder_network:
        for key in last:
            state[key] = torch.zeros_like(state[key])
    elif theirs.mean_bits is None and mine.mean_bits is not None:
        for key in last:
            state[key] = state[key] * MEAN_INIT_SCALE
    model.load_state_dict(state)


def build_model(args: argparse.Namespace) -> VideoTokenizer:
    """The model to train: ``--preset`` with ``--padding`` and the block-mean code options
    (``--mean-bits``, ``--mean-slope``, ``--mean-slope-bits``; default: the ``--init`` model's),
    weights from ``--init``, and the LFQ entropy weight ``--entropy-weight`` (a training setting: the
    saved config keeps its own)."""
    source = VideoTokenizer.from_pretrained(args.init) if args.init else None
    config = get_preset(args.preset)
    if args.padding:
        config = dataclasses.replace(config, padding=args.padding)
    code = {"mean_bits": args.mean_bits or (source.config.mean_bits if source else None)}
    for key in ("mean_slope", "mean_slope_bits", "mean_chroma_share", "mean_detail_bits"):
        value = getattr(args, key)
        code[key] = getattr(source.config if source else config, key) if value is None else value
    if code["mean_bits"]:
        code["mean_bits"] = tuple(code["mean_bits"])
    network = source.config.decoder_network if source else config.decoder_network
    code["decoder_network"] = network if args.decoder_network is None else args.decoder_network == "yes"
    config = dataclasses.replace(config, **code)
    model = VideoTokenizer(config)
    if source is not None:
        init_weights(model, source)
    if args.entropy_weight is not None:
        model.quantizer.entropy_weight = args.entropy_weight
    return model


def save_best(model: VideoTokenizer, ema: EMA, out: Path) -> None:
    """Write the EMA weights as a model folder ``out`` (fp16)."""
    best = VideoTokenizer(model.config)
    best.load_state_dict({k: v.float().cpu() for k, v in ema.state_dict().items()})
    best.save_pretrained(out, dtype=torch.float16)


def fit_fixed_model(model: VideoTokenizer, args: argparse.Namespace, out: Path) -> None:
    """A model with no weights (every bit fixed, no decoder network): fit its detail table by k-means
    (:func:`magvit2.modules.block_mean.fit_detail`) on ``--fit-clips`` training clips of ``--frames``
    x ``--size``, score it on the validation sets and write it to ``OUT/best`` (fp16)."""
    code = model.encoder.block_mean
    fitted = {}
    if code.detail_bits:
        mix = SynthConfig(p_flat=args.p_flat, p_pure=args.p_pure)
        synth = ClipSynth.from_folder(args.data, "train", cfg=mix, seed=args.seed)
        clips = [synth.batch(8, args.frames, args.size) for _ in range(max(1, args.fit_clips // 8))]
        fitted = fit_detail(code, clips, iters=args.fit_iters, seed=args.seed)
        model.decoder.block_mean.detail.copy_(code.detail)
    model.save_pretrained(out / "best", dtype=torch.float16)
    best = VideoTokenizer.from_pretrained(out / "best").eval()
    scores = validate(best, validation_sets(args), batch=8)
    record = {"step": 0, "fit": fitted, **scores, "score": selection_score(scores, args.select), "best": True}
    print(json.dumps(record), flush=True)
    with open(out / "log.jsonl", "a") as log:
        log.write(json.dumps({"args": vars(args)}) + "\n" + json.dumps(record) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    model = build_model(args).to(device).train()
    if not any(True for _ in model.parameters()):
        return fit_fixed_model(model.cpu().eval(), args, out)
    eval_model = VideoTokenizer(model.config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = EMA(model, args.ema)
    span = tuple(args.ramp_span) if args.ramp_span else None
    mix = SynthConfig(p_flat=args.p_flat, p_pure=args.p_pure, ramp_span=span)
    synth = ClipSynth.from_folder(args.data, "train", cfg=mix, device=device, seed=args.seed)
    val = validation_sets(args)
    state = {"step": 0, "total": args.steps, "best": -math.inf, "seconds": 0.0}

    ckpt_dir = out / "checkpoints"
    if args.resume and (ckpt := latest_checkpoint(ckpt_dir)) is not None:
        state["step"], weights, saved = load_checkpoint(ckpt)
        model.load_state_dict(weights["model"])
        ema.load_state_dict({k: v.to(device) for k, v in weights["ema"].items()})
        opt.load_state_dict(saved["optimizer"])
        synth.gen.set_state(saved["synth_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state.update(saved["run"])
        if args.minutes is None:
            state["total"] = args.steps
        print(json.dumps({"resumed": str(ckpt), "step": state["step"]}), flush=True)
    elif args.guard:  # the --init weights set the bar (the EMA starts as a copy of them)
        eval_model.load_state_dict(ema.state_dict())
        state["floor"] = validate(eval_model, val, batch=8)
        state["best"] = selection_score(state["floor"], args.select)

    log = open(out / "log.jsonl", "a")
    emit = lambda record: (
        print(json.dumps(record), flush=True),
        log.write(json.dumps(record) + "\n"),
        log.flush(),
    )
    emit({"start": state["step"], "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
          "params": sum(p.numel() for p in model.parameters()), "args": vars(args)})  # fmt: skip
    if "floor" in state and state["step"] == 0:
        emit({"step": 0, **state["floor"], "score": state["best"], "init": args.init})
    if state["total"] == 0:  # a conversion: the --init weights under this run's config
        eval_model.load_state_dict(ema.state_dict())
        scores = validate(eval_model, val, batch=8)
        save_best(model, ema, out / "best")
        state["best"] = selection_score(scores, args.select)
        emit({"step": 0, **scores, "score": state["best"], "best": True})
    t0, step0, calibrated = time.time(), state["step"], args.minutes is None
    deadline = t0 + args.minutes * 60 if args.minutes else math.inf
    while state["step"] < state["total"] and time.time() < deadline:
        step = state["step"]
        if not calibrated and step - step0 == 10:
            t10 = time.time()  # the first steps include kernel selection: time the next ones
        if not calibrated and step - step0 == 60:
            per_step = (time.time() - t10) / 50
            state["total"] = step + int((deadline - time.time()) / per_step * 0.95)
            calibrated = True
            emit({"calibrated": state["total"], "seconds_per_step": round(per_step, 4)})
        for g in opt.param_groups:
            g["lr"] = args.lr * warmup_cosine(step, args.warmup, state["total"], 0.05)
        x = make_batch(synth, args, step)
        with autocast:
            result = model(x)
        rec = result.reconstruction.float()
        loss = F.mse_loss(rec, x) + 0.2 * F.l1_loss(rec, x) + 0.1 * result.quantizer.loss.float()
        if args.mean_weight:
            loss = loss + args.mean_weight * channel_mean_error(rec, x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.decay = min(args.ema, (1 + step) / (10 + step))
        ema.update(model)
        state["step"] = step = step + 1
        if step % 50 == 0:
            lr, used = opt.param_groups[0]["lr"], int(result.quantizer.used_codes)
            emit({"step": step, "loss": round(loss.detach().item(), 5), "lr": lr, "used_codes": used,
                  "seconds": round(time.time() - t0, 1)})  # fmt: skip
        last = step == state["total"] or time.time() >= deadline
        if step % args.val_every == 0 or last:
            eval_model.load_state_dict(ema.state_dict())
            scores = validate(eval_model, val, batch=8)
            score = selection_score(scores, args.select)
            better = score > state["best"] and ("floor" not in state or no_worse(scores, state["floor"]))
            if better:
                state["best"] = score
                save_best(model, ema, out / "best")
            seconds = round(time.time() - t0, 1)
            emit({"step": step, **scores, "score": score, "best": better, "seconds": seconds})
            if args.minutes and calibrated and time.time() - t0 < args.minutes * 30:  # re-plan
                per_step = (time.time() - t10) / (step - step0 - 10)  # validation time included
                state["total"] = step + int((deadline - time.time()) / per_step * 0.97)
        if step % args.checkpoint_every == 0 or last:
            run = {k: v for k, v in state.items() if k != "step"}
            saved = {"optimizer": to_cpu(opt.state_dict()), "synth_rng": synth.gen.get_state(),
                     "torch_rng": torch.get_rng_state(), "run": run}  # fmt: skip
            save_checkpoint(ckpt_dir, step, {"model": model.state_dict(), "ema": ema.state_dict()}, saved, 2)
    emit({"done": state["step"], "best_score": state["best"], "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()
