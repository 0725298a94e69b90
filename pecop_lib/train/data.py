"""Per-epoch data loaders whose order is a function of (seed, epoch, rank) only.

The trainer asks for the batches of an epoch by calling ``data(epoch)``. Building each epoch's
:class:`~torch.utils.data.DataLoader` from a sampler seeded with ``seed + epoch`` (and a loader
generator seeded the same way, which seeds the worker processes) makes the order independent of
the global random state, so a run resumed in the middle of training sees exactly the batches the
uninterrupted run saw. Under DDP each process reads its own shard
(:class:`~torch.utils.data.DistributedSampler`), and one process with batch ``G * b`` reads the
same samples per step as G processes with batch ``b``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from pecop_lib.data.workers import worker_context


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and Python in a loader worker from the seed torch gave that worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    pin_memory: bool = False,
) -> Callable[[int], DataLoader]:
    """Return ``data(epoch) -> DataLoader`` with a deterministic order per (seed, epoch, rank).

    If ``dataset`` has a ``set_epoch(epoch)`` method it is called before each epoch's loader is
    built, so per-sample random draws can be seeded by (seed, epoch, index).

    Args:
        dataset: A map-style dataset.
        batch_size: Samples per batch in this process.
        seed: Base seed of the shuffling and of the worker seeds.
        shuffle: Shuffle with a permutation seeded by ``seed + epoch``.
        drop_last: Drop the last incomplete batch (and, under DDP, the samples that do not divide evenly).
        num_workers: Loader worker processes, started from a fork server
            (:func:`pecop_lib.data.workers.worker_context`).
        rank: This process's rank (DDP).
        world_size: Number of processes (DDP).
        collate_fn: Optional batch collation.
        pin_memory: Pin host memory for faster GPU copies.

    Raises:
        ValueError: If ``batch_size < 1`` or the rank is outside the world.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)

    def data(epoch: int) -> DataLoader:
        sampler.set_epoch(epoch)
        set_epoch = getattr(dataset, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=num_workers,
            multiprocessing_context=worker_context(num_workers),
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            generator=generator,
            worker_init_fn=_seed_worker,
        )

    return data
