"""Whole-frame normalisation statistics for tiled inference.

Every GroupNorm of the tokenizer normalises each frame with statistics over the whole frame, and the
decoder's adaptive GroupNorm scales with statistics of the whole latent frame. A tile run on its own
would use its own statistics, which differ from tile to tile and from the whole frame's: seams and a
result that is not the untiled one. :class:`WholeFrameNorm` fixes that without holding a whole frame
of activations:

The statistics are gathered layer by layer, because a norm's input depends on every norm before it:

1. *record passes* (on copies of the causal caches): in pass ``k`` the first ``k`` norms (in call
   order) already have whole-frame statistics and use them; norm ``k+1`` adds the sum, sum of squares
   and count of its input over the positions each tile owns (its share of the token grid, scaled to
   the layer's resolution), and the pass stops there (:class:`StopPass`). After all tiles, those sums
   give norm ``k+1``'s whole-frame mean and variance per (group, frame). A pass in which every norm
   already has statistics ends the record passes.
2. *apply pass*: the tiles are run for real and every norm uses the whole-frame statistics.

So every statistic is computed from inputs that were themselves normalised exactly, and the tiled
result equals the untiled one up to the tiles' borders (zero padding instead of neighbours), which
the overlaps discard. Gathering statistics of all layers in one pass does not work: a layer's
recorded statistics would come from inputs normalised with the previous pass's statistics, and the
mismatch grows through the network (measured: ids with 54% of their bits right after one such pass,
61% after eight). The cost of tiling is one partial forward pass per norm layer plus the real pass;
memory stays that of one tile batch.

A module that runs more than once per step (the decoder inside a multi-stage feedback encoding, see
``TokenizerConfig.feedback_stages``) gets statistics per run: they are keyed by the module and how
many times it has run since the tile batch began (:meth:`WholeFrameNorm.begin`).

The hooks are installed as instance attributes on the model's norm modules for the duration of a
``with`` block and removed afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from magvit2.inference.tiling import Tile
from magvit2.modules.causal import CausalCache
from magvit2.modules.norm import AdaptiveGroupNorm, GroupNorm


class StopPass(Exception):
    """Raised inside a record pass once the layer being recorded has seen its input."""


def copy_cache(cache: CausalCache, modules: Iterable[nn.Module]) -> CausalCache:
    """A copy of ``cache`` (entries of ``modules``, and its scopes likewise) that a trial pass can
    advance without touching it.

    Cached values are replaced, never modified in place, by the modules, so a shallow copy suffices.
    """
    new = CausalCache()
    _copy_into(cache, new, list(modules))
    return new


def _copy_into(source: CausalCache, target: CausalCache, modules: list[nn.Module]) -> None:
    """Set ``target``'s entries (and scopes, recursively) of ``modules`` to ``source``'s."""
    for m in modules:
        if source.seen(m):
            target.set(m, source.get(m))
    for key, child in source.scopes():
        _copy_into(child, target.scope(key), modules)


def _add_sums(store: dict, key: nn.Module, s: Tensor, ss: Tensor, n: int) -> None:
    """Add one batch's sum, sum of squares and count to ``store[key]`` (created on first use)."""
    acc = store.get(key)
    if acc is None:
        store[key] = [s, ss, n]
    else:
        acc[0] += s
        acc[1] += ss
        acc[2] += n


class WholeFrameNorm:
    """Context manager that makes ``root``'s GroupNorms use statistics gathered over all tiles.

    Use: ``with WholeFrameNorm(model.decoder) as norm:`` then for each pass ``norm.start(record=...)``,
    and before each forward ``norm.begin([...])`` (the tiles stacked in that batch, in order).
    ``norm.latent_stats = (std, mean)`` ``(1, n, Z)`` replaces the adaptive norms' latent statistics;
    without it (a decoder run inside encoding, as a feedback model does) each adaptive norm's latent
    statistics are recorded over the whole token grid like a norm layer's.
    """

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.norms = [m for m in root.modules() if isinstance(m, GroupNorm)]
        self.adaptive = [m for m in root.modules() if isinstance(m, AdaptiveGroupNorm)]
        self.tiles: list[Tile] = []
        self.record = False
        # keys: (module, its run since the batch began): a module run twice per step gets two entries
        self.stats: dict[tuple[GroupNorm, int], tuple[Tensor, Tensor]] = {}
        self._acc: dict[tuple[GroupNorm, int], list[Tensor]] = {}
        self.latent_stats: tuple[Tensor, Tensor] | None = None
        self.recorded_latent: dict[tuple[AdaptiveGroupNorm, int], tuple[Tensor, Tensor]] = {}
        self._latent_acc: dict[tuple[AdaptiveGroupNorm, int], list[Tensor]] = {}
        self._runs: dict[nn.Module, int] = {}
        self._active: dict[AdaptiveGroupNorm, tuple[AdaptiveGroupNorm, int]] = {}

    # ------------------------------------------------------------------ install / remove
    def __enter__(self) -> WholeFrameNorm:
        for m in self.norms:
            m.forward = self._norm_forward(m)
        for a in self.adaptive:
            a.forward = self._adaptive_forward(a)
            a.gamma.forward = self._linear_forward(a, a.gamma, 0)
            a.beta.forward = self._linear_forward(a, a.beta, 1)
        return self

    def __exit__(self, *exc) -> None:
        linears = [*(a.gamma for a in self.adaptive), *(a.beta for a in self.adaptive)]
        for m in [*self.norms, *self.adaptive, *linears]:
            m.__dict__.pop("forward", None)

    def begin(self, tiles: list[Tile]) -> None:
        """Before each forward: the tiles stacked in its batch, in order; run counts start again."""
        self.tiles = tiles
        self._runs = {}

    def _key(self, m: nn.Module) -> tuple[nn.Module, int]:
        """``(m, how many times m ran before in this batch)``; counts this run."""
        run = self._runs.get(m, 0)
        self._runs[m] = run + 1
        return m, run

    def start(self, record: bool) -> None:
        """Begin a pass; in a record pass the first norm without statistics records and stops it."""
        self.record = record
        self._acc = {}
        self._latent_acc = {}

    def finish(self) -> bool:
        """End a record pass: turn its sums into means and (biased) variances (for latent statistics:
        standard deviations from the unbiased variance plus eps, as the adaptive norm computes them);
        False if it recorded nothing (every norm already had statistics)."""
        for key, (s, ss, n) in self._acc.items():
            mean = s / n
            self.stats[key] = (mean, (ss / n - mean * mean).clamp_min(0))
        for key, (s, ss, n) in self._latent_acc.items():
            mean = s / n
            var = ((ss - n * mean * mean) / (n - 1 if n > 1 else 1)).clamp_min(0)
            self.recorded_latent[key] = ((var + key[0].eps).sqrt()[None].float(), mean[None].float())
        return bool(self._acc) or bool(self._latent_acc)

    # ------------------------------------------------------------------ hooks
    def _linear_forward(self, a: AdaptiveGroupNorm, lin: nn.Linear, which: int):
        def forward(x: Tensor) -> Tensor:
            stats = self.latent_stats
            if stats is None:
                stats = self.recorded_latent.get(self._active.get(a))
            if stats is None:
                return nn.Linear.forward(lin, x)
            stat = stats[which].to(x)
            return nn.Linear.forward(lin, stat.expand(x.shape[0], *stat.shape[1:]))

        return forward

    def _adaptive_forward(self, a: AdaptiveGroupNorm):
        def forward(x: Tensor, q: Tensor, rate: int = 1, cache: CausalCache | None = None) -> Tensor:
            key = self._active[a] = self._key(a)  # the gamma/beta hooks look it up
            if self.record and self.latent_stats is None and key not in self.recorded_latent:
                self._accumulate_latent(key, q)
                raise StopPass
            return AdaptiveGroupNorm.forward(a, x, q, rate, cache)

        return forward

    def _accumulate_latent(self, key: tuple[AdaptiveGroupNorm, int], q: Tensor) -> None:
        """Add the owned token positions of ``q`` ``(B, Z, n, h, w)`` to per-(frame, channel) sums."""
        if len(self.tiles) != q.shape[0]:
            raise ValueError(f"WholeFrameNorm: {len(self.tiles)} tiles given for a batch of {q.shape[0]}")
        s = q.new_zeros(q.shape[2], q.shape[1], dtype=torch.float64)
        ss, n = torch.zeros_like(s), 0
        for i, tile in enumerate(self.tiles):
            (r0, r1), (c0, c1) = tile.own_rows, tile.own_cols
            part = q[i, :, :, r0 - tile.top : r1 - tile.top, c0 - tile.left : c1 - tile.left].double()
            s += part.sum(dim=(2, 3)).T  # (n, Z)
            ss += (part * part).sum(dim=(2, 3)).T
            n += part.shape[2] * part.shape[3]
        if key[0].time_pooled:
            s, ss, n = s.sum(0, keepdim=True), ss.sum(0, keepdim=True), n * q.shape[2]
        _add_sums(self._latent_acc, key, s, ss, n)

    def _norm_forward(self, m: GroupNorm):
        def forward(x: Tensor) -> Tensor:
            key = self._key(m)
            if key not in self.stats:
                if self.record:
                    self._accumulate(key, x)
                    raise StopPass
                return GroupNorm.forward(m, x)
            mean, var = self.stats[key]
            b, c, t, h, w = x.shape
            g = m.num_groups
            xg = x.reshape(b, g, c // g, t, h, w)
            if m.time_pooled:
                mean, var = mean[:, :1].expand(g, t), var[:, :1].expand(g, t)
            mean = mean.to(x)[None, :, None, :, None, None]
            inv = torch.rsqrt(var.to(x) + m.eps)[None, :, None, :, None, None]
            y = ((xg - mean) * inv).reshape(b, c, t, h, w)
            if m.weight is not None:
                y = y * m.weight[None, :, None, None, None] + m.bias[None, :, None, None, None]
            return y

        return forward

    def _accumulate(self, key: tuple[GroupNorm, int], x: Tensor) -> None:
        m = key[0]
        b, c, t, h, w = x.shape
        g = m.num_groups
        if len(self.tiles) != b:
            raise ValueError(f"WholeFrameNorm: {len(self.tiles)} tiles given for a batch of {b}")
        s = x.new_zeros(g, t, dtype=torch.float64)
        ss = x.new_zeros(g, t, dtype=torch.float64)
        n = 0
        for i, tile in enumerate(self.tiles):
            fh, fw = h // tile.size_h, w // tile.size_w  # layer pixels per latent position
            (r0, r1), (c0, c1) = tile.own_rows, tile.own_cols
            part = x[
                i,
                :,
                :,
                (r0 - tile.top) * fh : (r1 - tile.top) * fh,
                (c0 - tile.left) * fw : (c1 - tile.left) * fw,
            ]
            part = part.reshape(g, c // g, t, -1).double()
            s += part.sum(dim=(1, 3))
            ss += (part * part).sum(dim=(1, 3))
            n += part.shape[1] * part.shape[3]
        if m.time_pooled:
            s = s.sum(1, keepdim=True).expand(g, t).clone()
            ss = ss.sum(1, keepdim=True).expand(g, t).clone()
            n = n * t
        _add_sums(self._acc, key, s, ss, n)
