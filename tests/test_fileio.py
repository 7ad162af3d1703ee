"""atomic_path: a file or folder is either the old version or the complete new one, never partial."""

from __future__ import annotations

from pathlib import Path

import pytest

from magvit2.fileio import atomic_path


def test_file_is_replaced_only_when_the_write_completes(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed half-way")
    assert path.read_text() == "old"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp.name.startswith(".")
        tmp.write_text("new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_folder_replaces_an_existing_folder_only_when_asked(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "a.txt").write_text("old")
    with pytest.raises(OSError), atomic_path(path) as tmp:  # a rename cannot replace a full folder
        tmp.mkdir()
        (tmp / "b.txt").write_text("new")
    assert [p.name for p in path.iterdir()] == ["a.txt"]
    with atomic_path(path, replace_dir=True) as tmp:
        tmp.mkdir()
        (tmp / "b.txt").write_text("new")
    assert [p.name for p in path.iterdir()] == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_no_torch_load_can_unpickle():
    """Every ``torch.load`` call in the package and the benchmarks passes ``weights_only=True``: on
    torch < 2.6 (which the package allows) the default unpickles arbitrary code."""
    import ast

    root = Path(__file__).resolve().parents[1]
    unsafe = []
    for path in [*(root / "src").rglob("*.py"), *(root / "benchmarks").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "load" and getattr(node.func.value, "id", None) == "torch":
                safe = any(
                    k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords
                )
                if not safe:
                    unsafe.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not unsafe, unsafe
