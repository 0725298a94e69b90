"""Shared pieces of the reliability suite: a tiny synthetic world, ``pecop`` subprocesses, comparisons.

There is deliberately no ``conftest.py`` in ``tests/reliability/``: conftest modules outside a
package all import as ``conftest`` and would shadow ``tests/conftest.py`` (``from conftest import
REPO_ROOT`` in other test files). The world is generated once per test session under pytest's base
temporary folder and reused by every module (``load_world`` finds it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pecop_lib.data.synthetic import World, WorldSpec, generate_world
from pecop_lib.data.synthetic.world import load_world
from pecop_lib.train import StepOutput, Trainer

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
STALLING_PECOP = HERE / "_stalling_pecop.py"

WORLD_SPEC = WorldSpec(size=32, aqa_videos=12, jigsaws_trials=1, action_videos=2, action_frames=16, seed=11)
WORLD_DATASETS = ("MTL-AQA", "FineDiving", "JIGSAWS", "PD4T", "Kinetics-synth")

TIMING_KEYS = frozenset({"seconds", "samples_per_s", "wall_s", "peak_memory_bytes", "clips_per_s", "seconds_per_epoch"})
"""Keys whose values are wall-clock measurements: excluded when runs are compared."""


def reliability_world(base: Path) -> World:
    """The suite's tiny world (MTL-AQA, FineDiving, JIGSAWS, PD4T, action set) under ``base``, made once."""
    root = base / "reliability-world"
    return load_world(root) or generate_world(root, WORLD_SPEC, datasets=WORLD_DATASETS)


def without_timing(value: Any) -> Any:
    """``value`` with every :data:`TIMING_KEYS` entry removed from nested dicts (for run comparisons)."""
    if isinstance(value, Mapping):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def read_json(path: Path) -> Any:
    """Parse a JSON file (raises if it is truncated: every pecop JSON is written atomically)."""
    return json.loads(path.read_text())


def pecop_env(cache: Path, **extra: str) -> dict[str, str]:
    """Environment of a ``pecop`` subprocess: its own cache, headless output, one thread per process."""
    return {**os.environ, "PECOP_CACHE_DIR": str(cache), "PECOP_HEADLESS": "1", "OMP_NUM_THREADS": "1", **extra}


def run_pecop(args: Sequence[str], env: Mapping[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``pecop ARGS`` to completion (as ``python -m pecop_lib``)."""
    return subprocess.run([sys.executable, "-m", "pecop_lib", *args], cwd=REPO_ROOT, env=dict(env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def run_until_stall_then_kill(args: Sequence[str], env: Mapping[str, str], stall: str, marker: Path,
                              timeout: float = 600) -> str:
    """Start ``pecop ARGS`` with one write stalled (see ``_stalling_pecop.py``), SIGKILL it once it stalls.

    Args:
        args: ``pecop`` arguments.
        env: The environment (:func:`pecop_env`).
        stall: ``"before:<file>"``, ``"during:<file>"`` (checkpoint files) or ``"before:<file>#<n>"``
            (a JSON record holding ``n`` epochs).
        marker: File the stalled process creates; it is killed as soon as the file exists.
        timeout: Seconds to wait for the stall.

    Returns:
        The process's output up to the kill.

    Raises:
        AssertionError: If the process ends (or times out) without stalling.
    """
    marker.unlink(missing_ok=True)
    log = marker.with_suffix(".log")
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, str(STALLING_PECOP), *args], cwd=REPO_ROOT, stdout=handle, stderr=subprocess.STDOUT,
            env={**env, "RELIABILITY_STALL": stall, "RELIABILITY_STALL_MARKER": str(marker)},
        )
        deadline = time.monotonic() + timeout
        try:
            while not marker.exists():
                if proc.poll() is not None:
                    raise AssertionError(f"pecop {args} ended (status {proc.returncode}) before stalling at {stall}:\n"
                                         f"{log.read_text()[-3000:]}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"pecop {args} did not reach {stall} within {timeout} s")
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    return log.read_text()


HOLDER = """
import sys, time
from pecop_lib.run_lock import run_lock
with run_lock(sys.argv[1], command="the holder test run"):
    print("held", flush=True)
    time.sleep(600)
"""


def hold_folder(folder: Path) -> subprocess.Popen[str]:
    """Start a process that takes ``folder``'s run lock and sleeps (kill it when done); returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    line = proc.stdout.readline() if proc.stdout is not None else ""
    if line.strip() != "held":
        proc.kill()
        raise AssertionError(f"the lock holder did not start: {line}{proc.communicate()[0][-2000:]}")
    return proc


def run_until_stall_then_signal(args: Sequence[str], env: Mapping[str, str], stall: str, marker: Path,
                                sig: int, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Like :func:`run_until_stall_then_kill`, but send ``sig`` (e.g. SIGINT, Ctrl-C) and let the process end."""
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(STALLING_PECOP), *args], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**env, "RELIABILITY_STALL": stall, "RELIABILITY_STALL_MARKER": str(marker)})
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError(f"pecop {args} did not stall at {stall} (status {proc.returncode}):\n{err[-3000:]}")
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tiny_trainer(run_dir: Path) -> Trainer:
    """A two-weight regression trained by the real :class:`Trainer` (checkpoints, resume, metrics)."""
    torch.manual_seed(0)
    model = nn.Linear(2, 1)

    def step(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        x, y = batch
        return StepOutput(((m(x).squeeze(-1) - y) ** 2).mean(), count=len(y))

    return Trainer(model, step, torch.optim.SGD(model.parameters(), lr=0.1), run_dir=run_dir, device="cpu",
                   show_progress=False)


def tiny_data(epoch: int, *, nan: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of the epoch (a pure function of ``epoch``); ``nan`` poisons the first input."""
    g = torch.Generator().manual_seed(epoch)
    batches = [(torch.randn(4, 2, generator=g), torch.randn(4, generator=g)) for _ in range(2)]
    if nan:
        batches[0][0][0, 0] = float("nan")
    return batches
