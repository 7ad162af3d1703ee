"""Training clips synthesised on the fly from still images and video frames, on any device.

:class:`ClipSynth` turns a :func:`magvit2.data.trainset.build_trainset` folder into an endless supply of
clips with the motion and changes ordinary footage has:

* camera motion over a photograph: pans, zooms, small rotations, hand-held shake, or none;
* objects (cut-out photographs, clip art) moving over the scene;
* consecutive frames of a cartoon (bigbuckbunny), at random scale and frame stride;
* flat colours, smooth ramps and fine textures as backgrounds;
* scene cuts, fades to and from black or white, brightness changes, colour and grey variants.

Every random choice comes from one CPU ``torch.Generator``, so the stream is reproducible from its
seed; the pixels are made on ``device``, so a GPU makes its own batches without a data-loader process
and without waiting for the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def load_folder(folder: Path, mode: str) -> list[Tensor]:
    """Every image in ``folder`` as a uint8 ``(C, H, W)`` tensor (``mode`` 'RGB' or 'RGBA')."""
    from PIL import Image

    images = []
    for path in sorted(folder.glob("*")):
        with Image.open(path) as im:
            images.append(torch.from_numpy(np.asarray(im.convert(mode)).copy()).permute(2, 0, 1))
    return images


@dataclass
class SynthConfig:
    """Shares of each kind of clip and the strength of motion.

    Attributes:
        p_video: share of clips cut from the video frames (the rest are built from scenes or flats).
        p_flat: share of clips on a flat colour, ramp or texture background.
        p_static: share of clips without camera motion.
        p_cut: share of clips with a scene cut at a random frame.
        p_fade: share of clips fading to or from black or white.
        p_brightness: share of clips with a brightness ramp.
        p_grey: share of clips made grey.
        max_stamps: up to this many moving objects per clip.
        speed: typical camera speed in output pixels per frame.
        scale_range: scene pixels per output pixel (below 1 enlarges the scene).
        p_pure: share of flat colours and ramp ends taken from the extremes (black, white, three greys
            and the six saturated colours) instead of uniformly from the RGB cube.
        ramp_span: ``(lo, hi)`` length of a ramp in output frame sides (a short ramp is steep and flat
            beyond its ends); ``None`` spans twice the frame side.
    """

    p_video: float = 0.3
    p_flat: float = 0.12
    p_static: float = 0.1
    p_cut: float = 0.1
    p_fade: float = 0.08
    p_brightness: float = 0.08
    p_grey: float = 0.05
    max_stamps: int = 2
    speed: float = 2.5
    scale_range: tuple[float, float] = (0.5, 1.6)
    p_pure: float = 0.0
    ramp_span: tuple[float, float] | None = None


#: Colours ``p_pure`` draws from, in [0, 1]: black, white, three greys, six saturated colours.
PURE_COLOURS = torch.tensor(
    [[0, 0, 0], [1, 1, 1], [0.25, 0.25, 0.25], [0.5, 0.5, 0.5], [0.75, 0.75, 0.75],
     [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]]
)  # fmt: skip


class ClipSynth:
    """Random clips ``(B, 3, T, S, S)`` in [-1, 1] from scenes, stamps and video frames.

    ``scenes``: uint8 ``(3, H, W)`` images; ``stamps``: uint8 ``(4, h, w)`` RGBA cut-outs; ``video``:
    uint8 ``(N, 3, H, W)`` consecutive frames (may be empty). All are moved to ``device`` once.
    """

    def __init__(
        self,
        scenes: list[Tensor],
        stamps: list[Tensor],
        video: Tensor | None,
        cfg: SynthConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        if not scenes:
            raise ValueError("ClipSynth: expected at least one scene image")
        self.cfg = cfg or SynthConfig()
        self.device = torch.device(device)
        self.scenes = [s.to(self.device) for s in scenes]
        self.stamps = [s.to(self.device) for s in stamps]
        self.video = video.to(self.device) if video is not None and len(video) else None
        self.gen = torch.Generator().manual_seed(seed)

    @classmethod
    def from_folder(cls, root: str | Path, split: str = "train", **kwargs) -> ClipSynth:
        """Load ``root/{scenes,stamps,video}/split`` (the layout ``build_trainset`` writes)."""
        root = Path(root)
        if not (root / "scenes" / split).is_dir():
            raise ValueError(f"{root}: expected a training set folder (magvit2 trainset) with scenes/{split}")
        stamps = load_folder(root / "stamps" / split, "RGBA") if (root / "stamps" / split).is_dir() else []
        frames = load_folder(root / "video" / split, "RGB") if (root / "video" / split).is_dir() else []
        video = torch.stack(frames) if frames else None
        return cls(load_folder(root / "scenes" / split, "RGB"), stamps, video, **kwargs)

    # ------------------------------------------------------------------ random numbers
    def _u(self, lo: float = 0.0, hi: float = 1.0, n: int = 1) -> Tensor:
        """``n`` uniform numbers in [lo, hi) (on the CPU)."""
        return lo + (hi - lo) * torch.rand(n, generator=self.gen)

    def _p(self, p: float) -> bool:
        return bool(self._u() < p)

    def _i(self, n: int) -> int:
        return int(torch.randint(n, (1,), generator=self.gen))

    def _on(self, t: Tensor) -> Tensor:
        return t.to(self.device, non_blocking=True)

    # ------------------------------------------------------------------ clips
    def batch(self, batch_size: int, frames: int, size: int) -> Tensor:
        """``batch_size`` clips ``(B, 3, frames, size, size)`` in [-1, 1] (float32)."""
        return torch.stack([self.clip(frames, size) for _ in range(batch_size)])

    def clip(self, frames: int, size: int) -> Tensor:
        """One clip ``(3, frames, size, size)`` in [-1, 1]."""
        c = self.cfg
        x = self._base(frames, size)
        if frames > 2 and self._p(c.p_cut):
            cut = 1 + self._i(frames - 1)
            x = torch.cat([x[:, :cut], self._base(frames, size)[:, cut:]], dim=1)
        x = self._colour(x)
        if frames > 1 and self._p(c.p_fade):
            x = self._fade(x)
        if frames > 1 and self._p(c.p_brightness):
            gain = torch.linspace(1.0, float(self._u(0.5, 1.5)), frames, device=self.device)
            x = x * gain[None, :, None, None]
        return (x.clamp(0, 1) * 2 - 1).float()

    def flat_batch(self, batch_size: int, frames: int, size: int) -> Tensor:
        """``batch_size`` clips ``(B, 3, frames, size, size)`` in [-1, 1], each one flat colour: a third
        uniform in the RGB cube, a third grey, a third with each channel pushed to 0 or 1 at even odds
        (the cube's corners, edges and faces: saturated colours)."""
        colours = torch.rand(batch_size, 3, generator=self.gen)
        kind = torch.randint(3, (batch_size,), generator=self.gen)
        grey = kind == 1
        colours[grey] = colours[grey, :1].expand(-1, 3)
        push = (kind == 2)[:, None] & (torch.rand(batch_size, 3, generator=self.gen) < 0.5)
        extreme = (torch.rand(batch_size, 3, generator=self.gen) < 0.5).float()
        colours = torch.where(push, extreme, colours)
        clips = self._on(colours * 2 - 1)[:, :, None, None, None]
        return clips.expand(-1, -1, frames, size, size).contiguous()

    def _base(self, frames: int, size: int) -> Tensor:
        """A clip in [0, 1] of one kind: video frames, or a scene or flat background with objects."""
        c = self.cfg
        r = float(self._u())
        if self.video is not None and r < c.p_video:
            x = self._video_clip(frames, size)
        elif r < c.p_video + c.p_flat:
            x = self._flat(frames, size)
        else:
            x = self._camera(self.scenes[self._i(len(self.scenes))].float() / 255, frames, size)
        for _ in range(self._i(c.max_stamps + 1) if self.stamps else 0):
            x = self._stamp(x)
        return x

    def _grid(self, frames: int, size: int, hw: tuple[int, int], scale: float, still: bool) -> Tensor:
        """Sampling grid ``(frames, size, size, 2)`` of a moving camera over an ``hw`` image."""
        c = self.cfg
        h, w = hw
        span = size * scale  # image pixels the output spans
        speed = 0.0 if still else c.speed * float(self._u(0, 2)) * scale
        angle = float(self._u(0, 2 * math.pi))
        t = torch.arange(frames, device=self.device, dtype=torch.float32)
        zoom = torch.exp(t * (0.0 if still else float(self._u(-0.012, 0.012))))
        rot = t * (0.0 if still else float(self._u(-0.006, 0.006)))
        travel = speed * (frames - 1)
        room_x, room_y = max(w - span - travel, 0.0), max(h - span - travel, 0.0)
        cx = (float(self._u()) * room_x + span / 2 + travel / 2) + (t - (frames - 1) / 2) * speed * math.cos(
            angle
        )
        cy = (float(self._u()) * room_y + span / 2 + travel / 2) + (t - (frames - 1) / 2) * speed * math.sin(
            angle
        )
        if not still and self._p(0.3):  # hand-held shake
            cx = cx + self._on(torch.randn(frames, generator=self.gen)) * 1.5 * scale
            cy = cy + self._on(torch.randn(frames, generator=self.gen)) * 1.5 * scale
        lin = (torch.arange(size, device=self.device, dtype=torch.float32) + 0.5) / size - 0.5
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        half = span * zoom[:, None, None]
        cos, sin = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
        px = cx[:, None, None] + half * (gx * cos - gy * sin)
        py = cy[:, None, None] + half * (gx * sin + gy * cos)
        return torch.stack([px / w * 2 - 1, py / h * 2 - 1], dim=-1)

    def _camera(self, image: Tensor, frames: int, size: int) -> Tensor:
        """A camera moving over ``image`` ``(3, H, W)`` in [0, 1] -> ``(3, frames, size, size)``."""
        lo, hi = self.cfg.scale_range
        hi = min(hi, min(image.shape[1:]) / size)  # the view stays inside the image
        scale = float(self._u(min(lo, hi), hi))
        grid = self._grid(frames, size, tuple(image.shape[1:]), scale, self._p(self.cfg.p_static))
        if scale > 1.3:  # shrink first so bilinear sampling does not alias
            image = F.interpolate(image[None], scale_factor=1 / scale, mode="area")[0]
        out = F.grid_sample(
            image[None].expand(frames, -1, -1, -1), grid, mode="bilinear", padding_mode="reflection",
            align_corners=False,
        )  # fmt: skip
        return out.transpose(0, 1)

    def _video_clip(self, frames: int, size: int) -> Tensor:
        """Consecutive video frames (stride 1 or 2) seen through a still or slowly moving window."""
        stride = 1 + self._i(2)
        n = self.video.shape[0]
        start = self._i(max(n - stride * (frames - 1), 1))
        idx = self._on((start + stride * torch.arange(frames)).clamp(max=n - 1))
        clip = self.video[idx].float() / 255  # (T, 3, H, W)
        lo, hi = self.cfg.scale_range
        hi = min(hi, min(clip.shape[2:]) / size)
        scale = float(self._u(min(lo, hi), hi))
        grid = self._grid(frames, size, tuple(clip.shape[2:]), scale, self._p(0.7))
        if scale > 1.3:
            clip = F.interpolate(clip, scale_factor=1 / scale, mode="area")
        out = F.grid_sample(clip, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return out.transpose(0, 1)

    def _flat_colour(self) -> Tensor:
        """A colour ``(3, 1, 1)`` in [0, 1]: uniform in the RGB cube, or one of :data:`PURE_COLOURS`."""
        if self.cfg.p_pure > 0 and self._p(self.cfg.p_pure):
            return self._on(PURE_COLOURS[self._i(len(PURE_COLOURS))])[:, None, None]
        return self._on(self._u(n=3))[:, None, None]

    def _ramp(self, size: int) -> Tensor:
        """Ramp weights ``(size * 2,)`` in [0, 1] across a ``size * 2`` image."""
        if self.cfg.ramp_span is None:
            return torch.linspace(0, 1, size * 2, device=self.device)
        length = float(self._u(*self.cfg.ramp_span)) * size
        start = float(self._u(0, max(size * 2 - 1 - length, 0.0)))
        return ((torch.arange(size * 2, device=self.device) - start) / length).clamp(0, 1)

    def _flat(self, frames: int, size: int) -> Tensor:
        """A flat colour, a ramp or a fine texture, still or moving ``(3, frames, size, size)``."""
        kind = self._i(3)
        colour = self._flat_colour()
        if kind == 0:
            image = colour.expand(3, size * 2, size * 2)
        elif kind == 1:
            other = self._flat_colour()
            ramp = self._ramp(size)
            ramp = ramp[None, :, None] if self._p(0.5) else ramp[None, None, :]
            image = colour + (other - colour) * ramp.expand(1, size * 2, size * 2)
        else:
            period = float(self._u(2, 12))
            yy, xx = torch.meshgrid(*(torch.arange(size * 2, device=self.device).float(),) * 2, indexing="ij")
            a = float(self._u(0, math.pi))
            wave = torch.sin((xx * math.cos(a) + yy * math.sin(a)) * 2 * math.pi / period)
            noise = self._on(torch.rand(1, size * 2, size * 2, generator=self.gen))
            texture = wave[None] * 0.5 + 0.5 if self._p(0.5) else noise
            image = colour * (1 - 0.5 * float(self._u())) + (texture - 0.5) * float(self._u(0.1, 0.6))
        return self._camera(image.clamp(0, 1), frames, size)

    def _stamp(self, x: Tensor) -> Tensor:
        """``x`` ``(3, T, S, S)`` with one cut-out object moving over it in a straight line."""
        _, frames, size, _ = x.shape
        stamp = self.stamps[self._i(len(self.stamps))].float() / 255
        h, w = stamp.shape[1:]
        extent = float(self._u(0.2, 0.8)) * size / max(h, w)  # output pixels per stamp pixel
        t = torch.arange(frames, device=self.device, dtype=torch.float32)
        x0, y0, vx, vy = (
            float(v) for v in (self._u(0, size), self._u(0, size), self._u(-3, 3), self._u(-3, 3))
        )
        lin = torch.arange(size, device=self.device, dtype=torch.float32) + 0.5
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        sx = (gx[None] - (x0 + vx * t)[:, None, None]) / (w * extent) * 2
        sy = (gy[None] - (y0 + vy * t)[:, None, None]) / (h * extent) * 2
        grid = torch.stack([sx, sy], dim=-1)
        rgba = F.grid_sample(
            stamp[None].expand(frames, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
            align_corners=False,
        ).transpose(0, 1)  # fmt: skip
        alpha = rgba[3:]
        return x * (1 - alpha) + rgba[:3] * alpha

    def _colour(self, x: Tensor) -> Tensor:
        """One colour change for the whole clip: gain per channel, saturation, sometimes grey."""
        if self._p(self.cfg.p_grey):
            grey = (x * torch.tensor([0.299, 0.587, 0.114], device=self.device)[:, None, None, None]).sum(0)
            return grey.expand_as(x)
        gain = self._on(1 + 0.1 * (self._u(n=3) - 0.5))
        sat = float(self._u(0.7, 1.3))
        mean = x.mean(0, keepdim=True)
        return (mean + (x - mean) * sat) * gain[:, None, None, None]

    def _fade(self, x: Tensor) -> Tensor:
        """A fade to (or from) black or white over part of the clip."""
        frames = x.shape[1]
        target = 1.0 if self._p(0.25) else 0.0
        a, b = sorted(int(v) for v in torch.randint(frames, (2,), generator=self.gen))
        w = torch.zeros(frames, device=self.device)
        w[b:] = 1.0
        if b > a:
            w[a:b] = torch.linspace(0, 1, b - a + 1, device=self.device)[:-1]
        if self._p(0.5):  # fade in instead of out
            w = w.flip(0)
        w = w[None, :, None, None]
        return x * (1 - w) + target * w
