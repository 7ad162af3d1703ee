"""``MaskedVideoLM``: a bidirectional masked transformer over video tokens (MAGVIT / MaskGIT), with
COMMIT-style conditional tasks (:mod:`magvit2.lm.tasks`) and iterative parallel decoding.

It shares the autoregressive model's parts (:class:`~magvit2.lm.transformer.VideoLM`): the
(factorised) token embedding and heads, BOS + class slot, 3D positions, blocks and files; the
attention is bidirectional, a learned ``[MASK]`` embedding stands for the tokens to predict and a task
embedding joins the BOS slot.

* **Training** (:func:`schedule_mask`): per window, a task says which tokens are given; of the
  others a share ``cos(pi/2 * r)``, ``r ~ U(0, 1)``, is masked (at least one) and the loss is the
  negative log-likelihood of the masked tokens.
* **Decoding** (:func:`decode`): all tokens to generate start masked; each of N steps predicts every
  masked token at once, keeps the most confident (MaskGIT: probability plus Gumbel noise annealed to
  0) and re-masks the rest, so that ``n * cos(pi/2 * (s+1)/N)`` stay masked after step ``s``. The
  sampling temperature anneals linearly from ``temperature`` to ``temperature / N``; classes are
  guided (CFG) on every sub-token. Given tokens never change.
* **Scoring** (:meth:`MaskedVideoLM.log_prob`): the tokens are revealed in a random N-step order
  (seeded); each group is scored given the groups before it, its tokens independently. That is the
  exact log-likelihood of this decoding scheme, so its bits per token compare with the AR model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from magvit2.lm.config import LMConfig
from magvit2.lm.positions import Rotary3D, sequence_positions
from magvit2.lm.sampling import draw_token
from magvit2.lm.tasks import TASKS, parse_region, task_mask
from magvit2.lm.transformer import Attention, VideoLM, _init_linear


class FullAttention(Attention):
    """Multi-head bidirectional self-attention (SDPA, no mask), optionally rotary."""

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor] | None, cache=None, layer: int = 0) -> Tensor:
        """x ``(B, n, dim)`` -> ``(B, n, dim)``; every slot sees every slot."""
        if cache is not None:
            raise ValueError("a masked model attends both ways: it has no KV cache")
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if rope is not None:
            q, k = Rotary3D.rotate(q, *rope), Rotary3D.rotate(k, *rope)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class MaskedVideoLM(VideoLM):
    """Bidirectional masked transformer over token grids ``(B, T, h, w)``.

    Training: :meth:`forward` (log-likelihood of the masked tokens). Generation: :func:`decode`.
    Scoring: :meth:`log_prob`.
    """

    #: steps of the unmasking order :meth:`log_prob` scores in (``lm eval --steps`` sets it)
    score_steps: int = 12

    def __init__(self, config: LMConfig) -> None:
        super().__init__(config)
        d, c = self.config.dim, self.config
        for block in self.blocks:
            block.attn = FullAttention(d, c.heads, c.dropout)
        self.mask_token = nn.Parameter(torch.randn(d) * 0.02)
        self.tasks = nn.Embedding(len(TASKS), d)
        nn.init.normal_(self.tasks.weight, std=0.02)
        for block in self.blocks:
            block.attn.apply(_init_linear)

    def masked_hidden(self, ids: Tensor, masked: Tensor, classes: Tensor | None, tasks: Tensor) -> Tensor:
        """ids, masked ``(B, T, h, w)`` (masked slots get ``[MASK]``), classes and task indices ``(B,)``
        -> hidden states of the tokens ``(B, T*h*w, dim)``."""
        b, t, h, w = ids.shape
        self._check_grid(h, w)
        flat, m = rearrange(ids, "b t h w -> b (t h w)"), rearrange(masked, "b t h w -> b (t h w) 1")
        x = self.embed(flat)
        x = torch.where(m, self.mask_token.to(x.dtype), x)
        start = self.start_slot(b, classes) + self.tasks(tasks)[:, None]
        x = torch.cat([start.to(x.dtype), x], dim=1)
        return self.hidden(x, sequence_positions(t, h, w).to(ids.device))[:, 1:]

    def forward(self, ids: Tensor, masked: Tensor, classes: Tensor | None, tasks: Tensor) -> Tensor:
        """Training: log-likelihood (nats) of the masked tokens ``(B, T, h, w)`` (0 where not masked)."""
        hid = self.masked_hidden(ids, masked, classes, tasks)
        flat = rearrange(masked, "b t h w -> b (t h w)")
        out = torch.zeros(flat.shape, dtype=torch.float32, device=ids.device)
        out[flat] = self.head.log_prob(hid[flat], rearrange(ids, "b t h w -> b (t h w)")[flat]).float()
        return out.reshape(ids.shape)

    def log_prob(self, ids: Tensor, classes: Tensor | None = None, steps: int | None = None) -> Tensor:
        """Log-likelihood (nats) of every token ``(B, T, h, w)`` in a random ``steps``-step unmasking
        order (seed 0, nothing given): the tokens revealed at step ``s`` are scored given those before."""
        steps = steps or self.score_steps
        b = ids.shape[0]
        generator = torch.Generator().manual_seed(0)
        masked = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        ranks = random_ranks(masked.cpu(), generator).to(ids.device)
        counts = mask_counts(masked.flatten(1).sum(1), steps)
        tasks = torch.full((b,), TASKS.index("class"), device=ids.device)
        out = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
        for s in range(steps):
            hid = self.masked_hidden(ids, masked, classes, tasks).reshape(*ids.shape, -1)
            reveal = masked & (ranks >= counts[s].view(-1, 1, 1, 1))
            out[reveal] = self.head.log_prob(hid[reveal], ids[reveal]).float()
            masked = masked & ~reveal
        return out


def build_lm(config: LMConfig) -> VideoLM:
    """The model ``config.kind`` names: :class:`VideoLM` (``ar``) or :class:`MaskedVideoLM`."""
    return MaskedVideoLM(config) if config.kind == "masked" else VideoLM(config)


# ---------------------------------------------------------------------------------------------- schedule


def cosine_share(r: Tensor) -> Tensor:
    """MaskGIT's cosine schedule: share of tokens masked at progress ``r`` in [0, 1] -> ``cos(pi/2 r)``."""
    return torch.cos(math.pi / 2 * r)


def random_ranks(candidates: Tensor, generator: torch.Generator) -> Tensor:
    """A random order of each sample's candidate tokens: bool ``(B, ...)`` -> int64 ranks ``(B, ...)``,
    ``0 .. n-1`` over the candidates (in random order) and ``>= n`` elsewhere."""
    flat = candidates.flatten(1)
    scores = torch.rand(flat.shape, generator=generator) + (~flat).float() * 2
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks.reshape(candidates.shape)


def schedule_mask(given: Tensor, generator: torch.Generator) -> Tensor:
    """Training masks: given bool ``(B, T, h, w)`` -> masked ``(B, T, h, w)``: of each window's
    tokens not given, ``ceil(cos(pi/2 * r) * n)`` (at least 1, ``r ~ U(0, 1)``) chosen at random."""
    targets = ~given
    n = targets.flatten(1).sum(1)
    r = torch.rand(n.shape, generator=generator)
    count = torch.ceil(cosine_share(r) * n).long().clamp(min=1).minimum(n)
    ranks = random_ranks(targets, generator)
    return targets & (ranks < count.view(-1, *[1] * (given.ndim - 1)))


def mask_counts(n: Tensor, steps: int) -> list[Tensor]:
    """Tokens still masked after each decoding step: ``n`` ``(B,)`` -> ``steps`` tensors ``(B,)``,
    ``floor(n * cos(pi/2 * (s+1)/steps))``, at least one fewer each step while any are left, 0 at the end."""
    out, previous = [], n
    for s in range(steps):
        m = torch.floor(n.double() * math.cos(math.pi / 2 * (s + 1) / steps)).long()
        m = torch.minimum(m, (previous - 1).clamp(min=0))
        out.append(m if s < steps - 1 else torch.zeros_like(n))
        previous = out[-1]
    return out


# ---------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class DecodeOptions:
    """MaskGIT decoding.

    Attributes:
        steps: model calls per clip (each predicts all masked tokens at once).
        temperature: sampling temperature of the first step, annealed linearly to ``temperature /
            steps`` at the last (0: greedy throughout).
        top_k, top_p: filters on each sub-token's distribution (0 / 1: off).
        cfg: classifier-free guidance weight on each sub-token (1: off; class-conditional models).
        choice_temperature: scale of the Gumbel noise added to the log-confidence when choosing the
            tokens to keep, annealed linearly to 0 at the last step (MaskGIT: 4.5).
    """

    steps: int = 12
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    cfg: float = 1.0
    choice_temperature: float = 4.5

    def __post_init__(self) -> None:
        if self.steps < 1 or self.temperature < 0 or self.choice_temperature < 0:
            raise ValueError(
                f"decoding: need --steps >= 1, --temperature >= 0, choice temperature >= 0; got "
                f"{self.steps}, {self.temperature}, {self.choice_temperature}"
            )
        if self.top_k < 0 or not 0 < self.top_p <= 1 or self.cfg < 0:
            raise ValueError(
                f"decoding: need --top-k >= 0, 0 < --top-p <= 1, --cfg >= 0; got {self.top_k}, "
                f"{self.top_p}, {self.cfg}"
            )


def gumbel(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard Gumbel noise ``shape``."""
    u = torch.rand(shape, generator=generator, device=device).clamp(1e-20, 1.0)
    return -torch.log((-torch.log(u)).clamp(min=1e-20))


@torch.no_grad()
def decode(
    model: MaskedVideoLM,
    ids: Tensor,
    given: Tensor,
    task: str,
    classes: Tensor | None = None,
    options: DecodeOptions = DecodeOptions(),
    generator: torch.Generator | None = None,
) -> Tensor:
    """MaskGIT decoding: ids ``(B, T, h, w)`` (only the given ones are read), given bool ``(B, T, h, w)``
    -> ids ``(B, T, h, w)`` with every given token unchanged, in ``options.steps`` model calls."""
    device = ids.device
    b = ids.shape[0]
    given = given.to(device)
    tokens = torch.where(given, ids, torch.zeros_like(ids))
    masked = ~given
    guided = classes is not None and options.cfg != 1.0
    tasks = torch.full((b,), TASKS.index(task), device=device)
    if guided:
        classes = torch.cat([classes, torch.full_like(classes, model.config.num_classes)])
        tasks = tasks.repeat(2)
    reps = 2 if guided else 1
    counts = mask_counts(masked.flatten(1).sum(1), options.steps)
    for s in range(options.steps):
        if not masked.any():
            break
        hid = model.masked_hidden(tokens.repeat(reps, 1, 1, 1), masked.repeat(reps, 1, 1, 1), classes, tasks)
        hid = hid.reshape(reps, *ids.shape, -1)
        h_masked = torch.cat([hid[r][masked] for r in range(reps)])
        temperature = options.temperature * (1 - s / options.steps)
        drawn, conf = draw_token(model, h_masked, options, generator, guided, temperature, confidence=True)
        noise = options.choice_temperature * (1 - (s + 1) / options.steps)
        if noise > 0:
            conf = conf + noise * gumbel(conf.shape, generator, device)
        still = remask(masked, conf, counts[s])
        proposal = tokens.clone()
        proposal[masked] = drawn
        tokens = torch.where(masked & ~still, proposal, tokens)
        masked = still
    return tokens


def remask(masked: Tensor, confidence: Tensor, count: Tensor) -> Tensor:
    """The tokens that stay masked: masked bool ``(B, T, h, w)``, the masked tokens' confidences
    ``(M,)`` (in ``masked``'s order), ``count`` ``(B,)`` -> bool ``(B, T, h, w)``: each window's
    ``count`` least confident masked tokens."""
    score = torch.full(masked.shape, math.inf, device=masked.device)
    score[masked] = confidence
    order = score.flatten(1).argsort(dim=1).argsort(dim=1).reshape(masked.shape)
    return masked & (order < count.to(masked.device).view(-1, 1, 1, 1))


# ---------------------------------------------------------------------------------------------- pixels


def _check_length(lm, frames: int) -> None:
    """A masked model decodes a whole clip at once: at most its trained window."""
    limit = lm.model.config.max_frames
    if frames > limit:
        raise ValueError(
            f"{lm.directory}: a masked LM generates up to {limit} latent frames at once (its trained "
            f"window), asked for {frames}; ask for fewer --frames"
        )


def generate_task(
    lm, ids: Tensor, given: Tensor, task: str, classes: Tensor | None, options: DecodeOptions, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Decode a task with the masked LM of ``lm`` (a :class:`~magvit2.lm.pipeline.LoadedLM`): ids and
    given ``(1, T, h, w)`` -> (video ``(1, 3, 1 + t*(T-1), H, W)``, ids ``(1, T, h, w)``)."""
    _check_length(lm, ids.shape[1])
    device = next(lm.model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    classes = classes.to(device) if classes is not None else None
    out = decode(lm.model, ids.to(device), given.to(device), task, classes, options, generator)
    return lm.decode(out), out


def generate_prompted(lm, frames: int, prompt: Tensor | None, classes: Tensor | None, sampling, seed: int,
                      steps: int) -> tuple[Tensor, Tensor]:  # fmt: skip
    """The AR pipeline's call (:func:`magvit2.lm.pipeline.generate`) for a masked LM: frame prediction
    from ``prompt`` ``(1, P, h, w)``, or class-conditional generation without one -> (video, ids)."""
    c = lm.model.config
    options = DecodeOptions(steps, sampling.temperature, sampling.top_k, sampling.top_p, sampling.cfg)
    ids = torch.zeros(1, frames, c.height, c.width, dtype=torch.long)
    if prompt is None:
        return generate_task(lm, ids, task_mask("class", frames, c.height, c.width)[None], "class",
                             classes, options, seed)  # fmt: skip
    ids[:, : prompt.shape[1]] = prompt.cpu()
    given = task_mask("predict", frames, c.height, c.width, prompt=prompt.shape[1])[None]
    return generate_task(lm, ids, given, "predict", classes, options, seed)


def task_inputs(
    lm, task: str, frames: int, clip: str | None, prompt_frames: int | None = None,
    end_frames: int | None = None, region: str | None = None,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """A task's condition from a clip (scaled and centre-cropped to the LM's size) -> (ids, given,
    each ``(1, frames, h, w)``). predict encodes the first ``prompt_frames`` video frames (whole latent
    frames); the other tasks encode ``1 + t*(frames-1)`` frames and keep the given tokens: interpolate
    the first ``prompt_frames`` (default 1) and the last ``end_frames`` (default ``t``: one latent
    frame) video frames, outpaint / inpaint the ``region`` ``Y,X,H,W`` in pixels (default the centre
    half of each side)."""
    from magvit2.data.video_io import to_tensor
    from magvit2.lm.pipeline import prompt_ids, read_clip, whole_latent_frames
    from magvit2.models import video_frames

    c, t = lm.model.config, lm.t
    ids = torch.zeros(1, frames, c.height, c.width, dtype=torch.long)
    if (clip is None) != (task == "class"):
        need = "give no --prompt" if task == "class" else "needs --prompt CLIP"
        raise ValueError(f"--task {task}: {need}")
    if task == "class":
        return ids, task_mask(task, frames, c.height, c.width)[None]
    if task == "predict":
        if prompt_frames is None:
            raise ValueError("--task predict needs --prompt-frames")
        prompt, _ = prompt_ids(lm, clip, prompt_frames)
        ids[:, : prompt.shape[1]] = prompt.cpu()[:, :frames]
        return ids, task_mask(task, frames, c.height, c.width, prompt=prompt.shape[1])[None]
    need = video_frames(frames, t)
    pixels = read_clip(clip, need, *lm.pixel_size)
    if len(pixels) < need:
        raise ValueError(f"{clip}: {len(pixels)} frames, --task {task} of --frames {need} needs {need}")
    ids = lm.encode(to_tensor(pixels)[None]).cpu()
    box = parse_region(region, *lm.pixel_size, lm.tokenizer.spatial_factor) if region else None
    prompt = whole_latent_frames(prompt_frames or 1, t)
    end = -(-(end_frames or t) // t)
    return ids, task_mask(task, frames, c.height, c.width, prompt=prompt, end=end, box=box)[None]
