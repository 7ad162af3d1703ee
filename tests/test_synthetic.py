"""Synthesised training clips: reproducible, in range, and each kind of change doing what it says."""

import torch

from magvit2.data.synthetic import ClipSynth, SynthConfig


def _synth(**cfg) -> ClipSynth:
    g = torch.Generator().manual_seed(0)
    scenes = [(torch.rand(3, 96, 128, generator=g) * 255).to(torch.uint8) for _ in range(3)]
    stamp = torch.zeros(4, 20, 20, dtype=torch.uint8)
    stamp[:3], stamp[3, 5:15, 5:15] = 200, 255  # an opaque 10x10 square in a transparent frame
    video = (torch.rand(12, 3, 64, 80, generator=g) * 255).to(torch.uint8)
    return ClipSynth(scenes, [stamp], video, SynthConfig(**cfg), seed=3)


def test_same_seed_same_clips_and_values_in_range():
    a, b = _synth().batch(4, 9, 32), _synth().batch(4, 9, 32)
    assert a.shape == (4, 3, 9, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1
    assert not torch.equal(a, _synth().batch(4, 9, 32)[torch.tensor([1, 0, 2, 3])])


def test_still_camera_repeats_the_frame_and_a_pan_moves_it():
    s = _synth()
    grid = s._grid(5, 16, (96, 128), 1.0, still=True)
    assert torch.equal(grid[0], grid[4])
    moving = s._grid(5, 16, (96, 128), 1.0, still=False)
    shift = (moving[1:, 8, 8] - moving[:-1, 8, 8]).norm(dim=-1)
    assert (shift > 0).all()


def test_fade_reaches_black_or_white_and_keeps_it():
    s = _synth()
    x = torch.full((3, 9, 8, 8), 0.5)
    for _ in range(10):
        y = s._fade(x)
        ends = [y[:, 0].unique(), y[:, -1].unique()]
        assert any(len(e) == 1 and float(e) in (0.0, 1.0) for e in ends), ends


def test_stamp_is_pasted_opaque_and_moves():
    s = _synth()
    moved = 0
    for _ in range(8):
        y = s._stamp(torch.zeros(3, 5, 32, 32))
        assert y.max() <= 200 / 255 + 1e-6  # only the stamp's colour, blended by its alpha
        painted = y[0] > 0.7
        if painted[0].any() and painted[-1].any():
            moved += int(not torch.equal(painted[0], painted[-1]))
    assert moved > 0


def test_flat_clip_without_objects_is_one_colour_or_smooth():
    s = _synth(p_video=0.0, p_flat=1.0, max_stamps=0, p_cut=0, p_fade=0, p_brightness=0, p_grey=0)
    clips = s.batch(6, 5, 32)
    assert clips.shape == (6, 3, 5, 32, 32)
    spreads = clips.flatten(2).std(-1).mean(-1)
    assert (spreads < 0.6).all()
    assert (spreads < 1e-6).any()  # a flat colour is exactly flat


def test_video_clip_uses_consecutive_frames():
    s = _synth(p_video=1.0, max_stamps=0, p_cut=0, p_fade=0, p_brightness=0, p_grey=0)
    clip = s._video_clip(3, 32)
    assert clip.shape == (3, 3, 32, 32)
    assert not torch.equal(clip[:, 0], clip[:, 1])  # different source frames (random pixels)


def test_pure_colours_are_exact_extremes_and_short_ramps_are_steep():
    from magvit2.data.synthetic import PURE_COLOURS

    s = _synth(p_pure=1.0, ramp_span=(0.5, 0.5))
    for _ in range(10):
        assert (PURE_COLOURS == s._flat_colour()[:, 0, 0]).all(1).any()
    ramp = s._ramp(32)  # 64 image pixels, 16 of them rising
    rising = ((ramp > 0) & (ramp < 1)).sum()
    assert 14 <= rising <= 16 and ramp[0] == 0 and ramp[-1] == 1
    assert torch.all(ramp[1:] >= ramp[:-1])
    plain = _synth()
    assert torch.equal(plain._ramp(32), torch.linspace(0, 1, 64))


def test_flat_batch_is_flat_and_covers_greys_and_saturated_colours():
    clips = _synth().flat_batch(300, 3, 8)
    assert clips.shape == (300, 3, 3, 8, 8)
    colours = clips[:, :, 0, 0, 0]
    assert torch.equal(clips, colours[:, :, None, None, None].expand_as(clips))  # exactly flat
    assert clips.min() >= -1 and clips.max() <= 1
    grey = (colours.max(1).values - colours.min(1).values) < 1e-6
    saturated = (colours.max(1).values == 1) & (colours.min(1).values == -1)
    assert 70 < int(grey.sum()) < 130 and int(saturated.sum()) > 15  # expected 100 and 28
