"""Loader workers start from a fork server: a lock held by a parent thread cannot freeze them."""

from __future__ import annotations

import os
import threading

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pecop_lib.data import worker_context
from pecop_lib.train.data import epoch_loader

HELD = threading.Lock()  # held by a parent thread while the workers start


class _NeedsTheLock(Dataset):
    """Each item takes the module's lock, then reports which process made it."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        with HELD:
            return torch.tensor([index, os.getpid(), os.getppid()])


def _hold_lock_while(load) -> torch.Tensor:
    release = threading.Event()

    def holder() -> None:
        with HELD:
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        while not HELD.locked():
            pass
        return torch.cat(list(load()))
    finally:
        release.set()
        thread.join()


def test_workers_do_not_inherit_a_lock_held_by_a_parent_thread() -> None:
    data = epoch_loader(_NeedsTheLock(), 2, seed=0, shuffle=False, num_workers=2)
    items = _hold_lock_while(lambda: data(0))
    assert items[:, 0].tolist() == [0, 1, 2, 3]
    assert os.getpid() not in items[:, 1].tolist()
    assert os.getpid() not in items[:, 2].tolist()  # forked by the fork server, not by this process


def test_a_plain_fork_would_have_frozen_on_that_lock() -> None:
    """The hazard the fork server removes: a forked worker inherits the held lock and never returns."""
    if "fork" not in torch.multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    loader = DataLoader(_NeedsTheLock(), batch_size=2, num_workers=1, multiprocessing_context="fork", timeout=3)
    with pytest.raises(RuntimeError, match="timed out"):
        _hold_lock_while(lambda: loader)


def test_worker_context() -> None:
    assert worker_context(0) is None
    assert worker_context(2).get_start_method() in {"forkserver", "spawn"}
    with pytest.raises(ValueError, match="num_workers must be >= 0, got -1"):
        worker_context(-1)
