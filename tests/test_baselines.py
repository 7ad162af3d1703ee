"""The block-average floor and the block-mean error: token-grid grouping, exact values, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from magvit2.evaluation.baselines import block_average, block_mean_psnr, block_means


def video(frames: int = 10, h: int = 16, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)


def test_block_means_group_frames_as_the_tokenizer():
    v = video()  # 10 frames: groups {0}, {1-4}, {5-8}, {9}
    means = block_means(v)
    assert means.shape == (4, 2, 3, 3)
    x = v.astype(np.float64)
    assert np.allclose(means[0, 1, 2], x[0, 8:16, 16:24].mean((0, 1)))
    assert np.allclose(means[1, 0, 1], x[1:5, :8, 8:16].mean((0, 1, 2)))
    assert np.allclose(means[3, 1, 0], x[9, 8:16, :8].mean((0, 1)))
    eight = block_means(v[:8])  # a length that is a multiple of 4 still starts with frame 0 alone
    assert eight.shape[0] == 3 and np.allclose(eight[2, 0, 0], x[5:8, :8, :8].mean((0, 1, 2)))


def test_block_average_of_flat_blocks_is_flat():
    flat = np.full((5, 16, 16, 3), 77, np.uint8)
    assert np.array_equal(block_average(flat), flat)
    assert block_average(video()).shape == (10, 16, 24, 3)


def test_block_mean_psnr_sees_colour_not_detail():
    v = video(seed=1).clip(10, 245)
    assert block_mean_psnr(v, v) == float("inf")
    assert block_mean_psnr(v + 4, v) == pytest.approx(20 * np.log10(255 / 4))
    # a +-3 checkerboard inside every 8x8 block changes pixels but no block mean
    yy, xx = np.mgrid[:16, :24]
    pattern = np.where((yy + xx) % 2 == 0, 3, -3)[None, :, :, None]
    detail = (v.astype(int) + pattern).astype(np.uint8)
    assert block_mean_psnr(detail, v) == float("inf")


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        block_mean_psnr(video(), video(frames=9))
    with pytest.raises(ValueError, match="multiples of 8"):
        block_means(video(h=12))
