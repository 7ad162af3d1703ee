"""Tests of the per-clip colour augmentation magvit2.data.augment and its use by the data pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from magvit2.data import DataConfig, MediaIndex
from magvit2.data.augment import ColorChange, apply_color_change, hue_rotation, sample_color_change
from magvit2.data.video_io import write_video


def _clip(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 4, 6, 5, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_no_change_is_identity_and_a_third_turn_permutes_channels():
    x = _clip()
    assert torch.allclose(apply_color_change(x, ColorChange()), x, atol=1e-6)
    # red content moves to green, green to blue, blue to red; exact up to float rounding
    assert torch.allclose(apply_color_change(x, ColorChange(hue=1 / 3)), x.roll(1, 0), atol=1e-5)
    assert torch.allclose(apply_color_change(x, ColorChange(hue=-1 / 3)), x.roll(-1, 0), atol=1e-5)
    assert torch.allclose(hue_rotation(0.1) @ hue_rotation(-0.1), torch.eye(3), atol=1e-6)


def test_factors_match_the_colorjitter_formulas():
    """Each factor against the formula written out in float64 (values kept away from the clamp)."""
    x = _clip(1) * 0.3
    x01 = ((x.double() + 1) / 2).numpy()
    luma = np.array([0.299, 0.587, 0.114]).reshape(3, 1, 1, 1)

    def to_unit(v):
        return torch.from_numpy(np.clip(v, 0, 1) * 2 - 1).float()

    got = apply_color_change(x, ColorChange(brightness=1.4))
    assert torch.allclose(got, to_unit(x01 * 1.4), atol=1e-5)
    grey_mean = (x01 * luma).sum(0).mean()
    got = apply_color_change(x, ColorChange(contrast=0.6))
    assert torch.allclose(got, to_unit((x01 - grey_mean) * 0.6 + grey_mean), atol=1e-5)
    grey = (x01 * luma).sum(0, keepdims=True)
    got = apply_color_change(x, ColorChange(saturation=1.7))
    assert torch.allclose(got, to_unit(grey + (x01 - grey) * 1.7), atol=1e-5)
    got = apply_color_change(x, ColorChange(saturation=0.0))  # grey: three equal channels
    assert torch.allclose(got, to_unit(np.repeat(grey, 3, 0)), atol=1e-5)


def test_hue_keeps_grey_and_the_distance_from_grey():
    x = _clip(2) * 0.4
    y = apply_color_change(x, ColorChange(hue=0.17))
    assert torch.allclose(y.mean(0), x.mean(0), atol=1e-5)  # the grey-axis component
    chroma = lambda v: (v - v.mean(0, keepdim=True)).norm(dim=0)  # noqa: E731
    assert torch.allclose(chroma(y), chroma(x), atol=1e-5)
    assert not torch.allclose(y, x, atol=1e-2)
    flat = torch.full((3, 2, 3, 3), 0.25)
    assert torch.allclose(apply_color_change(flat, ColorChange(hue=0.3, saturation=1.8)), flat, atol=1e-5)


def test_sampled_factors_stay_in_their_ranges():
    rng = np.random.default_rng(0)
    changes = [sample_color_change(rng, [0.2, 0.3, 0.5, 0.25]) for _ in range(400)]
    b, c, s, h = (
        np.array([getattr(ch, k) for ch in changes]) for k in ("brightness", "contrast", "saturation", "hue")
    )
    for values, lo, hi in ((b, 0.8, 1.2), (c, 0.7, 1.3), (s, 0.5, 1.5), (h, -0.25, 0.25)):
        assert values.min() >= lo and values.max() <= hi
        assert values.min() < lo + 0.05 and values.max() > hi - 0.05  # the whole range is used


def test_clips_get_one_colour_change_each(tmp_path):
    """A jittered sample is the unjittered sample with the change drawn after the crop/flip draws,
    the same change on every frame; different clips get different changes."""
    rng = np.random.default_rng(0)
    frames = rng.integers(30, 220, (9, 24, 24, 3), dtype=np.uint8)
    write_video(tmp_path / "v.mp4", frames, fps=25, lossless=True)
    kw = dict(paths=[str(tmp_path)], num_frames=5, resolution=16, hflip=True, cache_decoded=True)
    plain, jittered = (
        MediaIndex(DataConfig(**kw)),
        MediaIndex(DataConfig(**kw, color_jitter=[0.3, 0.3, 0.5, 0.5])),
    )
    item = plain.video_items[0]
    samples = []
    for seed in range(3):
        got = jittered.sample(item, 5, np.random.default_rng(seed))
        base_rng = np.random.default_rng(seed)
        base = plain.sample(item, 5, base_rng)
        want = apply_color_change(base, sample_color_change(base_rng, [0.3, 0.3, 0.5, 0.5]))
        assert torch.equal(got, want)
        assert not torch.allclose(got, base, atol=0.05)
        samples.append(got)
    assert not torch.allclose(samples[0], samples[1], atol=0.05)


@pytest.mark.parametrize("bad", [[0.1, 0.1, 0.1], [-0.1, 0, 0, 0], [0, 0, 0, 0.6]])
def test_bad_strengths_are_rejected(bad):
    with pytest.raises(ValueError, match="color_jitter"):
        DataConfig(paths=["x"], color_jitter=bad)


def _locate(image: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    """(y, x) of the one place ``crop`` occurs in ``image``."""
    h, w = crop.shape[:2]
    hits = [
        (y, x)
        for y in range(image.shape[0] - h + 1)
        for x in range(image.shape[1] - w + 1)
        if np.array_equal(image[y : y + h, x : x + w], crop)
    ]
    assert len(hits) == 1, f"crop found {len(hits)} times"
    return hits[0]


def test_pans_move_the_crop_a_whole_number_of_pixels_per_frame(tmp_path):
    """Each pan frame is a crop of the (resized) image; the crop moves by a constant integer velocity
    of at most pan_speed per axis; different clips pan differently, and static ones occur too."""
    from magvit2.data import VideoClipDataset
    from magvit2.data.video_io import write_png

    rng = np.random.default_rng(1)
    write_png(tmp_path / "photo.png", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    write_video(
        tmp_path / "v.mp4", rng.integers(0, 256, (9, 16, 16, 3), dtype=np.uint8), fps=25, lossless=True
    )
    cfg = DataConfig(
        paths=[str(tmp_path)], num_frames=9, resolution=12, short_side=30, pan_images=1.0, pan_speed=2
    )
    ds = VideoClipDataset(cfg)
    image = ds.index.frames(ds.index.image_items[0].file, 0, 1, 1)[0]  # the image at its resized size
    velocities = set()
    for i in range(12):
        clip = ((ds[i] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
        corners = np.array([_locate(image, frame) for frame in clip])
        v = corners[1] - corners[0]
        assert np.array_equal(corners, corners[0] + np.arange(9)[:, None] * v)
        assert np.abs(v).max() <= 2
        velocities.add(tuple(v))
    assert len(velocities) >= 4


def test_pan_fraction(tmp_path):
    """pan_images = 0.5: about half the video clips are pans (flat index-video clips are the others)."""
    from magvit2.data import VideoClipDataset
    from magvit2.data.video_io import write_png

    write_png(tmp_path / "photo.png", np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    flat = np.stack([np.full((16, 16, 3), 5 * i, np.uint8) for i in range(40)])
    write_video(tmp_path / "v.mp4", flat, fps=25, lossless=True)
    kw = dict(paths=[str(tmp_path)], num_frames=5, resolution=12, cache_decoded=True)
    ds = VideoClipDataset(DataConfig(**kw, pan_images=0.5))
    pans = sum(float(ds[i][0, 0].std()) > 0.05 for i in range(200))
    assert 75 <= pans <= 125
    assert not any(float(VideoClipDataset(DataConfig(**kw))[i][0, 0].std()) > 0.05 for i in range(20))


def test_short_side_max_draws_the_zoom_of_each_clip(tmp_path):
    """On a horizontal ramp (value = x) a crop's value range is the width of the window it was resized
    from: 19 without short_side_max; with short_side 30..60 on a 60-pixel-high image the windows are
    20..40 pixels wide and both ends of that range occur."""
    from magvit2.data import ImageDataset
    from magvit2.data.video_io import write_png

    ramp = np.broadcast_to(np.arange(200, dtype=np.uint8)[None, :, None], (60, 200, 3)).copy()
    write_png(tmp_path / "ramp.png", ramp)
    kw = dict(paths=[str(tmp_path)], num_frames=1, resolution=20, short_side=60)

    def widths(ds) -> list[float]:
        return [float(((ds[i] + 1) * 127.5)[0].amax() - ((ds[i] + 1) * 127.5)[0].amin()) for i in range(40)]

    assert widths(ImageDataset(DataConfig(**kw))) == pytest.approx([19.0] * 40, abs=0.01)
    zoomed = widths(ImageDataset(DataConfig(**{**kw, "short_side": 30}, short_side_max=60)))
    assert min(zoomed) >= 18 and max(zoomed) <= 40
    assert min(zoomed) < 23 and max(zoomed) > 35
    with pytest.raises(ValueError, match="short_side_max"):
        DataConfig(**{**kw, "short_side": 30}, short_side_max=20)
