"""``VideoLM``: a decoder-only transformer over a video's tokens, with a KV cache for sampling.

The sequence is ``[BOS (+ class), t_0, ..., t_{N-1}]``, tokens of whole latent frames in raster order
(:mod:`magvit2.lm.positions`); the hidden state at slot ``k`` predicts token ``t_k`` through the
(factorised) head of :mod:`magvit2.lm.vocab`.

The blocks are our own (pre-norm RMSNorm, attention through
``torch.nn.functional.scaled_dot_product_attention``, GELU MLP; about 60 lines): the ``transformers``
library is not a dependency of this package, its Llama would need our 3D rotary positions patched
into its attention and a cache adapter, and SDPA already picks the flash / memory-efficient kernels
on a GPU. Nothing else here depends on the backbone, so one could be swapped in behind
:meth:`VideoLM.hidden`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from magvit2.config_io import from_dict, to_dict
from magvit2.fileio import atomic_path
from magvit2.lm.config import LMConfig
from magvit2.lm.positions import AxialPositions, Rotary3D, sequence_positions
from magvit2.lm.vocab import TokenEmbedding, TokenHead

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
LM_FORMAT = "magvit2-lm"


@dataclass
class KVCache:
    """Keys and values of every block: ``keys[i]``, ``values[i]`` ``(B, heads, capacity, head_dim)``,
    allocated at the first write and filled in place; the first ``length`` slots are written."""

    keys: list[Tensor | None]
    values: list[Tensor | None]
    capacity: int
    length: int = 0

    @classmethod
    def empty(cls, depth: int, capacity: int) -> KVCache:
        """A cache for ``depth`` blocks and up to ``capacity`` slots."""
        return cls([None] * depth, [None] * depth, capacity)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new slots' keys and values ``(B, H, n, D)`` of block ``layer`` after the
        ``length`` cached ones -> all keys and values so far ``(B, H, length + n, D)``."""
        end = self.length + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache of {self.capacity} slots is full ({end} needed)")
        if self.keys[layer] is None:
            shape = (*k.shape[:2], self.capacity, k.shape[3])
            self.keys[layer], self.values[layer] = k.new_empty(shape), v.new_empty(shape)
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Attention(nn.Module):
    """Multi-head causal self-attention (SDPA), optionally rotary, optionally appending to a cache."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor] | None, cache: KVCache | None, layer: int
    ) -> Tensor:
        """x ``(B, n, dim)`` (the n newest slots) -> ``(B, n, dim)``."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        if rope is not None:
            q, k = Rotary3D.rotate(q, *rope), Rotary3D.rotate(k, *rope)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(layer, k, v)
        n = q.shape[2]
        mask = None
        if past and n > 1:  # new slots see all past slots and the new ones before them
            mask = torch.ones(n, past + n, dtype=torch.bool, device=x.device).tril(past)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=not past and n > 1,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm x), then x + mlp(norm x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor, rope, cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.attn(self.norm1(x), rope, cache, layer)
        return x + self.mlp(self.norm2(x))


class VideoLM(nn.Module):
    """Autoregressive transformer over token grids ``(B, T, h, w)``.

    Training: :meth:`log_prob` (exact log-likelihood of every token). Sampling: :meth:`hidden` with a
    :class:`KVCache` and the head's :meth:`~magvit2.lm.vocab.TokenHead.part_logits`
    (:mod:`magvit2.lm.sampling`).
    """

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        self.config = config = config.complete()
        d = config.dim
        self.embed = TokenEmbedding(config.vocabulary, d, config.split_tokens)
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        # class ids 0..C-1, and C = "no class" (classifier-free guidance)
        self.classes = nn.Embedding(config.num_classes + 1, d) if config.num_classes else None
        self.rope = Rotary3D(d // config.heads, config.rope_base) if config.positions == "rope" else None
        self.axial = (
            AxialPositions(d, config.max_frames, config.height, config.width)
            if config.positions == "axial"
            else None
        )
        self.blocks = nn.ModuleList(
            Block(d, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.depth)
        )
        self.norm = nn.RMSNorm(d)
        self.head = TokenHead(d, config.vocabulary, config.split_tokens)
        self.apply(_init_linear)

    # ---------------------------------------------------------------------------------------- inputs
    def start_slot(self, batch: int, classes: Tensor | None = None) -> Tensor:
        """The BOS slot ``(B, 1, dim)``: BOS plus the class embedding (``classes`` ``(B,)``; None or
        the id ``num_classes``: no class)."""
        x = self.bos.expand(batch, 1, -1)
        if self.classes is not None:
            if classes is None:
                classes = torch.full((batch,), self.config.num_classes, device=x.device)
            x = x + self.classes(classes)[:, None]
        elif classes is not None:
            raise ValueError("this LM is unconditional (model.num_classes = 0); give no class")
        return x

    def hidden(self, x: Tensor, positions: Tensor, cache: KVCache | None = None) -> Tensor:
        """Input slots ``(B, n, dim)`` at ``positions`` ``(n, 3)`` -> final hidden states ``(B, n, dim)``;
        with ``cache`` the slots continue the cached ones (which they attend to)."""
        rope = None
        if self.axial is not None:
            x = x + self.axial(positions)
        else:
            rope = self.rope.angles(positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, rope, cache, layer)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)

    def sequence_hidden(self, ids: Tensor, classes: Tensor | None = None) -> Tensor:
        """Teacher forcing: ids ``(B, T, h, w)`` -> the hidden state predicting each token
        ``(B, T*h*w, dim)``."""
        b, t, h, w = ids.shape
        self._check_grid(h, w)
        flat = rearrange(ids, "b t h w -> b (t h w)")
        x = torch.cat([self.start_slot(b, classes), self.embed(flat[:, :-1])], dim=1)
        return self.hidden(x, sequence_positions(t, h, w)[:-1].to(ids.device))

    def forward(self, ids: Tensor, classes: Tensor | None = None) -> Tensor:
        """:meth:`log_prob` (the training forward, so DDP sees it)."""
        return self.log_prob(ids, classes)

    def log_prob(self, ids: Tensor, classes: Tensor | None = None) -> Tensor:
        """Exact log-likelihood (nats) of every token: ids ``(B, T, h, w)`` -> ``(B, T, h, w)``."""
        h = self.sequence_hidden(ids, classes)
        return self.head.log_prob(h, rearrange(ids, "b t h w -> b (t h w)")).reshape(ids.shape)

    def _check_grid(self, h: int, w: int) -> None:
        if (h, w) != (self.config.height, self.config.width):
            raise ValueError(
                f"token grid {h}x{w} per latent frame; this LM was trained on "
                f"{self.config.height}x{self.config.width}"
            )

    # ---------------------------------------------------------------------------------------- files
    def save_pretrained(
        self, directory: str | Path, extra: dict[str, Any] | None = None, files: dict[str, dict] | None = None
    ) -> Path:
        """Write ``config.json`` (the :class:`LMConfig` and ``extra``: the tokenizer, its fingerprint,
        class names), ``model.safetensors`` and ``files`` (name -> tensors, as safetensors) into
        ``directory``, atomically."""
        directory = Path(directory)
        with atomic_path(directory, replace_dir=True) as tmp:
            tmp.mkdir(parents=True)
            meta = {"format": LM_FORMAT, "model": to_dict(self.config), **(extra or {})}
            (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                str(tmp / WEIGHTS_NAME),
            )
            for name, tensors in (files or {}).items():
                save_file(tensors, str(tmp / name))
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu"
    ) -> tuple[VideoLM, dict]:
        """Load an LM folder -> (model in eval mode, the folder's ``config.json`` as a dict); a folder
        of ``model.kind: masked`` gives a :class:`~magvit2.lm.masked.MaskedVideoLM`."""
        directory = Path(directory)
        path = directory / CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory}: not an LM folder (expected {CONFIG_NAME} written by magvit2 lm train)"
            )
        try:
            meta = json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        if meta.get("format") != LM_FORMAT:
            raise ValueError(
                f"{path}: not an LM config (format {meta.get('format')!r}, expected {LM_FORMAT!r})"
            )
        config = from_dict(LMConfig, meta["model"], where=str(path))
        if cls is VideoLM and config.kind == "masked":
            from magvit2.lm.masked import MaskedVideoLM

            cls = MaskedVideoLM
        model = cls(config)
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model.to(device).eval(), meta


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
