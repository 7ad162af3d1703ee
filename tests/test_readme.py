"""The README's Python examples run as written (those that need no file a user must bring)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: examples that start from a file the reader downloads (an Open-MAGVIT2 checkpoint)
NEEDS_A_DOWNLOAD = ("downloaded.ckpt",)


def python_examples() -> list[tuple[int, str]]:
    """(line, code) of every ```python block of README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)
    ]


def test_readme_has_python_examples():
    examples = python_examples()
    assert len(examples) >= 4 and any("VideoTokenizer" in code for _, code in examples)


@pytest.mark.parametrize(
    "line, code",
    [e for e in python_examples() if not any(name in e[1] for name in NEEDS_A_DOWNLOAD)],
    ids=lambda v: f"line{v}" if isinstance(v, int) else "",
)
def test_readme_python_example_runs(line: int, code: str, tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, f"README.md line {line}:\n{run.stderr[-2000:]}"
