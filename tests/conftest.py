"""Shared test setup: the ``--gpu`` switch, the real-annotation folder, headless plotting."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import pytest

from pecop_lib.environment import environ

matplotlib.use("Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--gpu", action="store_true", default=False,
                     help="run tests marked gpu; they then FAIL (not skip) when no CUDA GPU is usable")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--gpu"):
        return
    skip = pytest.mark.skip(reason="GPU test: run with --gpu on a machine with a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    """Close every matplotlib figure a test left open (only where the test imported pyplot)."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")


@contextlib.contextmanager
def cache_env(folder: Path) -> Iterator[Path]:
    """Set ``PECOP_CACHE_DIR`` to ``folder`` inside the block (kernels started there inherit it)."""
    with environ(PECOP_CACHE_DIR=str(folder)):
        yield folder


@pytest.fixture(scope="session")
def notebook_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder for every test that runs the committed notebooks: their smoke artifacts are
    trained once per session, by whichever test runs first."""
    return tmp_path_factory.mktemp("pecop-notebook-cache")


@pytest.fixture
def notebook_cache(notebook_cache_dir: Path) -> Iterator[Path]:
    """``PECOP_CACHE_DIR`` set to the session's notebook cache for one test."""
    with cache_env(notebook_cache_dir) as folder:
        yield folder


@pytest.fixture(scope="session")
def real_annotations() -> Path:
    """The published MTL-AQA/JIGSAWS annotation files (``$PECOP_REAL_ANNOTATIONS`` or ``../shared/...``)."""
    root = Path(os.environ.get("PECOP_REAL_ANNOTATIONS") or REPO_ROOT.parent / "shared" / "data" / "real-annotations")
    if not root.is_dir():
        pytest.skip(f"real annotation files not found at {root}; set PECOP_REAL_ANNOTATIONS to their folder")
    return root
