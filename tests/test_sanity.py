"""magvit2.evaluation.sanity's flat-colour grid, on a stand-in model whose error is known exactly."""

import math

import torch

from magvit2.evaluation.sanity import flat_grid_report


class Darker:
    """encode is the identity; decode darkens every channel by 8 levels of 255 (black stays black)."""

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return video

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return latent - 8 / 127.5


def test_flat_grid_scores_every_colour_of_the_cube_grid():
    """levels=2: the cube's 8 corners. A colour with k channels at 255 loses 8 levels on each of them:
    MSE 64 k / 3, so k=1 is at 34.84 dB (under 35), k=2 at 31.83, white (k=3) at 30.07; black is exact
    (99 dB, counted as 40)."""
    report = flat_grid_report(Darker(), levels=2, frames=5, size=8, batch=3)
    db = {k: 10 * math.log10(255**2 * 3 / (64 * k)) for k in (1, 2, 3)}
    assert report["colours"] == 8 and report["at_35_db"] == 1 and report["under_30_db"] == 0
    expected = (40 + 3 * db[1] + 3 * db[2] + db[3]) / 8
    assert abs(report["mean_capped_40"] - expected) < 0.01
    assert report["worst"][0] == {"rgb": [255, 255, 255], "psnr": round(db[3], 2)}
    assert {tuple(w["rgb"]) for w in report["worst"][1:4]} == {(0, 255, 255), (255, 0, 255), (255, 255, 0)}
