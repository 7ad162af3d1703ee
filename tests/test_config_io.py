"""Configs round-trip through dicts/YAML and accept typed ``--set`` overrides."""

from dataclasses import dataclass, field

import pytest

from magvit2.config_io import apply_overrides, from_dict, load_yaml, save_yaml, to_dict


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
