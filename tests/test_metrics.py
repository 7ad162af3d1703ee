"""PSNR / SSIM / MS-SSIM against scikit-image and an independent numpy/scipy MS-SSIM (Wang et al. 2003)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from magvit2.evaluation.metrics import MS_SSIM_WEIGHTS, ms_ssim, ms_ssim_num_scales, psnr, ssim

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_io = pytest.importorskip("skimage.io")
ndimage = pytest.importorskip("scipy.ndimage")

REL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: the shared 2-core machine is oversubscribed and threads only spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _photo(photos_dir, name: str, size: int = 160) -> np.ndarray:
    """A real RGB photograph, centre crop size x size, float64 in [0, 1], (H, W, 3)."""
    im = skimage_io.imread(photos_dir / name).astype(np.float64) / 255.0
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    im = im[..., :3]
    h0, w0 = (im.shape[0] - size) // 2, (im.shape[1] - size) // 2
    return im[h0 : h0 + size, w0 : w0 + size]


@pytest.fixture(scope="module")
def clip_pair(photos_dir):
    """A 'video' of 3 real photographs (T, H, W, 3) and a noisy copy with per-frame noise levels."""
    rng = np.random.default_rng(0)
    frames = np.stack([_photo(photos_dir, n) for n in ("astronaut.png", "chelsea.png", "coffee.png")])
    sigmas = np.array([0.02, 0.08, 0.2]).reshape(3, 1, 1, 1)
    noisy = np.clip(frames + rng.normal(size=frames.shape) * sigmas, 0.0, 1.0)
    return frames, noisy


def _video(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) numpy -> (1, 3, T, H, W) torch."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None]


def _sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float, channel_axis=2) -> float:
    return skimage_metrics.structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
        channel_axis=channel_axis,
    )


def test_psnr_per_frame_mean_and_global_match_skimage(clip_pair):
    frames, noisy = clip_pair
    ref_frames = np.mean(
        [
            skimage_metrics.peak_signal_noise_ratio(f, n, data_range=1.0)
            for f, n in zip(frames, noisy, strict=True)
        ]
    )
    ref_global = skimage_metrics.peak_signal_noise_ratio(frames, noisy, data_range=1.0)
    x, y = _video(frames), _video(noisy)
    assert float(psnr(x, y, 1.0)) == pytest.approx(ref_frames, rel=REL)
    assert float(psnr(x, y, 1.0, mode="global")) == pytest.approx(ref_global, rel=REL)
    # per-frame mean differs from global for unequal noise levels: the two modes are really different
    assert abs(ref_frames - ref_global) > 1.0
    # [-1, 1] with data_range 2 and uint8 scale with data_range 255 give the same numbers
    assert float(psnr(2 * x - 1, 2 * y - 1, (-1.0, 1.0))) == pytest.approx(ref_frames, rel=1e-9)
    assert float(psnr(255 * x, 255 * y, 255.0)) == pytest.approx(ref_frames, rel=1e-9)


def test_psnr_reduction_none_gives_one_value_per_video(clip_pair):
    frames, noisy = clip_pair
    x = torch.cat([_video(frames), _video(frames)])
    y = torch.cat([_video(noisy), _video(frames[[1, 2, 0]])])
    per_video = psnr(x, y, 1.0, reduction="none")
    expected = [
        np.mean(
            [
                skimage_metrics.peak_signal_noise_ratio(f, n, data_range=1.0)
                for f, n in zip(frames, noisy, strict=True)
            ]
        ),
        np.mean(
            [
                skimage_metrics.peak_signal_noise_ratio(f, n, data_range=1.0)
                for f, n in zip(frames, frames[[1, 2, 0]], strict=True)
            ]
        ),
    ]
    assert per_video.shape == (2,)
    np.testing.assert_allclose(per_video.numpy(), expected, rtol=REL)


def test_ssim_rgb_matches_skimage_per_frame_mean(clip_pair):
    frames, noisy = clip_pair
    ref = np.mean([_sk_ssim(f, n, 1.0) for f, n in zip(frames, noisy, strict=True)])
    got = float(ssim(_video(frames), _video(noisy), 1.0))
    assert got == pytest.approx(ref, rel=REL)
    assert float(ssim(_video(2 * frames - 1), _video(2 * noisy - 1), (-1.0, 1.0))) == pytest.approx(
        ref, rel=1e-9
    )


def test_ssim_luma_matches_skimage_on_luma(clip_pair):
    frames, noisy = clip_pair
    w = np.array([0.299, 0.587, 0.114])
    ref = np.mean(
        [_sk_ssim(f @ w, n @ w, 1.0, channel_axis=None) for f, n in zip(frames, noisy, strict=True)]
    )
    assert float(ssim(_video(frames), _video(noisy), 1.0, color="luma")) == pytest.approx(ref, rel=REL)


def test_ssim_images_and_uint8_range(photos_dir):
    rng = np.random.default_rng(1)
    a = (_photo(photos_dir, "astronaut.png", 96) * 255).round()
    b = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).round()
    ref = _sk_ssim(a, b, 255.0)
    got = float(
        ssim(torch.from_numpy(a).permute(2, 0, 1)[None], torch.from_numpy(b).permute(2, 0, 1)[None], 255.0)
    )
    assert got == pytest.approx(ref, rel=REL)
    assert float(
        ssim(torch.from_numpy(a).permute(2, 0, 1)[None], torch.from_numpy(a).permute(2, 0, 1)[None], 255.0)
    ) == pytest.approx(1.0, abs=1e-12)


def _wang2003_ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Independent MS-SSIM of one gray image pair (H, W): scipy Gaussian filters, 2x2 mean downsampling."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    m = ms_ssim_num_scales(*a.shape)
    weights = np.array(MS_SSIM_WEIGHTS[:m]) / np.sum(MS_SSIM_WEIGHTS[:m])

    def filt(z):  # 11-tap Gaussian (radius 5), valid region only
        return ndimage.gaussian_filter(z, sigma=1.5, truncate=3.5)[5:-5, 5:-5]

    value = 1.0
    for j in range(m):
        mu_a, mu_b = filt(a), filt(b)
        va, vb, cov = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
        cs = np.mean((2 * cov + c2) / (va + vb + c2))
        if j == m - 1:
            full = np.mean(
                (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1) * (2 * cov + c2) / (va + vb + c2)
            )
            # the last scale's full SSIM is scikit-image's SSIM of the downsampled pair
            assert full == pytest.approx(_sk_ssim(a, b, data_range, channel_axis=None), rel=1e-6)
            value *= max(full, 0.0) ** weights[j]
        else:
            value *= max(cs, 0.0) ** weights[j]
            h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
            a = a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
            b = b[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return value


@pytest.mark.parametrize("size", [200, 75])
def test_ms_ssim_matches_direct_wang2003(photos_dir, size):
    rng = np.random.default_rng(2)
    a = _photo(photos_dir, "astronaut.png", size)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    ref = np.mean([_wang2003_ms_ssim(a[..., c], b[..., c], 1.0) for c in range(3)])
    got = float(
        ms_ssim(torch.from_numpy(a).permute(2, 0, 1)[None], torch.from_numpy(b).permute(2, 0, 1)[None], 1.0)
    )
    assert got == pytest.approx(ref, rel=REL)


def test_ms_ssim_scale_rule():
    assert ms_ssim_num_scales(256, 256) == 5
    assert ms_ssim_num_scales(176, 300) == 5  # 176 // 16 = 11
    assert ms_ssim_num_scales(175, 300) == 4  # 175 // 16 = 10 < 11
    assert ms_ssim_num_scales(22, 22) == 2
    assert ms_ssim_num_scales(21, 64) == 1
    with pytest.raises(ValueError, match="at least 11x11"):
        ms_ssim_num_scales(10, 64)


def test_ms_ssim_identical_is_one_and_monotone_in_noise(clip_pair):
    frames, _ = clip_pair
    x = _video(frames[:2, :96, :96])
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    assert float(ms_ssim(x, x, 1.0)) == pytest.approx(1.0, abs=1e-12)
    values = [float(ms_ssim(x, (x + s * noise).clamp(0, 1), 1.0)) for s in (0.01, 0.05, 0.1, 0.3)]
    assert all(v1 > v2 for v1, v2 in pairwise(values)), values
    assert 0.0 < values[-1] < 0.9


def test_video_metrics_are_means_of_image_metrics(clip_pair):
    frames, noisy = clip_pair
    x, y = _video(frames), _video(noisy)
    for fn in (ssim, ms_ssim, psnr):
        per_frame = [float(fn(x[:, :, t], y[:, :, t], 1.0)) for t in range(x.shape[2])]
        assert float(fn(x, y, 1.0)) == pytest.approx(np.mean(per_frame), rel=1e-12)


def test_metric_argument_errors():
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, torch.rand(1, 3, 16, 15), 1.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(x, x, 0.0)
    with pytest.raises(ValueError, match=r"data_range=\(-1.0, 1.0\)"):
        ssim(2 * x - 1, 2 * x - 1, 2.0)
    with pytest.raises(ValueError, match="data_range"):
        psnr(x, x, (1.0, 1.0))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), 1.0)
    with pytest.raises(ValueError, match="mode"):
        psnr(x, x, 1.0, mode="frame")
    with pytest.raises(ValueError, match="color"):
        ssim(x, x, 1.0, color="gray")
