"""Sampling from a :class:`~magvit2.lm.transformer.VideoLM`: temperature, top-k, top-p and
classifier-free guidance applied to each sub-token in turn, a KV cache, and Loong's sliding window
with video-token re-encoding for videos longer than the trained window.

Every draw takes a ``torch.Generator``: the same seed gives the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from magvit2.lm.positions import sequence_positions
from magvit2.lm.transformer import KVCache, VideoLM


@dataclass(frozen=True)
class SamplingOptions:
    """How each sub-token is drawn.

    Attributes:
        temperature: logits / temperature before the softmax; 0 draws the most likely (greedy).
        top_k: keep only the k most likely (0: all).
        top_p: keep the smallest set whose probability reaches p (1: all).
        cfg: classifier-free guidance weight w: logits = uncond + w * (cond - uncond) (1: plain
            conditional sampling; class-conditional models only).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or self.cfg < 0:
            raise ValueError(
                "sampling: need --temperature >= 0, --top-k >= 0, 0 < --top-p <= 1, --cfg >= 0; "
                f"got {self.temperature}, {self.top_k}, {self.top_p}, {self.cfg}"
            )


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """logits ``(B, V)`` with everything outside the top-k and the top-p nucleus set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # the mass before a token already reaches p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def draw(
    logits: Tensor,
    options: SamplingOptions,
    generator: torch.Generator | None,
    temperature: float | None = None,
) -> Tensor:
    """One id per row of logits ``(B, V)`` -> ``(B,)``, at ``temperature`` (default ``options``')."""
    temperature = options.temperature if temperature is None else temperature
    if temperature == 0:
        return logits.argmax(-1)
    logits = filter_logits(logits.float() / temperature, options.top_k, options.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def draw_token(
    model: VideoLM,
    h: Tensor,
    options: SamplingOptions,
    generator: torch.Generator | None,
    guided: bool,
    temperature: float | None = None,
    confidence: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Hidden states ``(B, dim)`` (``(2B, dim)`` when ``guided``: conditional rows then "no class"
    rows) -> (ids ``(B,)``, drawn one sub-token at a time; with ``confidence`` their log-probability
    ``(B,)`` under the guided distribution at temperature 1, else None). ``options`` needs
    ``temperature``, ``top_k``, ``top_p`` and ``cfg``; ``temperature`` overrides its temperature."""
    head, parts, conf = model.head, [], None
    for i in range(head.num_parts):
        previous = [torch.cat([p, p]) for p in parts] if guided else parts
        logits = head.part_logits(h, previous, i).float()
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + options.cfg * (cond - uncond)
        part = draw(logits, options, generator, temperature)
        if confidence:
            logp = torch.gather(F.log_softmax(logits, -1), -1, part[:, None])[:, 0]
            conf = logp if conf is None else conf + logp
        parts.append(part)
    return head.join(parts), conf


@torch.no_grad()
def sample(
    model: VideoLM,
    frames: int,
    prompt: Tensor | None = None,
    classes: Tensor | None = None,
    options: SamplingOptions = SamplingOptions(),
    generator: torch.Generator | None = None,
    batch: int = 1,
    use_cache: bool = True,
) -> Tensor:
    """Token grids ``(B, frames, h, w)``: the prompt's latent frames ``(B, P, h, w)`` (if any), then
    sampled ones. ``use_cache=False`` recomputes the whole sequence for every token (benchmarks)."""
    cfg = model.config
    h, w = cfg.height, cfg.width
    device = next(model.parameters()).device
    b = prompt.shape[0] if prompt is not None else (classes.shape[0] if classes is not None else batch)
    known = prompt.shape[1] * h * w if prompt is not None else 0
    total = frames * h * w
    if known > total:
        raise ValueError(f"the prompt has {prompt.shape[1]} latent frames, more than the {frames} asked for")
    guided = classes is not None and options.cfg != 1.0
    if guided:
        classes = torch.cat([classes, torch.full_like(classes, cfg.num_classes)])
    reps = 2 if guided else 1
    positions = sequence_positions(frames, h, w).to(device)
    tokens = torch.zeros(b, total, dtype=torch.long, device=device)
    if prompt is not None:
        tokens[:, :known] = rearrange(prompt.to(device), "b t h w -> b (t h w)")
    start = model.start_slot(b * reps, classes)
    cache = KVCache.empty(cfg.depth, total + 1) if use_cache else None
    x = torch.cat([start, model.embed(tokens[:, :known].repeat(reps, 1))], dim=1)
    hidden = model.hidden(x, positions[: known + 1], cache)[:, -1]
    for k in range(known, total):
        tokens[:, k] = draw_token(model, hidden, options, generator, guided)[0]
        if k + 1 == total:
            break
        if use_cache:
            x = model.embed(tokens[:, k : k + 1].repeat(reps, 1))
            hidden = model.hidden(x, positions[k + 1 : k + 2], cache)[:, -1]
        else:
            x = torch.cat([start, model.embed(tokens[:, : k + 1].repeat(reps, 1))], dim=1)
            hidden = model.hidden(x, positions[: k + 2])[:, -1]
    return rearrange(tokens, "b (t h w) -> b t h w", h=h, w=w)


def sample_long(
    model: VideoLM,
    frames: int,
    window: int,
    context: int,
    encode: Callable[[Tensor], Tensor],
    decode: Callable[[Tensor], Tensor],
    temporal_factor: int,
    prompt: Tensor | None = None,
    classes: Tensor | None = None,
    options: SamplingOptions = SamplingOptions(),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Generate ``frames`` latent frames with windows of ``window`` (Loong): after each window the
    last ``context`` latent frames are decoded to pixels and re-encoded from those pixels (as a clip
    starting there), and sampling continues from them in a fresh window.

    ``encode``: video ``(B, 3, 1 + t*(n-1), H, W)`` -> ids ``(B, n, h, w)``; ``decode``: the inverse.
    Returns (video ``(B, 3, 1 + t*(frames-1), H, W)``, ids ``(B, frames, h, w)``: each window's new
    latent frames as sampled; within one window they decode exactly to its pixels).
    """
    if not 1 <= context < window:
        raise ValueError(f"sliding window: need 1 <= context ({context}) < window ({window})")
    if prompt is not None and prompt.shape[1] >= min(frames, window):
        raise ValueError(
            f"the prompt has {prompt.shape[1]} latent frames; the window ({window}) and the length asked "
            f"for ({frames}) must be longer"
        )
    first = min(frames, window)
    ids = sample(model, first, prompt[:, :first] if prompt is not None else None, classes, options, generator)
    video, pieces = decode(ids), [ids]
    done = first
    while done < frames:
        tail = video[:, :, -(1 + temporal_factor * (context - 1)) :]
        ctx_ids = encode(tail)
        new = min(window - context, frames - done)
        out = sample(model, context + new, ctx_ids, classes, options, generator)
        video = torch.cat([video, decode(out)[:, :, -temporal_factor * new :]], dim=2)
        pieces.append(out[:, context:])
        done += new
    return video, torch.cat(pieces, dim=1)
