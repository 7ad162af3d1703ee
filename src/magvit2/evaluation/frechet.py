"""Fréchet distance between Gaussians and a streaming mean/covariance accumulator (FID, FVD).

``d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2})``. The trace term is computed in float64
without a general matrix square root: ``tr((S1 S2)^{1/2}) = sum_i sqrt(lambda_i)`` where ``lambda_i`` are
the eigenvalues of the symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}`` (same spectrum as ``S1 S2``), and
``S1^{1/2}`` comes from a symmetric eigendecomposition. Eigenvalues within round-off of zero (below
``D * eps * max|lambda|``) count as zero, in both decompositions: with few samples the covariances are
rank-deficient, and the square roots of their round-off eigenvalues would otherwise add up to a
distance below zero. The result is never negative. This gives the same value as
``scipy.linalg.sqrtm`` (used by pytorch-fid and StyleGAN-V) without its complex-valued round-off and
without needing scipy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["frechet_distance", "FeatureStats", "frechet_distance_from_features"]

ArrayLike = np.ndarray | torch.Tensor


def _as_f64(a: ArrayLike, name: str) -> np.ndarray:
    """Tensor or array -> float64 numpy array."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def _clean_eigenvalues(vals: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix (D,) with those within round-off of zero (or below it) set to 0."""
    tol = len(vals) * np.finfo(np.float64).eps * max(float(np.abs(vals).max(initial=0.0)), 1e-300)
    return np.where(vals > tol, vals, 0.0)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a (numerically) PSD matrix (D,D) -> (D,D)."""
    vals, vecs = np.linalg.eigh((s + s.T) / 2)
    return (vecs * np.sqrt(_clean_eigenvalues(vals))) @ vecs.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Squared Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    mu1, mu2: (D,); sigma1, sigma2: (D, D) covariance matrices (numpy or torch). Returns a Python float.
    """
    mu1, mu2 = _as_f64(mu1, "mu1"), _as_f64(mu2, "mu2")
    s1, s2 = _as_f64(sigma1, "sigma1"), _as_f64(sigma2, "sigma2")
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            "frechet_distance: expected mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D), got "
            f"{mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}"
        )
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_sqrt = np.sqrt(_clean_eigenvalues(eig)).sum()
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt), 0.0)


@dataclass
class FeatureStats:
    """Streaming mean and covariance of feature vectors (float64), merged batch by batch (Chan et al.).

    ``update(features)`` takes (N, D); ``mean_cov()`` returns (mu (D,), sigma (D, D)) as numpy float64 with
    the unbiased covariance (``ddof=1``, like ``np.cov``; StyleGAN-V uses ``ddof=0``). Accumulating in
    several batches gives the same statistics as one batch of all features (up to float64 round-off).
    """

    num_items: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = field(default=None, repr=False)

    def update(self, features: ArrayLike) -> None:
        """Add a batch of features (N, D)."""
        x = _as_f64(features, "features")
        if x.ndim != 2:
            raise ValueError(f"FeatureStats.update: expected features of shape (N, D), got {x.shape}")
        if x.shape[0] == 0:
            return
        if self.mean is not None and x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"FeatureStats.update: expected D={self.mean.shape[0]} features, got {x.shape[1]}"
            )
        n_b = x.shape[0]
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        self._merge(n_b, mean_b, centred.T @ centred)

    def _merge(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> None:
        """Combine the running (n, mean, M2) with a batch's (n_b, mean_b, M2_b)."""
        if self.mean is None:
            self.num_items, self.mean, self.m2 = n_b, mean_b.copy(), m2_b.copy()
            return
        n_a = self.num_items
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + np.outer(delta, delta) * (n_a * n_b / n)
        self.num_items = n

    def merge(self, other: FeatureStats) -> None:
        """Add the statistics of another accumulator (e.g. from another process)."""
        if other.mean is not None:
            self._merge(other.num_items, other.mean, other.m2)

    def mean_cov(self, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Return (mu (D,), sigma (D, D)); sigma = M2 / (N - ddof)."""
        if self.mean is None or self.num_items - ddof <= 0:
            raise ValueError(f"FeatureStats.mean_cov: need more than {ddof} items, have {self.num_items}")
        return self.mean.copy(), self.m2 / (self.num_items - ddof)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays to save (e.g. ``np.savez``) and restore with :meth:`from_state_dict`."""
        if self.mean is None:
            raise ValueError("FeatureStats.state_dict: no features were added")
        return {"num_items": np.asarray(self.num_items), "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_state_dict(cls, state: dict[str, np.ndarray]) -> FeatureStats:
        """Inverse of :meth:`state_dict`."""
        return cls(
            int(state["num_items"]),
            np.asarray(state["mean"], np.float64),
            np.asarray(state["m2"], np.float64),
        )


def frechet_distance_from_features(a: ArrayLike, b: ArrayLike, ddof: int = 1) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D)."""
    sa, sb = FeatureStats(), FeatureStats()
    sa.update(a)
    sb.update(b)
    return frechet_distance(*sa.mean_cov(ddof), *sb.mean_cov(ddof))
