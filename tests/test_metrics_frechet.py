"""Fréchet distance on Gaussians of known distance, the streaming FeatureStats, and FVD/rFID plumbing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from magvit2.evaluation.frechet import FeatureStats, frechet_distance, frechet_distance_from_features
from magvit2.evaluation.fvd import (
    FrechetInceptionDistance,
    FrechetVideoDistance,
    load_torchscript_detector,
    to_uint8_levels,
)

# torch 2.13 marks TorchScript deprecated; the detector files are TorchScript, so the stand-ins are too
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_diagonal_covariances_closed_form():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)


def test_commuting_covariances_closed_form():
    """S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: distance = ||dmu||^2 + sum (sqrt a - sqrt b)^2."""
    rng = np.random.default_rng(1)
    d = 8
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    a, b = rng.uniform(0.2, 2.0, d), rng.uniform(0.2, 2.0, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_non_commuting_2x2_closed_form():
    """For 2x2 PSD matrices tr sqrt(S1 S2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2))."""
    s1 = np.array([[2.0, 0.7], [0.7, 1.0]])
    s2 = np.array([[0.5, -0.2], [-0.2, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    tr_sqrt = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    expected = 0.25 + 6.25 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)
    # torch inputs (float32) are accepted and computed in float64
    got_t = frechet_distance(*(torch.tensor(v) for v in (mu1, s1, mu2, s2)))
    assert got_t == pytest.approx(expected, rel=1e-12)


def test_matches_scipy_sqrtm_formula():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    d = 40
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    root = linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(root))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_identical_is_zero_and_symmetric_and_rank_deficient_ok():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 30))  # 10 samples of 30-d features: rank-deficient covariance
    stats = FeatureStats()
    stats.update(x)
    m, s = stats.mean_cov()
    # rank-deficient: round-off of the zero eigenvalues enters through a square root (~sqrt(eps) * scale)
    assert abs(frechet_distance(m, s, m, s)) < 1e-6 * np.trace(s)
    s2 = _random_spd(rng, 30)
    m2 = rng.normal(size=30)
    # symmetric up to that same round-off (measured 1.6e-9 relative with numpy 2.4 / scipy 1.17)
    assert frechet_distance(m, s, m2, s2) == pytest.approx(frechet_distance(m2, s2, m, s), rel=1e-7)


def test_sample_estimates_converge_to_true_distance():
    rng = np.random.default_rng(4)
    d = 3
    mu1, mu2 = np.zeros(d), np.array([1.0, 0.0, -0.5])
    s1 = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, 0.5], [0.0, 0.5, 1.5]])
    s2 = np.array([[0.5, 0.0, 0.1], [0.0, 1.0, -0.3], [0.1, -0.3, 2.5]])
    true = frechet_distance(mu1, s1, mu2, s2)
    errors = []
    for n in (500, 200_000):
        a = rng.multivariate_normal(mu1, s1, size=n)
        b = rng.multivariate_normal(mu2, s2, size=n)
        errors.append(abs(frechet_distance_from_features(a, b) - true))
    assert errors[1] < 0.02 * true
    assert errors[1] < errors[0]


def test_feature_stats_streaming_equals_one_batch_and_numpy():
    rng = np.random.default_rng(5)
    x = rng.normal(loc=3.0, scale=2.0, size=(103, 7)) @ rng.normal(size=(7, 7))
    streamed = FeatureStats()
    for chunk in np.array_split(x, [1, 10, 11, 60]):
        streamed.update(torch.from_numpy(chunk).float() if len(chunk) == 49 else chunk)
    one = FeatureStats()
    one.update(x.astype(np.float32).astype(np.float64))
    m, s = streamed.mean_cov()
    assert streamed.num_items == 103
    np.testing.assert_allclose(m, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(s, np.cov(x, rowvar=False), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        streamed.mean_cov(ddof=0)[1], np.cov(x, rowvar=False, ddof=0), rtol=1e-4, atol=1e-5
    )
    # merge of two accumulators == one accumulator over all
    a, b = FeatureStats(), FeatureStats()
    a.update(x[:40])
    b.update(x[40:])
    a.merge(b)
    ref = FeatureStats()
    ref.update(x)
    np.testing.assert_allclose(a.mean_cov()[1], ref.mean_cov()[1], rtol=1e-12, atol=1e-12)
    restored = FeatureStats.from_state_dict(ref.state_dict())
    np.testing.assert_array_equal(restored.mean_cov()[1], ref.mean_cov()[1])
    with pytest.raises(ValueError, match="D=7"):
        ref.update(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="more than 1 items"):
        FeatureStats().mean_cov()


# ---- FVD / rFID plumbing with randomly initialised TorchScript stand-ins of the real calling convention


class _FakeI3D(nn.Module):
    """Same call as i3d_torchscript.pt: (B,3,T,H,W) in [-1,1], rescale/resize/return_features flags."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, stride=(1, 2, 2))
        self.head = nn.Linear(8 * 2 * 2 * 2, 400)

    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ):
        if rescale or not resize or not return_features:
            raise RuntimeError("unexpected detector flags")
        if float(x.min()) < -1.0 or float(x.max()) > 1.0:
            raise RuntimeError("expected values in [-1, 1]")
        x = F.interpolate(x, size=(x.shape[2], 24, 24), mode="trilinear", align_corners=False)
        h = F.adaptive_avg_pool3d(torch.tanh(self.conv(x)), (2, 2, 2)).flatten(1)
        return self.head(h)


class _FakeInception(nn.Module):
    """Same call as inception-2015-12-05.pt: (N,3,H,W) values in [0,255], return_features flag."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, stride=2)
        self.head = nn.Linear(16 * 4, 64)

    def forward(self, img: torch.Tensor, return_features: bool = False):
        if not return_features:
            raise RuntimeError("unexpected detector flags")
        if float(img.min()) < 0.0 or float(img.max()) > 255.0 or float(img.max()) <= 1.0:
            raise RuntimeError("expected values in [0, 255]")
        x = F.interpolate(img / 128.0 - 1.0, size=(29, 29), mode="bilinear", align_corners=False)
        return self.head(F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 2).flatten(1))


@pytest.fixture(scope="module")
def detector_files(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("detectors")
    i3d, inception = folder / "i3d_torchscript.pt", folder / "inception.pt"
    torch.jit.save(torch.jit.script(_FakeI3D().eval()), str(i3d))
    torch.jit.save(torch.jit.script(_FakeInception().eval()), str(inception))
    return i3d, inception


@pytest.fixture(scope="module")
def videos():
    """Smooth random videos (24, 3, 4, 16, 16) in [-1, 1]."""
    gen = torch.Generator().manual_seed(1)
    base = torch.rand(24, 3, 4, 4, 4, generator=gen) * 2 - 1
    return F.interpolate(base, size=(4, 16, 16), mode="trilinear", align_corners=False)


def _distort(v: torch.Tensor, level: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    return (v + level * torch.randn(v.shape, generator=gen)).clamp(-1, 1)


def test_detector_path_errors(tmp_path):
    with pytest.raises(ValueError, match="no file given"):
        FrechetVideoDistance(None)
    with pytest.raises(ValueError, match="not found"):
        load_torchscript_detector(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="not a TorchScript"):
        load_torchscript_detector(bad)


def test_fvd_zero_for_identical_and_grows_with_distortion(detector_files, videos):
    i3d, _ = detector_files
    fvd = FrechetVideoDistance(i3d, batch_size=8)
    fvd.update(real=videos, fake=videos)
    assert fvd.real.num_items == 24 and fvd.real.mean.shape == (400,)
    same = fvd.compute()
    values = []
    for level in (0.05, 0.2, 0.6):
        fvd.fake = type(fvd.fake)()
        fvd.update(fake=_distort(videos, level))
        values.append(fvd.compute())
    scale = np.trace(fvd.real.mean_cov()[1])
    assert abs(same) < 1e-6 * scale
    assert 100 * abs(same) < values[0] < values[1] < values[2], (same, values)


def test_fvd_streaming_equals_one_batch(detector_files, videos):
    i3d, _ = detector_files
    fake = _distort(videos, 0.3)
    one = FrechetVideoDistance(i3d, batch_size=64)
    one.update(real=videos, fake=fake)
    streamed = FrechetVideoDistance(load_torchscript_detector(i3d), batch_size=5)
    for start in range(0, 24, 7):
        streamed.update(real=videos[start : start + 7])
        streamed.update(fake=fake[start : start + 7])
    assert streamed.compute() == pytest.approx(one.compute(), rel=1e-6)


def test_fvd_value_range_01_equals_minus1_1(detector_files, videos):
    i3d, _ = detector_files
    fake = _distort(videos, 0.3)
    a = FrechetVideoDistance(i3d)
    a.update(real=videos, fake=fake)
    b = FrechetVideoDistance(i3d, value_range=(0.0, 1.0))
    b.update(real=(videos + 1) / 2, fake=(fake + 1) / 2)
    assert b.compute() == pytest.approx(a.compute(), rel=1e-6)
    with pytest.raises(ValueError, match="B, 3, T, H, W"):
        a.update(real=videos[:, :, 0])


def test_rfid_counts_every_frame_and_grows_with_distortion(detector_files, videos):
    _, inception = detector_files
    fid = FrechetInceptionDistance(inception)
    fid.update(real=videos, fake=videos)
    assert fid.real.num_items == 24 * 4 and fid.real.mean.shape == (64,)
    same = fid.compute()
    values = []
    for level in (0.1, 0.5):
        fid.fake = type(fid.fake)()
        fid.update(fake=_distort(videos, level))
        values.append(fid.compute())
    assert abs(same) < 1e-6 * np.trace(fid.real.mean_cov()[1])
    assert 100 * abs(same) < values[0] < values[1], (same, values)
    # images (B, 3, H, W) go straight in: the frames of video 0..23 at t=0 as a batch of images
    img = FrechetInceptionDistance(inception)
    img.update(real=videos[:, :, 0])
    assert img.real.num_items == 24


def test_to_uint8_levels():
    x = torch.tensor([-1.0, -0.999, 0.0, 1.0, 1.5])
    np.testing.assert_array_equal(to_uint8_levels(x, (-1.0, 1.0)).numpy(), [0, 0, 128, 255, 255])


def test_two_samples_rank_one_covariances_exact_and_never_negative():
    """With two samples per set both covariances are rank one, ``S = u u^T`` with ``u = (x1 - x0) / sqrt(2)``,
    so ``tr((S1 S2)^{1/2}) = |u . v|`` and the distance has a closed form; round-off in the 398 zero
    eigenvalues must not pull it below it (or below zero)."""
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1e-1, 1.0):
        a = rng.normal(size=(2, 400)) * 3
        b = a + rng.normal(size=(2, 400)) * scale
        u, v = (a[1] - a[0]) / np.sqrt(2), (b[1] - b[0]) / np.sqrt(2)
        dm = a.mean(0) - b.mean(0)
        exact = dm @ dm + u @ u + v @ v - 2 * abs(u @ v)
        got = frechet_distance_from_features(a, b)
        assert got >= 0 and abs(got - exact) <= 1e-6 * (u @ u) + 1e-9, (scale, got, exact)
    assert 0 <= frechet_distance_from_features(a, a) < 1e-9
