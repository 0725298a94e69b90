"""Seeding and exact save/restore of every random number generator a training step may touch.

A resumed run continues bit-for-bit only if the Python, NumPy, torch CPU and CUDA generators
resume where they stopped; :func:`capture_rng_state` returns them in a form that
``torch.load(..., weights_only=True)`` accepts (tensors, ints, floats, strings).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Snapshot of the Python, NumPy, torch CPU and (if CUDA is initialised) CUDA generators."""
    version, mt_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": torch.tensor(mt_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generators from :func:`capture_rng_state`'s snapshot.

    Raises:
        ValueError: If the snapshot holds CUDA states for more devices than are visible now.
    """
    python = state["python"]
    random.setstate((python["version"], tuple(int(x) for x in python["state"].tolist()), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["name"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state["cuda"]
    if cuda_states:
        if len(cuda_states) > torch.cuda.device_count():
            raise ValueError(
                f"the checkpoint holds CUDA generator states of {len(cuda_states)} devices but "
                f"{torch.cuda.device_count()} are visible; resume on the same number of GPUs"
            )
        torch.cuda.set_rng_state_all(cuda_states)
