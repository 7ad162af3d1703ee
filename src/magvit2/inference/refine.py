"""Token refinement: search, per clip, for tokens that the decoder turns into a closer reconstruction.

The encoder predicts a latent in one pass; its quantized tokens are good but not the best the decoder
can use (the "amortisation gap" of learned compression: Campos et al. 2019, Yang et al. 2020). Here
the decoder is frozen and the latent ``u`` itself is optimised for a few steps with Adam::

    ids   = quantizer.codes_to_indices(u)                   # the tokens u stands for
    codes = quantizer.indices_to_codes(ids) + u - sg(u)     # straight-through: decoder sees real codes
    loss  = mean((decoder(codes) - video)^2)                 # over the real (unpadded) pixels and frames

starting from the encoder's latent. Every step decodes exactly the tokens it evaluates, so the tokens
with the lowest loss seen (the encoder's own among them) are returned: refinement never makes a clip
worse. The tokens are ordinary tokens of the same vocabulary; any decoder of the model reads them.
Cost: ``steps`` decoder forward + backward passes per clip (time chunk by time chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from magvit2.models import VideoTokenizer, latent_chunks, video_frames
from magvit2.modules.causal import CausalCache

#: Adam's step size on the latent: its first steps move every coordinate by about the step size, and
#: LFQ codes are +-1, so 0.2 overshoots where 0.1 gains at every step count.
DEFAULT_LR = 0.1


@dataclass(frozen=True)
class RefineOptions:
    """How hard to refine tokens.

    Attributes:
        steps: Adam steps on the latent (0: the encoder's tokens, unchanged).
        lr: Adam learning rate in latent units (LFQ codes are +-1).
    """

    steps: int = 0
    lr: float = DEFAULT_LR

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"refinement steps (--refine-steps) must be >= 0, got {self.steps}")
        if self.steps > 0 and not self.lr > 0:
            raise ValueError(f"refinement learning rate (--refine-lr) must be > 0, got {self.lr}")


def _masked_mse(rec: Tensor, target: Tensor, frames: int, height: int, width: int) -> Tensor:
    """Per-clip mean squared error ``(B,)`` over the first ``frames`` frames and the top-left
    ``height x width`` pixels of ``(B, 3, T, H, W)`` videos (the rest is padding)."""
    diff = rec[:, :, :frames, :height, :width].float() - target[:, :, :frames, :height, :width].float()
    return diff.pow(2).mean(dim=(1, 2, 3, 4))


def refine_ids(
    model: VideoTokenizer,
    latent: Tensor,
    target: Tensor,
    options: RefineOptions,
    cache: CausalCache | None = None,
    frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Refine the tokens of one time chunk.

    Args:
        model: a :class:`~magvit2.models.VideoTokenizer` (its weights are not changed).
        latent: encoder output ``(B, Z, n, h, w)`` for ``target``; the search starts there.
        target: the video the tokens should decode to, ``(B, 3, T, h*s, w*s)`` in [-1, 1].
        options: steps and learning rate.
        cache: the decoder's causal cache after the previous chunks (None: this is the first chunk).
            It is advanced past this chunk with the returned tokens, as a decode would.
        frames, height, width: the real frames / rows / columns of ``target`` (default: all); the
            loss ignores the padding beyond them.

    Returns:
        ``(ids, mse)``: token ids ``(B, n, h, w)`` and each clip's mean squared error ``(B,)`` (on
        [-1, 1] values) of their decoded chunk.
    """
    decoder, quantizer = model.decoder, model.quantizer
    dtype = model.reference_tensor().dtype
    frames = target.shape[2] if frames is None else frames
    height = target.shape[3] if height is None else height
    width = target.shape[4] if width is None else width
    target = target.to(dtype)
    start = cache if cache is not None else CausalCache()

    u = latent.detach().clone().float().requires_grad_(True)
    opt = torch.optim.Adam([u], lr=options.lr)
    with torch.no_grad():
        best_ids = quantizer.codes_to_indices(u)
    best_mse = torch.full((u.shape[0],), float("inf"), device=u.device)
    for step in range(options.steps + 1):
        with torch.no_grad():
            ids = quantizer.codes_to_indices(u)
            codes = quantizer.indices_to_codes(ids).float()
        last = step == options.steps
        with torch.set_grad_enabled(not last):
            straight_through = (codes + u - u.detach()).to(dtype)
            rec = decoder(straight_through, start.copy())
            mse = _masked_mse(rec, target, frames, height, width)
        better = mse.detach() < best_mse
        best_mse = torch.where(better, mse.detach(), best_mse)
        best_ids[better] = ids[better]
        if last or not mse.requires_grad:  # a decoder with no network: no gradient to follow
            break
        (grad,) = torch.autograd.grad(mse.sum(), u)
        u.grad = grad
        opt.step()
    if cache is not None:  # advance the caller's cache with the chosen tokens
        with torch.no_grad():  # not inference_mode: the next chunk's search differentiates through it
            decoder(quantizer.indices_to_codes(best_ids).to(dtype), cache)
    return best_ids, best_mse


def encode_refined(
    model: VideoTokenizer,
    video: Tensor,
    steps: int = 30,
    lr: float = DEFAULT_LR,
    max_chunk_frames: int | None = None,
) -> Tensor:
    """Token ids like ``model.encode(video)``, then searched for ``steps`` Adam steps for tokens that
    decode closer to ``video`` (never worse than the encoder's, same vocabulary). Costs ``steps``
    decoder forward + backward passes per chunk; the weights are not changed. ``max_chunk_frames`` as
    in :meth:`VideoTokenizer.encode` (each chunk is refined given the chosen tokens of the chunks
    before it). With a decoder that has no network (a fixed rule) there is no gradient to follow and
    the encoder's tokens come back as they are."""
    options = RefineOptions(steps, lr)
    x = video.unsqueeze(2) if video.ndim == 4 else video
    latent = model.encode_latent(x, max_chunk_frames)  # checks the video
    t = model.temporal_factor
    bounds = latent_chunks(latent.shape[2], t, max_chunk_frames)
    cache = CausalCache() if len(bounds) > 1 else None  # one chunk needs no cache
    x = x.to(latent.dtype)
    parts = [
        refine_ids(
            model, latent[:, :, a:b], x[:, :, video_frames(a, t) : video_frames(b, t)], options, cache
        )[0]
        for a, b in bounds
    ]
    return torch.cat(parts, dim=1)
