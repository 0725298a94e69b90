"""What this run stands on: Python, packages, torch/CUDA, the device and the git commit.

One function gathers it so that the notebook runner's ``manifest.json``, the overview notebook and
``pecop doctor`` report the same facts. :func:`environ` sets environment variables for a block (the
kernels and tools started inside it inherit them).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pecop_lib.config import resolve_device


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables inside the block and restore (or remove) them afterwards.

    ``with environ(PECOP_HEADLESS="1"): ...``; processes started inside inherit the values.
    """
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


TRACKED_PACKAGES: tuple[str, ...] = (
    "pecop",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "matplotlib",
    "seaborn",
    "decord",
    "av",
    "safetensors",
    "tqdm",
    "papermill",
    "nbclient",
    "ipykernel",
    "ipywidgets",
    "jupyterlab",
)
"""Distributions whose versions every run records."""


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` for a package that is not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(folder: str | Path | None = None) -> dict[str, Any]:
    """The git commit of the checkout holding ``folder`` (default: this package's source).

    Returns:
        ``{"commit": sha or None, "dirty": bool or None}``; ``None`` values when the code does not
        live in a git checkout (e.g. an installed wheel) or git is missing.
    """
    where = Path(folder) if folder is not None else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, check=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": bool(status.strip())}


def device_description(device: str = "auto") -> dict[str, Any]:
    """Resolve ``device`` and describe it.

    Returns:
        ``{"device": "cuda:0" | "cpu", "device_name": str, "gpu_memory_gib": float | None}``.

    Raises:
        pecop_lib.config.ConfigError: If CUDA is requested and absent.
    """
    import torch

    dev = resolve_device(device)
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        return {"device": str(dev), "device_name": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1)}
    cpu = platform.processor() or platform.machine()
    return {"device": "cpu", "device_name": f"CPU ({cpu}, {torch.get_num_threads()} threads)", "gpu_memory_gib": None}


def environment_report(device: str = "auto") -> dict[str, Any]:
    """Everything a result depends on besides the code and the data, as JSON-ready values.

    Args:
        device: The device spec of the run (see :func:`pecop_lib.config.resolve_device`).

    Returns:
        Python and platform strings, package versions, torch CUDA/cuDNN builds, the resolved
        device and its name, and the git commit.
    """
    import torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cudnn": cudnn,
        **device_description(device),
        "git": git_commit(),
    }
