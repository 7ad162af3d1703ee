"""The README's Python examples run as written (those that need no file a user must bring), and every
documented ``magvit2`` command is one the CLI accepts."""

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


def shell_commands() -> list[tuple[str, int, str]]:
    """(file, line, command) of every ``magvit2 ...`` command in the ```bash blocks of README.md and
    docs/*.md: continuation lines joined, comments and a leading ``.venv/bin/`` dropped."""
    commands = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for block in re.finditer(r"^```bash\n(.*?)^```", text, re.S | re.M):
            line = text[: block.start()].count("\n") + 2  # the block's first line
            pending, start = "", line
            for offset, raw in enumerate(block.group(1).splitlines()):
                if not pending:
                    start = line + offset
                pending += raw.rstrip().removesuffix("\\") + " "
                if raw.rstrip().endswith("\\"):
                    continue
                for part in pending.split("&&"):
                    part = part.split(" #")[0].strip().removeprefix(".venv/bin/")
                    if part.startswith("magvit2 "):
                        commands.append((path.name, start, " ".join(part.split())))
                pending = ""
    return commands


def _placeholder(command: str) -> bool:
    """Synopsis lines (``[--set key=value ...]``, ``[--ema | --no-ema]``) are not runnable as written."""
    return "[" in command.replace("=[", "").replace("'[", "")


def test_docs_have_shell_commands():
    commands = shell_commands()
    assert sum(c.startswith("magvit2 train") for _, _, c in commands) >= 8
    assert any(c.startswith("magvit2 reconstruct") for _, _, c in commands)


@pytest.mark.parametrize(
    "where, line, command", [pytest.param(*c, id=f"{c[0]}:{c[1]}") for c in shell_commands()]
)
def test_documented_command_parses(where: str, line: int, command: str):
    """Every documented command is accepted by the real parser (options that exist, values of the
    right type); a ``train`` command's config and ``--set`` overrides also load, its model (with
    ``model.config``) builds and its ``model.freeze`` names match parameters."""
    import shlex

    from magvit2 import VideoTokenizer
    from magvit2.cli.main import build_parser
    from magvit2.training.config import load_train_config, tokenizer_config
    from magvit2.training.trainer import freeze_parameters

    if _placeholder(command):
        pytest.skip("a synopsis line")
    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        raise AssertionError(f"{where} line {line}: the parser refuses {command!r}") from exit_
    if args.command != "train" or args.config is None:
        return
    assert (ROOT / args.config).is_file(), f"{where} line {line}: no config {args.config} in the repository"
    cfg = load_train_config(ROOT / args.config, args.overrides)
    model = VideoTokenizer(tokenizer_config(cfg))
    assert freeze_parameters(model, cfg.model.freeze) >= (1 if cfg.model.freeze else 0)
