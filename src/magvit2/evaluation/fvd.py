"""FVD (I3D features of clips) and rFID (Inception features of frames) from local TorchScript detectors.

Nothing is downloaded: the user passes the path of the detector file.

* FVD uses the Kinetics-400 I3D TorchScript file ``i3d_torchscript.pt`` of StyleGAN-V and most FVD code.
  It is called as ``detector(videos, rescale=False, resize=True, return_features=True)`` on float videos
  (B, 3, T, H, W) in [-1, 1]; it resizes frames to 224x224 itself and returns (B, 400) pre-softmax
  features. (StyleGAN-V feeds uint8 values with ``rescale=True``, which maps them to [-1, 1] inside the
  network; we quantise to the same 256 levels and pass [-1, 1] with ``rescale=False``.)
* rFID uses the Inception-v3 TorchScript file ``inception-2015-12-05.pt`` of StyleGAN2-ADA / clean-fid,
  called as ``detector(frames, return_features=True)`` on (N, 3, H, W) values in [0, 255] (uint8 levels);
  it resizes to 299x299 itself and returns (N, 2048) pool features. Every frame of every video counts as
  one image.

Both keep two :class:`~magvit2.evaluation.frechet.FeatureStats` (real, reconstructed) that accumulate
over batches, so a dataset can be streamed through :meth:`update` and scored once with :meth:`compute`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from einops import rearrange

from magvit2.evaluation.frechet import FeatureStats, frechet_distance

__all__ = [
    "load_torchscript_detector",
    "to_uint8_levels",
    "FrechetDetectorDistance",
    "FrechetVideoDistance",
    "FrechetInceptionDistance",
]


def load_torchscript_detector(path: str | Path | None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a TorchScript detector network from a local file, in eval mode on ``device``."""
    if path is None or str(path) == "":
        raise ValueError(
            "detector path: no file given. FVD needs the I3D TorchScript file (i3d_torchscript.pt) and rFID "
            "the Inception TorchScript file (inception-2015-12-05.pt); nothing is downloaded, pass their "
            "local paths."
        )
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"detector path: expected an existing TorchScript file, got {str(path)!r} (not found)"
        )
    try:
        with (
            warnings.catch_warnings()
        ):  # torch >= 2.10 flags TorchScript as deprecated; the files are TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path), map_location=device)
    except RuntimeError as err:
        raise ValueError(f"detector path: {str(path)!r} is not a TorchScript file ({err})") from err
    return module.eval()


def to_uint8_levels(x: torch.Tensor, value_range: tuple[float, float]) -> torch.Tensor:
    """Values in ``value_range`` -> float32 integer levels 0..255 (rounded, clamped), same shape."""
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range: expected (low, high) with high > low, got {value_range}")
    return ((x.float() - lo) * (255.0 / (hi - lo))).round().clamp(0, 255)


class FrechetDetectorDistance:
    """Fréchet distance between detector features of real and reconstructed data (base of FVD and rFID).

    Subclasses implement :meth:`features` (data batch -> (N, D) float features).
    """

    def __init__(
        self,
        detector: torch.nn.Module | str | Path | None,
        value_range: tuple[float, float] = (-1.0, 1.0),
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> None:
        if not isinstance(detector, torch.nn.Module):
            detector = load_torchscript_detector(detector, device)
        self.detector = detector
        self.value_range = value_range
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.real = FeatureStats()
        self.fake = FeatureStats()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Detector features of one batch, (N, D)."""
        raise NotImplementedError

    @torch.no_grad()
    def _add(self, stats: FeatureStats, x: torch.Tensor) -> None:
        for start in range(0, x.shape[0], self.batch_size):
            stats.update(self.features(x[start : start + self.batch_size].to(self.device)).double().cpu())

    def update(self, real: torch.Tensor | None = None, fake: torch.Tensor | None = None) -> None:
        """Add a batch of real and/or reconstructed (generated) data to the running statistics."""
        if real is not None:
            self._add(self.real, real)
        if fake is not None:
            self._add(self.fake, fake)

    def compute(self) -> float:
        """Fréchet distance between the accumulated real and reconstructed feature Gaussians."""
        return frechet_distance(*self.real.mean_cov(), *self.fake.mean_cov())

    def reset(self) -> None:
        """Forget all accumulated features."""
        self.real, self.fake = FeatureStats(), FeatureStats()


class FrechetVideoDistance(FrechetDetectorDistance):
    """FVD with the I3D TorchScript detector. Data: videos (B, 3, T, H, W) in ``value_range``.

    >>> fvd = FrechetVideoDistance("/path/to/i3d_torchscript.pt")  # doctest: +SKIP
    >>> fvd.update(real=videos, fake=reconstructions); fvd.compute()  # doctest: +SKIP
    """

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Videos (B, 3, T, H, W) -> I3D features (B, 400)."""
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"FVD: expected videos (B, 3, T, H, W), got shape {tuple(x.shape)}")
        v = to_uint8_levels(x, self.value_range) / 127.5 - 1.0
        return self.detector(v, rescale=False, resize=True, return_features=True)


class FrechetInceptionDistance(FrechetDetectorDistance):
    """rFID with the Inception TorchScript detector on every frame.

    Data: images (B, 3, H, W) or videos (B, 3, T, H, W) in ``value_range``.
    """

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B,3,H,W) or videos (B,3,T,H,W) -> Inception features (B or B*T, 2048)."""
        if x.ndim == 5:
            x = rearrange(x, "b c t h w -> (b t) c h w")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"rFID: expected images (B, 3, H, W) or videos (B, 3, T, H, W), got {tuple(x.shape)}"
            )
        return self.detector(to_uint8_levels(x, self.value_range), return_features=True)
