"""Notebook robustness: every notebook, run twice into the same output folder, on a synthetic twin.

The twin is a synthetic world in the official layouts, written to a temporary folder and passed as
``DATA_ROOT`` (what a user does with real data). It is smaller than the smoke world and has another
seed (other split sizes, other videos), which also keeps this second pass over the notebooks short. Each notebook runs twice in a row into the same
output folder with a shared artifact cache: the second run takes the load path of every
load-or-train step (pretraining artifacts, fine-tuning results) and must succeed with the same
results. At the end, no notebook has generated the default synthetic world: they all read the twin.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _reliability_support import REPO_ROOT, read_json, without_timing

from pecop_lib.data.synthetic import WorldSpec, generate_world
from pecop_lib.environment import environ
from pecop_lib.notebooks import discover_notebooks, run_notebooks

NOTEBOOKS = discover_notebooks(REPO_ROOT / "notebooks")

TWIN_SPEC = WorldSpec(size=32, aqa_videos=8, jigsaws_trials=1, action_videos=2, action_frames=16, seed=1)

RERUN_CHANGES = ("trained", "cached", "generation", "seconds", "_per_s")
"""Metric keys (substrings) that may differ on a rerun: trained or loaded, generation reports, wall-clock times."""

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Iterator[Path]:
    """A fresh artifact cache shared by the module's notebook runs (kernels inherit the environment)."""
    folder = tmp_path_factory.mktemp("notebook-twin-cache")
    with environ(PECOP_CACHE_DIR=str(folder)):
        yield folder


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return generate_world(tmp_path_factory.mktemp("twin") / "data", TWIN_SPEC).root


def comparable(metrics: Any) -> Any:
    """Metrics without wall-clock timings and without the keys of :data:`RERUN_CHANGES`."""
    if isinstance(metrics, dict):
        return {k: comparable(v) for k, v in without_timing(metrics).items() if not any(c in k for c in RERUN_CHANGES)}
    if isinstance(metrics, list):
        return [comparable(v) for v in metrics]
    return metrics


def run_twice(path: Path, out: Path, twin: Path) -> tuple[dict, dict, list[str]]:
    """Run one notebook twice into ``out`` with ``DATA_ROOT`` = the twin; return both metrics and the figures."""
    metrics = []
    for _ in range(2):
        report = run_notebooks("smoke", only=[path.stem], device="cpu", out=out, parameters={"DATA_ROOT": str(twin)},
                               progress=False)
        assert report.status == "ok"
        metrics.append(read_json(out / path.stem / "metrics.json"))
    figures = sorted(p.name for p in (out / path.stem / "figures").glob("*.png"))
    return metrics[0], metrics[1], figures


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_twice_on_a_synthetic_twin(path: Path, twin: Path, cache: Path, tmp_path: Path) -> None:
    first, second, figures = run_twice(path, tmp_path, twin)
    assert figures, f"{path.name} saved no figure"
    assert first["preset"] == second["preset"] == "smoke"
    assert comparable(second) == comparable(first), f"{path.name}: the rerun (load path) changed its results"
    assert not (cache / "synthetic").exists(), f"{path.name} generated the default world instead of reading DATA_ROOT"
