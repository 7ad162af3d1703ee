"""Tests of the training data pipeline magvit2.data (determinism, resume, sharding, joint batches)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from magvit2.data import (
    BatchStream,
    DataConfig,
    ImageDataset,
    JointBatchDataset,
    MediaIndex,
    VideoClipDataset,
    find_files,
    make_loader,
)
from magvit2.data.video_io import read_video, write_png, write_video

N_FRAMES = 48


def _index_frames(n=N_FRAMES, h=24, w=32) -> np.ndarray:
    """Frame i is flat grey 5*i: the frame index can be read back from any pixel."""
    return np.stack([np.full((h, w, 3), 5 * i, np.uint8) for i in range(n)])


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A folder with two lossless index videos (keyframe every 8 frames) and six random images."""
    root = tmp_path_factory.mktemp("media")
    (root / "videos").mkdir()
    (root / "images").mkdir()
    write_video(root / "videos" / "a.mp4", _index_frames(), fps=25, lossless=True, options={"g": "8"})
    write_video(root / "videos" / "b.mp4", _index_frames(40), fps=25, lossless=True, options={"g": "8"})
    rng = np.random.default_rng(0)
    for i in range(6):
        write_png(root / "images" / f"img{i}.png", rng.integers(0, 256, (20 + 2 * i, 30, 3), dtype=np.uint8))
    return root


def _frame_ids(clip: torch.Tensor) -> list[int]:
    """Recover frame indices from an index-video clip (3, T, H, W) in [-1, 1]."""
    values = ((clip + 1) * 127.5).round()
    assert torch.all(values == values[:, :, :1, :1]), "index frames must stay flat"
    return [int(v) // 5 for v in values[0, :, 0, 0]]


def _equal_batches(a: dict, b: dict) -> bool:
    for key in ("video", "image"):
        if (a[key] is None) != (b[key] is None):
            return False
        if a[key] is not None and not torch.equal(a[key], b[key]):
            return False
    return a["step"] == b["step"]


def test_config_validation():
    with pytest.raises(ValueError, match="num_frames must be 1 \\+ 4\\*k"):
        DataConfig(paths=["x"], num_frames=6)
    with pytest.raises(ValueError, match="resize_mode"):
        DataConfig(paths=["x"], resize_mode="zoom")
    with pytest.raises(ValueError, match="image_ratio"):
        DataConfig(paths=["x"], image_ratio=1.5)
    assert DataConfig(paths="x", resolution=(32, 48)).size == (32, 48)
    assert DataConfig(paths=["x"], num_frames=9, frame_stride=3).span == 25


def test_find_files_folders_globs_exclude(media):
    files = find_files([str(media / "videos"), str(media / "images" / "img[0-2].png")], exclude=["*b.mp4"])
    names = [f.rsplit("/", 1)[1] for f in files]
    assert names == ["img0.png", "img1.png", "img2.png", "a.mp4"]  # sorted by full path


def test_find_files_skips_hidden_files_in_folders(media, tmp_path):
    """A hidden file in a data folder (e.g. a half-written ``.x.tmp-123.mp4`` of another process) is
    not training data; the same folder walk serves the CLI."""
    import shutil

    from magvit2.cli.common import discover_inputs

    folder = tmp_path / "data"
    shutil.copytree(media / "videos", folder)
    shutil.copy(folder / "a.mp4", folder / ".a.tmp-123.mp4")
    names = sorted(p.name for p in folder.iterdir())
    assert names == [".a.tmp-123.mp4", "a.mp4", "b.mp4"]
    assert [f.rsplit("/", 1)[1] for f in find_files([str(folder)])] == ["a.mp4", "b.mp4"]
    assert [f.name for f, _ in discover_inputs([str(folder)])] == ["a.mp4", "b.mp4"]


@pytest.mark.parametrize("cache", [False, True])
def test_clip_frames_follow_stride(media, cache):
    cfg = DataConfig(
        paths=[str(media / "videos")],
        num_frames=5,
        frame_stride=3,
        resolution=16,
        seed=1,
        cache_decoded=cache,
    )
    ds = VideoClipDataset(cfg)
    # a.mp4: 48 frames, span 13 -> 3 windows of 16; b.mp4: 40 frames -> 3 windows of 13
    assert len(ds.index.video_items) == 6 and len(ds) == 6
    starts = set()
    for i in range(30):
        clip = ds[i]
        assert clip.shape == (3, 5, 16, 16) and clip.dtype == torch.float32
        ids = _frame_ids(clip)
        assert ids == list(range(ids[0], ids[0] + 13, 3)), ids
        starts.add(ids[0])
    assert len(starts) > 5  # random starts inside the windows
    # one epoch visits every window exactly once: the clips of an epoch do not overlap per video
    epoch = [_frame_ids(ds[i])[0] for i in range(6)]
    items = [ds.index.video_items[j] for j in ds.order.permutation(0)]
    for start, item in zip(epoch, items, strict=True):
        assert item.start <= start <= item.start + item.length - 13


def test_hold_out_last_keeps_training_off_the_last_frames(media, cache):
    """With hold_out_last=12, no clip and no frame-as-image reaches the last 12 frames of a video
    (a.mp4: 48 frames -> frames 0-35; b.mp4: 40 -> 0-27), and clips still cover what is left."""
    kw = dict(paths=[str(media / "videos")], num_frames=5, resolution=16, seed=2, cache_decoded=cache)
    ds = VideoClipDataset(DataConfig(**kw, hold_out_last=12))
    limits = {0: 36, 1: 28}  # frames each file may show, by file index
    for item in ds.index.video_items + ds.index.image_items:
        assert item.start + item.length <= limits[item.file], item
    seen = set()
    for i in range(60):
        ids = _frame_ids(ds[i])
        assert ids[-1] < 36, ids
        seen.update(ids)
    assert max(seen) >= 30  # the frames just before the held-out ones are still used
    assert len(VideoClipDataset(DataConfig(**kw)).index.image_items) == 48 + 40
    with pytest.raises(ValueError, match="hold_out_last"):
        DataConfig(**kw, hold_out_last=-1)


def test_cache_and_streaming_give_identical_samples(media):
    kw = dict(
        paths=[str(media)],
        num_frames=5,
        frame_stride=2,
        resolution=(16, 20),
        image_ratio=0.5,
        batch_size=4,
        seed=3,
    )
    a = JointBatchDataset(DataConfig(**kw, cache_decoded=False))
    b = JointBatchDataset(DataConfig(**kw, cache_decoded=True))
    for step in range(4):
        assert _equal_batches(a[step], b[step])


def test_random_crop_is_a_window_of_the_resized_frame(media):
    cfg = DataConfig(paths=[str(media / "images")], num_frames=1, resolution=12, seed=0)
    ds = ImageDataset(cfg)
    offsets = set()
    for i in range(12):
        img = ds[i]
        assert img.shape == (3, 1, 12, 12) and img.min() >= -1 and img.max() <= 1
        u8 = ((img[:, 0] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        epoch, pos = ds.order.locate(i)
        item = ds.index.image_items[ds.order.permutation(epoch)[pos]]
        info = ds.index.infos[item.file]
        short = 12
        size = (
            round(info.height * short / min(info.height, info.width)),
            round(info.width * short / min(info.height, info.width)),
        )
        size = (max(12, size[0]), max(12, size[1]))
        full = read_video(ds.index.files[item.file], size=size)[0]  # independent read at the resize size
        hits = [
            (y, x)
            for y in range(full.shape[0] - 11)
            for x in range(full.shape[1] - 11)
            if np.array_equal(full[y : y + 12, x : x + 12], u8)
        ]
        assert hits, f"sample {i} is not a crop of the resized image"
        offsets.add(hits[0])
    assert len(offsets) > 3
    centre = DataConfig(
        paths=[str(media / "images" / "img5.png")], num_frames=1, resolution=12, resize_mode="center_crop"
    )
    img = ImageDataset(centre)[0]
    full = read_video(media / "images" / "img5.png", size=(12, 12))  # img5: 30x30 -> 12x12, no crop left
    assert torch.equal(
        ((img + 1) * 127.5).round().to(torch.uint8)[:, 0].permute(1, 2, 0), torch.from_numpy(full[0])
    )
    stretch = DataConfig(paths=[str(media / "images")], num_frames=1, resolution=(7, 9), resize_mode="resize")
    assert ImageDataset(stretch)[0].shape == (3, 1, 7, 9)


def test_determinism_and_seed(media):
    kw = dict(paths=[str(media)], num_frames=5, resolution=16, batch_size=3, image_ratio=1 / 3)
    a, b = JointBatchDataset(DataConfig(**kw, seed=7)), JointBatchDataset(DataConfig(**kw, seed=7))
    c = JointBatchDataset(DataConfig(**kw, seed=8))
    assert all(_equal_batches(a[s], b[s]) for s in range(5))
    assert not all(_equal_batches(a[s], c[s]) for s in range(5))
    assert a[0]["video"].shape == (2, 3, 5, 16, 16) and a[0]["image"].shape == (1, 3, 1, 16, 16)


def test_resume_equals_uninterrupted(media):
    cfg = DataConfig(
        paths=[str(media)],
        num_frames=5,
        resolution=16,
        batch_size=2,
        image_ratio=0.25,
        joint_mode="alternate",
        image_batch_size=3,
        seed=5,
        cache_decoded=True,
    )
    full = list(BatchStream(cfg, max_steps=9))
    first = BatchStream(cfg, max_steps=9)
    head = []
    for batch in first:
        head.append(batch)
        if len(head) == 4:
            break
    state = first.state_dict()
    assert state["step"] == 4 and state["seed"] == 5
    resumed = BatchStream(cfg, max_steps=9)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == 9
    assert all(_equal_batches(x, y) for x, y in zip(head + tail, full, strict=True))
    assert resumed.step == 9


def test_rank_sharding_disjoint_and_complete(media):
    cfg = DataConfig(paths=[str(media / "images")], num_frames=1, resolution=8, seed=2, image_ratio=1.0)
    single = ImageDataset(cfg)
    shards = [ImageDataset(cfg, rank=r, world_size=2) for r in range(2)]
    assert len(single) == 6 and [len(s) for s in shards] == [3, 3]
    for epoch in range(2):
        want = {single[epoch * 6 + i].numpy().tobytes() for i in range(6)}
        got = [{s[epoch * 3 + i].numpy().tobytes() for i in range(3)} for s in shards]
        assert got[0].isdisjoint(got[1])
        assert got[0] | got[1] == want
    # with an odd number of items the tail is dropped (never a sample twice across ranks)
    odd = DataConfig(
        paths=[str(media / "images" / f"img{i}.png") for i in range(5)],
        num_frames=1,
        resolution=8,
        image_ratio=1.0,
    )
    parts = [ImageDataset(odd, rank=r, world_size=2) for r in range(2)]
    seen = [{p.order.permutation(0)[p.order.locate(i)[1]] for i in range(len(p))} for p in parts]
    assert len(parts[0]) == 2 and seen[0].isdisjoint(seen[1])


def test_num_workers_do_not_change_batches(media):
    kw = dict(paths=[str(media)], num_frames=5, resolution=16, batch_size=2, image_ratio=0.5, seed=11)
    ref = list(BatchStream(DataConfig(**kw, num_workers=0), max_steps=5))
    par = list(BatchStream(DataConfig(**kw, num_workers=2), max_steps=5))
    assert [b["step"] for b in par] == list(range(5))
    assert all(_equal_batches(x, y) for x, y in zip(ref, par, strict=True))
    loader = make_loader(JointBatchDataset(DataConfig(**kw)), start_step=3, stop_step=5, num_workers=2)
    assert all(_equal_batches(x, y) for x, y in zip(loader, ref[3:], strict=True))


def test_image_ratio(media):
    mixed = JointBatchDataset(
        DataConfig(
            paths=[str(media)], num_frames=5, resolution=8, batch_size=4, image_ratio=0.25, cache_decoded=True
        )
    )
    counts = np.array([[len(r) for r in mixed.plan(s)] for s in range(200)])
    assert (counts == [3, 1]).all()
    alt = JointBatchDataset(
        DataConfig(
            paths=[str(media)],
            num_frames=5,
            resolution=8,
            batch_size=2,
            image_ratio=0.3,
            joint_mode="alternate",
            image_batch_size=5,
        )
    )
    plans = [alt.plan(s) for s in range(1000)]
    image_steps = [s for s, (v, i) in enumerate(plans) if len(i)]
    assert len(image_steps) == 300
    assert all(len(v) == 2 and not len(i) or len(i) == 5 and not len(v) for v, i in plans)
    assert max(np.diff(image_steps)) <= 4  # evenly spread, not bunched
    # the stream indices of each kind are consecutive: nothing skipped, nothing used twice
    assert [i.start for _, i in plans if len(i)] == list(range(0, 1500, 5))
    assert [v.start for v, _ in plans if len(v)] == list(range(0, 1400, 2))
    batch = alt[image_steps[0]]
    assert batch["video"] is None and batch["image"].shape == (5, 3, 1, 8, 8)


def test_video_frames_as_images_when_no_image_files(media):
    cfg = DataConfig(paths=[str(media / "videos")], num_frames=5, resolution=8, image_ratio=0.5, batch_size=2)
    ds = JointBatchDataset(cfg)
    assert len(ds.index.image_items) == 48 + 40
    frame = ds[0]["image"][0]
    assert frame.shape == (3, 1, 8, 8) and len(set(_frame_ids(frame))) == 1


def test_bad_files_skipped_counted_warned_once(media, tmp_path, caplog):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "random.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (bad / "empty.mov").write_bytes(b"")
    (bad / "notes.png").write_text("not an image")
    good = _index_frames(48)
    write_video(bad / "trunc_src.mp4", good, fps=25, lossless=True, options={"g": "4"})
    data = (bad / "trunc_src.mp4").read_bytes()
    (bad / "trunc_src.mp4").unlink()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 2])  # index says 48 frames, half are missing
    cfg = DataConfig(
        paths=[str(media / "videos"), str(bad)],
        num_frames=5,
        frame_stride=2,
        resolution=8,
        batch_size=2,
        seed=0,
    )
    with caplog.at_level(logging.WARNING, logger="magvit2.data"):
        ds = JointBatchDataset(cfg)
        assert set(ds.skipped) == {str(bad / n) for n in ("random.mp4", "empty.mov", "notes.png")}
        for step in range(25):  # enough to hit the missing half of truncated.mp4 many times
            ids = [_frame_ids(clip) for clip in ds[step]["video"]]
            assert all(i == list(range(i[0], i[0] + 9, 2)) for i in ids)
    assert str(bad / "truncated.mp4") in ds.skipped and ds.index.num_skipped == 4
    warned = [r.getMessage() for r in caplog.records if "skipping unreadable" in r.getMessage()]
    assert len(warned) == 4 and len({m.split(":")[0] for m in warned}) == 4


def test_all_files_unreadable_raises(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "b.png").write_text("x")
    with pytest.raises(ValueError, match="no usable video"):
        VideoClipDataset(DataConfig(paths=[str(tmp_path)], num_frames=5))
    with pytest.raises(ValueError, match="match no file"):
        MediaIndex(DataConfig(paths=[str(tmp_path / "nothing*.mp4")]))
    write_png(tmp_path / "photo.png", np.zeros((8, 8, 3), np.uint8))  # images only: say how to use them
    with pytest.raises(ValueError, match=r"1 image\(s\) found: images train on image steps"):
        VideoClipDataset(DataConfig(paths=[str(tmp_path)], num_frames=5))


def test_too_short_video_is_not_a_clip_source(media):
    cfg = DataConfig(paths=[str(media / "videos")], num_frames=13, frame_stride=4, resolution=8)  # span 49
    with pytest.raises(ValueError, match="no usable video with at least 49 frames"):
        VideoClipDataset(cfg)
    assert MediaIndex(cfg).too_short == {
        str(media / "videos" / "a.mp4"): 48,
        str(media / "videos" / "b.mp4"): 40,
    }


def test_real_clip_and_photos(clips_dir, photos_dir):
    cfg = DataConfig(
        paths=[
            str(clips_dir / "bigbuckbunny.mp4"),
            str(photos_dir / "astronaut.png"),
            str(photos_dir / "camera.png"),
            str(photos_dir / "logo.png"),
        ],
        num_frames=17,
        resolution=32,
        batch_size=2,
        image_ratio=0.5,
        cache_decoded=True,
        seed=0,
    )
    ds = JointBatchDataset(cfg)
    assert len(ds.index.video_items) == 132 // 17 and len(ds.index.image_items) == 3
    batch = ds[0]
    assert batch["video"].shape == (1, 3, 17, 32, 32) and batch["image"].shape == (1, 3, 1, 32, 32)
    assert batch["video"].abs().max() <= 1 and batch["video"].std() > 0.05


def test_short_side_scales_before_cropping():
    from magvit2.data.media import resized_size

    assert resized_size(720, 1280, (64, 64), "random_crop") == (64, 114)
    assert resized_size(720, 1280, (64, 64), "random_crop", short_side=144) == (144, 256)
    assert resized_size(720, 1280, (64, 64), "resize", short_side=144) == (64, 64)
    assert resized_size(100, 50, (64, 64), "center_crop", short_side=32) == (128, 64)  # must cover the crop
