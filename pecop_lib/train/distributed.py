"""Multi-process training with ``torchrun`` + DistributedDataParallel, and the single-process case.

``torchrun --nproc_per_node=G script.py`` starts G processes and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and joins
the process group (NCCL on GPUs, gloo on CPUs). Without those variables it returns a
single-process context, so the same script runs unchanged under ``python`` and ``torchrun``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from pecop_lib.config import resolve_device


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a (possibly one-process) training job.

    Attributes:
        rank: Global process index.
        world_size: Number of processes.
        local_rank: Index on this machine (selects the GPU).
        device: The device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_distributed(self) -> bool:
        """True when more than one process takes part (gradients are averaged across them)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes checkpoints, metrics and progress bars."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every process (no-op with one process)."""
        if self.is_distributed:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over processes in place and return it (unchanged with one process)."""
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Collect one picklable object from every process, in rank order."""
        if not self.is_distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def init_distributed(device: str = "auto", *, backend: str | None = None) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment, or run alone.

    Args:
        device: ``"auto" | "cpu" | "cuda"``: with several processes on CUDA, process ``LOCAL_RANK``
            takes GPU ``LOCAL_RANK``.
        backend: Process-group backend; default NCCL for CUDA, gloo for CPU.

    Returns:
        The context of this process. With ``WORLD_SIZE`` unset or 1 nothing is initialised.

    Raises:
        RuntimeError: If ``WORLD_SIZE > 1`` but ``RANK``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``
            are missing (start the script with ``torchrun``), or if there are fewer GPUs than local
            processes.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    base = resolve_device(device)
    if world_size <= 1:
        return DistributedContext(device=base)
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set; start multi-process training with "
            "torchrun --nproc_per_node=N <script>"
        )
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible; "
                "use --nproc_per_node <= the number of GPUs"
            )
        base = torch.device("cuda", local_rank)
        torch.cuda.set_device(base)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if base.type == "cuda" else "gloo"), rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=base)


def shutdown_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
