"""The console script, the packaging metadata, and the GPU presence check."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO_ROOT


def _pecop_command() -> list[str]:
    script = Path(sys.executable).with_name("pecop")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pecop_lib"]


@pytest.mark.parametrize("args", [["--help"], ["notebooks", "run", "--help"], ["--version"]])
def test_help_works(args):
    proc = subprocess.run([*_pecop_command(), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "pecop" in proc.stdout


def test_console_script_declared():
    meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["pecop"] == "pecop_lib.cli:main"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    text = (REPO_ROOT / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]
    env = [ln.strip()[2:].strip() for ln in pip_section.splitlines() if ln.strip().startswith("- ")]
    env = [e for e in env if not e.startswith("-e ")]
    assert sorted(r.replace(" ", "") for r in env) == sorted(d.replace(" ", "") for d in deps)
    assert "python=3.11" in text and "-e .[test]" in text


def test_torch_29_is_excluded():
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_req = next(d for d in deps if _name(d) == "torch")
    assert ">=2.10" in torch_req


def test_required_packages_import():
    for module in ("torch", "torchvision", "scipy", "matplotlib", "seaborn", "decord", "papermill", "ipykernel",
                   "ipywidgets", "safetensors", "tqdm", "jupyterlab"):
        __import__(module)
    assert shutil.which("git") is not None


@pytest.mark.gpu
def test_gpu_present():
    """With --gpu this must fail on a machine without a usable CUDA GPU (no silent CPU fallback)."""
    import torch

    assert torch.cuda.is_available(), "--gpu was given but torch sees no CUDA GPU"
    from pecop_lib.config import resolve_device

    assert resolve_device("auto").type == "cuda"
