"""How loader worker processes start: from a clean fork server, not forked from a threaded parent.

PyTorch's :class:`~torch.utils.data.DataLoader` forks its workers by default on Linux. Forking a
process that already runs threads (OpenMP/MKL intra-op pools, tqdm's monitor thread, a Jupyter
kernel's threads) copies locks that another thread may hold at that instant; the worker can then
block forever on its first batch while the parent waits for it. Our CI met exactly that hang
(a worker of the device-augmentation test stuck for 30 minutes after many earlier tests had run).

Starting workers from a *fork server* avoids it: a single-threaded helper process, started once per
program with ``torch`` and ``pecop_lib`` already imported, forks every worker, so each starts in a
clean state and quickly (nothing is imported twice). Python 3.14 makes the fork server the default
on Linux for the same reason. The price is that the dataset, the collate function and the worker
init function are pickled to the workers, so they must be importable by module name: a class defined
in a notebook cell cannot be used with ``num_workers > 0`` (use ``num_workers=0`` or move it to a
module). Platforms without a fork server (Windows) use ``spawn``.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import BaseContext

PRELOAD: tuple[str, ...] = ("torch", "pecop_lib")
"""Modules the fork server imports once, so that workers forked from it start fast."""


def worker_context(num_workers: int) -> BaseContext | None:
    """Return the multiprocessing context for a DataLoader with ``num_workers`` workers.

    Args:
        num_workers: Loader worker processes; ``0`` loads in the calling process.

    Returns:
        ``None`` for ``num_workers == 0`` (no processes), else the fork-server context
        (``spawn`` where the platform has no fork server).

    Raises:
        ValueError: If ``num_workers`` is negative.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    if num_workers == 0:
        return None
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    multiprocessing.set_forkserver_preload(list(PRELOAD))  # takes effect when the server first starts
    return multiprocessing.get_context("forkserver")
