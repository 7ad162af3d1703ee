"""Content any tokenizer must reproduce: flat colours, ramps and fades to black.

Each function makes the clip, runs ``model.encode`` then ``model.decode`` and returns plain numbers,
so a test can hold them to bars and a benchmark can print them.
"""

from __future__ import annotations

import numpy as np
import torch

from magvit2.data.video_io import to_tensor, to_uint8

#: Five grey levels and six saturated colours (uint8 RGB).
FLAT_COLOURS = {
    "black": (0, 0, 0),
    "dark grey": (64, 64, 64),
    "mid grey": (128, 128, 128),
    "light grey": (192, 192, 192),
    "white": (255, 255, 255),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
}


def reconstruct(model, video: np.ndarray) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` -> the model's uint8 reconstruction of it (whole clip in one pass)."""
    with torch.inference_mode():
        return to_uint8(model.decode(model.encode(to_tensor(video)[None]))[0])


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 clips ``(T, H, W, 3)``: per frame, averaged over frames (99 if equal)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 255.0**2 * 10**-9.9))))


def channel_mean_error(rec: np.ndarray, src: np.ndarray) -> list[float]:
    """Mean of ``rec - src`` per channel over the whole clip (R, G, B), in 0-255 units: a colour cast."""
    diff = rec.astype(np.float64) - src.astype(np.float64)
    return [round(float(v), 3) for v in diff.reshape(-1, 3).mean(0)]


def flat_clips(frames: int = 17, size: int = 64) -> dict[str, np.ndarray]:
    """One flat clip per colour of :data:`FLAT_COLOURS`."""
    return {
        name: np.broadcast_to(np.array(rgb, np.uint8), (frames, size, size, 3)).copy()
        for name, rgb in FLAT_COLOURS.items()
    }


def ramp_clips(frames: int = 17, size: int = 64) -> dict[str, np.ndarray]:
    """A horizontal and a vertical grey ramp from 0 to 255 across the frame."""
    ramp = np.round(np.linspace(0, 255, size)).astype(np.uint8)
    horizontal = np.broadcast_to(ramp[None, None, :, None], (frames, size, size, 3)).copy()
    return {"horizontal ramp": horizontal, "vertical ramp": horizontal.transpose(0, 2, 1, 3).copy()}


def fade_clip(image: np.ndarray, frames: int = 33) -> tuple[np.ndarray, np.ndarray]:
    """``image`` uint8 ``(H, W, 3)`` fading to black over the first quarter, black for the middle half,
    fading back in over the last quarter -> (clip, boolean mask of the black frames)."""
    q = frames // 4
    gain = np.ones(frames)
    gain[:q] = np.linspace(1, 0, q + 1)[:-1]
    gain[q : frames - q] = 0
    gain[frames - q :] = np.linspace(0, 1, q + 1)[1:]
    clip = np.round(image[None].astype(np.float64) * gain[:, None, None, None]).astype(np.uint8)
    return clip, gain == 0


def flat_report(model, frames: int = 17, size: int = 64) -> dict:
    """PSNR and per-channel mean error of every flat colour, as ``frames x size x size`` clips."""
    report = {}
    for name, clip in flat_clips(frames, size).items():
        rec = reconstruct(model, clip)
        report[name] = {"psnr": round(psnr_uint8(rec, clip), 2), "mean_error": channel_mean_error(rec, clip)}
    return report


def flat_grid_report(model, levels: int = 9, frames: int = 9, size: int = 32, batch: int = 64) -> dict:
    """PSNR of every flat colour on a ``levels`` x ``levels`` x ``levels`` grid of the RGB cube (each
    channel 0-255 in equal steps), as ``frames x size x size`` clips: the number of colours at 35 dB or
    more and under 30 dB, the mean PSNR with each colour capped at 40 dB, and the five worst colours.
    Unlike :func:`flat_report`'s eleven colours, this shows whether flat colour comes back in general."""
    steps = np.round(np.linspace(0, 255, levels)).astype(np.uint8)
    colours = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), -1).reshape(-1, 3)
    scores = []
    for part in np.array_split(colours, -(-len(colours) // batch)):
        clips = np.broadcast_to(part[:, None, None, None, :], (len(part), frames, size, size, 3))
        video = torch.stack([to_tensor(clip) for clip in clips])
        with torch.inference_mode():
            rec = to_uint8(model.decode(model.encode(video)))
        scores += [psnr_uint8(r, c) for r, c in zip(rec, clips, strict=True)]
    psnrs = np.array(scores)
    worst = np.argsort(psnrs)[:5]
    return {
        "colours": len(colours),
        "at_35_db": int((psnrs >= 35).sum()),
        "under_30_db": int((psnrs < 30).sum()),
        "mean_capped_40": round(float(np.minimum(psnrs, 40).mean()), 2),
        "worst": [{"rgb": colours[i].tolist(), "psnr": round(float(psnrs[i]), 2)} for i in worst],
    }


def sanity_report(model, image: np.ndarray | None = None, frames: int = 17, size: int = 64) -> dict:
    """PSNR of every flat colour and ramp, and, given an ``image``, how black the black frames of a fade
    through black come back (mean and max of the reconstruction there, 0-255)."""
    report: dict = {"flat": flat_report(model, frames, size), "ramp": {}}
    for name, clip in ramp_clips(frames, size).items():
        report["ramp"][name] = {"psnr": round(psnr_uint8(reconstruct(model, clip), clip), 2)}
    if image is not None:
        clip, black = fade_clip(image)
        rec = reconstruct(model, clip)
        report["fade"] = {
            "black_frames": int(black.sum()),
            "black_mean": round(float(rec[black].mean()), 3),
            "black_max": int(rec[black].max()),
            "psnr": round(psnr_uint8(rec, clip), 2),
        }
    return report
