"""Training checkpoints: atomic ``torch.save`` files, read back with ``weights_only=True``.

A checkpoint folder holds ``epoch_XXX.pt`` (end of an epoch) and ``step_XXXXXXX.pt`` (inside an
epoch) files and ``latest.json``, which names the newest file and lists the files in writing
order. Every file is written to a temporary name and renamed, so a crash never leaves a truncated
checkpoint behind and ``latest.json`` always names a complete one.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from pecop_lib.atomic import atomic_path, atomic_write_json, read_json

CHECKPOINT_FORMAT = "pecop-train-checkpoint/1"
LATEST_FILE = "latest.json"
_INDEX_FIX = "delete it and resume from a checkpoint file named explicitly, or start the run again"


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, containers) atomically with ``torch.save``.

    ``torch.save`` writes through a Python file object, so that a full disk surfaces as
    ``OSError(ENOSPC)`` (reported clearly by :func:`~pecop_lib.atomic.atomic_path`, the previous
    checkpoint untouched) instead of torch's opaque ``unexpected pos`` error for a file path.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, handle)
    return Path(path)


def remove_partial_writes(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of writes that a killed process left in ``folder``.

    :func:`~pecop_lib.atomic.atomic_path` writes ``.<name>.<random>.tmp`` and renames it; a process
    killed mid-write leaves that file behind (never a truncated checkpoint under its real name).
    Call this only when no other process writes into ``folder`` (e.g. when resuming).

    Returns:
        The files removed.
    """
    stale = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``torch.load(weights_only=True)``).

    Raises:
        FileNotFoundError: If the file is missing.
        ValueError: If it cannot be unpickled safely or is not a pecop training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the run folder or start without resume")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"cannot read checkpoint {path} with weights_only=True ({exc}): it is truncated, corrupt or holds "
            "objects other than tensors and plain data; resume from another checkpoint file of the run or start again"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a pecop training checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})")
    return state


def latest_checkpoint(folder: str | os.PathLike[str]) -> Path | None:
    """The newest checkpoint named by ``folder/latest.json``, or ``None`` if none was recorded.

    Raises:
        FileNotFoundError: If ``latest.json`` names a file that no longer exists.
    """
    index = Path(folder) / LATEST_FILE
    if not index.is_file():
        return None
    path = Path(folder) / read_json(index, fix=_INDEX_FIX)["latest"]
    if not path.is_file():
        raise FileNotFoundError(f"{index} names {path.name}, which is missing; pass the checkpoint file explicitly")
    return path


def record_checkpoint(folder: str | os.PathLike[str], name: str, *, keep_last: int | None = None) -> list[Path]:
    """Name ``name`` as the newest checkpoint in ``latest.json`` and prune old files.

    Args:
        folder: The checkpoint folder.
        name: File name of the checkpoint just written.
        keep_last: Keep only this many most recent checkpoint files (``None``: keep all).

    Returns:
        The files removed.
    """
    folder = Path(folder)
    index = folder / LATEST_FILE
    files = read_json(index, fix=_INDEX_FIX)["files"] if index.is_file() else []
    files = [f for f in files if f != name] + [name]
    removed: list[Path] = []
    if keep_last is not None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        for old in files[:-keep_last]:
            (folder / old).unlink(missing_ok=True)
            removed.append(folder / old)
        files = files[-keep_last:]
    atomic_write_json(index, {"latest": name, "files": files})
    return removed
