"""The built-in model's recipe (configs/builtin/default.yaml) is runnable: every run's options are
options of scripts/train_default.py with values it accepts, and each run starts from the one before."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_recorded_run_parses_with_the_training_script(train_default):
    parse = train_default.parse_args
    recipe = yaml.safe_load((ROOT / "configs" / "builtin" / "default.yaml").read_text())
    previous = None
    for run in recipe["runs"]:
        argv = ["--data", "data/trainset", "--out", f"runs/{run['name']}"]
        for key, value in run["args"].items():
            argv += [f"--{key.replace('_', '-')}", *map(str, value if isinstance(value, list) else [value])]
        args = parse(argv)
        for key, value in run["args"].items():
            assert getattr(args, key) == value, (run["name"], key)
        assert args.init == (f"{previous}/best" if previous else None), run["name"]
        previous = run["name"]


def test_selection_score_is_val_video_or_the_capped_mean(train_default):
    score = train_default.selection_score
    scores = {"val_video": 22.0, "val_image": 23.0, "flat": 55.0}
    assert score(scores, "video") == 22.0
    assert score(scores, "all") == 28.333  # (22 + 23 + 40) / 3: flat capped at 40 dB
    assert score({**scores, "flat": 31.0}, "all") == 25.333


def test_validate_scores_each_set_and_the_last_quarter_of_the_clips(train_default):
    """A model whose reconstruction errs by 0.1 only on the last quarter of the frames: PSNR of
    10 log10(4 / mse) with mse 0.01 there (26.02 dB) and a quarter of that over the whole clip."""

    class LateError(torch.nn.Module):
        def forward(self, x):
            rec = x.clone()
            if x.ndim == 5:
                rec[:, :, -x.shape[2] // 4 :] += 0.1
            return SimpleNamespace(reconstruction=rec)

    clips = torch.rand(5, 3, 8, 16, 16) * 1.6 - 0.8  # values stay inside [-1, 1] after the error
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    scores = train_default.validate(LateError(), {"val_video": clips, "val_image": images}, batch=2)
    assert scores["val_late"] == round(10 * math.log10(4 / 0.01), 3)
    assert scores["val_video"] == round(10 * math.log10(4 / 0.0025), 3)
    assert scores["val_image"] == round(10 * math.log10(4 / 1e-10), 3)  # exact: mse clamped at 1e-10
    assert scores["val_cast"] == pytest.approx(0.1 / 4 * 255 / 2, abs=1e-3)  # +0.1 on 1/4 of frames


def test_flat_score_caps_each_clip_so_a_perfect_flat_cannot_hide_a_poor_one(train_default):
    """Two flat clips: one reconstructed exactly (106 dB, counted as 40), one off by 0.1 (26.02 dB).
    The score is their capped mean, 33.01 dB, and ``flat_min`` the poor clip's 26.02 dB; a mean
    capped only after averaging would say 40 dB and miss it."""

    class OffAboveQuarter(torch.nn.Module):
        def forward(self, x):
            return SimpleNamespace(reconstruction=torch.where(x > 0.25, x + 0.1, x))

    clips = torch.stack([torch.zeros(3, 5, 8, 8), torch.full((3, 5, 8, 8), 0.5)])
    scores = train_default.validate(OffAboveQuarter(), {"flat": clips}, batch=1)
    poor = 10 * math.log10(4 / 0.01)
    assert scores["flat"] == pytest.approx((train_default.SIMPLE_CAP + poor) / 2, abs=1e-3)
    assert scores["flat_min"] == pytest.approx(poor, abs=1e-3)


def test_guard_takes_only_weights_no_worse_than_the_init_on_every_guarded_figure(train_default):
    floor = {"val_video": 23.0, "val_late": 23.7, "flat_min": 30.0, "val_cast": 2.8, "val_image": 24.0}
    assert train_default.no_worse({**floor, "val_image": 20.0}, floor)  # val_image is not guarded
    assert train_default.no_worse({**floor, "val_video": 23.1, "val_cast": 2.5}, floor)
    for key, worse in [("val_video", 22.99), ("val_late", 23.6), ("flat_min", 29.9), ("val_cast", 2.81)]:
        assert not train_default.no_worse({**floor, key: worse}, floor), key
    with pytest.raises(SystemExit):
        train_default.parse_args(["--data", "d", "--out", "o", "--guard"])  # nothing to compare with


def test_flat_validation_set_is_the_checks_flat_colours_and_ramps(train_default):
    """11 flat colours (black first, white fifth, mid grey 128/255) and a horizontal then a vertical
    ramp from black to white, as `magvit2.evaluation.sanity` makes them for builtin_checks.py."""
    clips = train_default.simple_content(frames=5, size=16)
    assert clips.shape == (13, 3, 5, 16, 16)
    assert torch.all(clips[0] == -1) and torch.all(clips[4] == 1)
    assert torch.allclose(clips[2], torch.full_like(clips[2], 128 / 127.5 - 1), atol=1e-6)
    assert torch.equal(clips[7, :, 0, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))  # blue
    horizontal, vertical = clips[11], clips[12]
    row = horizontal[0, 0, 0]
    assert row[0] == -1 and row[-1] == 1 and torch.all(row.diff() > 0)
    assert torch.equal(horizontal, row.expand_as(horizontal))
    assert torch.equal(vertical, horizontal.transpose(2, 3))


def test_random_flats_are_fixed_flat_clips_of_varied_uint8_colours(train_default):
    clips = train_default.random_flats(16, frames=3, size=8)
    assert clips.shape == (16, 3, 3, 8, 8)
    assert torch.equal(clips, train_default.random_flats(16, frames=3, size=8))  # the same every run
    colours = clips[:, :, 0, 0, 0]
    assert torch.equal(clips, colours[:, :, None, None, None].expand_as(clips))  # flat in space and time
    levels = (colours + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # on the 256 levels a video can hold
    assert len({tuple(c) for c in levels.round().tolist()}) == 16 and levels.std(0).min() > 40


def test_colour_cast_is_the_largest_channel_error_of_the_clamped_reconstruction(train_default):
    """Per-channel offsets (+0.02, -0.06, +0.01): the cast is the largest in size, 0.06 of the [-1, 1]
    range = 7.65/255; the loss term's error keeps signs and, unlike the cast, values past [-1, 1]."""
    script = train_default
    ref = torch.rand(2, 3, 5, 8, 8) * 1.8 - 0.9
    offset = torch.tensor([0.02, -0.06, 0.01]).view(1, 3, 1, 1, 1)
    rec = ref + offset
    assert torch.allclose(script.channel_mean_error(rec, ref), offset.view(1, 3).expand(2, 3), atol=1e-6)
    assert torch.allclose(script.colour_cast(rec, ref), torch.full((2,), 0.06 * 255 / 2), atol=1e-4)
    ref = torch.full((1, 3, 2, 4, 4), 0.9)
    over = ref + 0.5  # 1.4: shown as 1.0
    assert torch.allclose(script.channel_mean_error(over, ref), torch.full((1, 3), 0.5))
    assert torch.allclose(script.colour_cast(over, ref), torch.full((1,), 0.1 * 255 / 2), atol=1e-4)


def test_batch_schedule_gives_images_flats_and_clips_their_own_sizes(train_default):
    script = train_default
    options = "--image-every 3 --flat-every 2 --frames 17 --flat-frames 33 --size 80 --image-size 128"
    args = script.parse_args(["--data", "d", "--out", "o", *options.split()])
    calls = []
    synth = SimpleNamespace(
        batch=lambda n, t, s: calls.append(("clip", n, t, s)) or torch.zeros(n, 3, t, s, s),
        flat_batch=lambda n, t, s: calls.append(("flat", n, t, s)) or torch.zeros(n, 3, t, s, s),
    )
    for step in range(6):
        script.make_batch(synth, args, step)
    clip, flat, image = ("clip", 16, 17, 80), ("flat", 32, 33, 24), ("clip", 64, 1, 128)
    assert calls == [clip, flat, image, clip, flat, image]
    assert script.parse_args(["--data", "d", "--out", "o", "--frames", "9"]).flat_frames == 9


def test_entropy_weight_option_sets_the_lfq_entropy_term_only_for_the_run(train_default):
    """``--entropy-weight 0`` leaves the quantizer loss its commitment term alone; without the option
    the loss holds the config's weight x (per-token - codebook entropy) too. The config is the same."""
    base = ["--data", "d", "--out", "o", "--preset", "tiny"]
    video = torch.rand(2, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    default = train_default.build_model(train_default.parse_args(base))
    zero = train_default.build_model(train_default.parse_args([*base, "--entropy-weight", "0"]))
    assert zero.config == default.config and default.quantizer.entropy_weight == 0.1
    with torch.no_grad():
        q, q0 = default(video).quantizer, zero(video).quantizer
    commit = default.quantizer.commitment_weight
    assert float(q0.loss) == pytest.approx(commit * float(q0.commitment), rel=1e-6)
    entropy = 0.1 * (q.per_token_entropy - q.codebook_entropy)
    assert abs(float(entropy)) > 1e-3
    assert float(q.loss) == pytest.approx(float(entropy + commit * q.commitment), rel=1e-5)
