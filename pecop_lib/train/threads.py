"""Intra-op threads of CPU training: one core for each loader worker, the rest for the model.

A loader worker process decodes and transforms clips on a core of its own (PyTorch runs each worker
with one intra-op thread). The training process meanwhile runs the model with ``torch``'s intra-op
thread pool, by default one thread per core. With ``W`` workers on ``C`` cores, ``W + C`` busy threads
then share ``C`` cores, and OpenMP threads that wait for each other while descheduled spin: on the
2-core development machine a training step with 2 workers and 2 intra-op threads ran about 6x
slower than with 1 thread (``benchmarks/RESULTS.md``).

:func:`cpu_training_threads` therefore runs CPU training with
``min(current, max(1, cores - workers))`` intra-op threads, where ``cores`` counts the cores this
process may run on (``os.sched_getaffinity``, else ``os.cpu_count()``), and restores the previous
count afterwards, also when training raises. It never *raises* the count above the current one:
``torch``'s default counts physical cores (fewer than the logical cores on SMT machines), and a lower
count is a deliberate choice (``OMP_NUM_THREADS``, ``torch.set_num_threads``, ``torchrun``'s one
thread per process) that training must keep. Without loader workers the count is left as it is.
GPU training is not touched: the model's work runs on the device.

The intra-op thread count can change the order of floating-point reductions, so on a CPU the same
seed gives bit-identical results for the same worker count and cores (a resume included); runs with
different worker counts may differ in the last bits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity where the platform has it, else ``os.cpu_count()``."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        return max(1, len(affinity(0)))
    return max(1, os.cpu_count() or 1)


def training_threads(loader_workers: int, *, current: int, cores: int) -> int:
    """Intra-op threads for CPU training next to ``loader_workers`` worker processes.

    Args:
        loader_workers: Loader worker processes running beside the training process.
        current: The process's intra-op thread count now (``torch.get_num_threads()``).
        cores: Cores available to the process (:func:`available_cores`).

    Returns:
        ``min(current, max(1, cores - loader_workers))``.

    Raises:
        ValueError: If ``loader_workers`` is negative or ``current`` / ``cores`` is below 1.
    """
    if loader_workers < 0:
        raise ValueError(f"loader_workers must be >= 0, got {loader_workers}")
    if current < 1 or cores < 1:
        raise ValueError(f"current threads and cores must be >= 1, got current={current}, cores={cores}")
    return min(current, max(1, cores - loader_workers))


@contextlib.contextmanager
def cpu_training_threads(device: torch.device, loader_workers: int) -> Iterator[int]:
    """Run the body with :func:`training_threads` intra-op threads on a CPU device; restore the count after.

    Args:
        device: The training device; on anything but ``cpu`` nothing changes.
        loader_workers: Loader worker processes feeding the training.

    Yields:
        The intra-op thread count in effect inside the body.
    """
    previous = torch.get_num_threads()
    if device.type != "cpu":
        yield previous
        return
    threads = training_threads(loader_workers, current=previous, cores=available_cores())
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(previous)
