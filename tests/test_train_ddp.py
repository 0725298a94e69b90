"""DDP: two gloo processes on the CPU train like one process on the doubled batch.

The workers are started the way ``torchrun`` starts them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT`` in the environment) and join through
:func:`pecop_lib.train.init_distributed`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from pecop_lib.train import (
    NonFiniteLossError,
    StepOutput,
    Trainer,
    epoch_loader,
    init_distributed,
    shutdown_distributed,
)
from tests._network import free_port

PER_PROCESS_BATCH = 3
EPOCHS = 2


def _dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 6, generator=g)
    return TensorDataset(x, x @ torch.randn(6, 2, generator=g))


def _trainer(run_dir: Path | None, distributed=None, step_fn=None, grad_accum_steps: int = 1) -> Trainer:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return Trainer(model, step_fn or _step, optimizer, scheduler, run_dir=run_dir, device="cpu", distributed=distributed,
                   grad_accum_steps=grad_accum_steps, show_progress=False)


def _step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    x, y = batch
    pred = model(x)
    return StepOutput(((pred - y) ** 2).mean(), {"mae": (pred - y).abs().mean()}, count=len(x))


def _nan_on_rank1(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    out = _step(model, batch)
    if torch.distributed.get_rank() == 1:
        return StepOutput(out.loss * float("nan"), out.metrics, out.count)
    return out


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    context = init_distributed("cpu")
    try:
        trainer = _trainer(Path(out) / "run", context)
        history = trainer.fit(epoch_loader(_dataset(), PER_PROCESS_BATCH, seed=5, rank=rank, world_size=world_size), EPOCHS)
        torch.save(trainer.model.state_dict(), Path(out) / f"weights_rank{rank}.pt")
        (Path(out) / f"history_rank{rank}.json").write_text(json.dumps(history.epochs))
        # accumulation under DDP (gradients synchronised only on the last micro-batch of a group)
        accumulated = _trainer(None, context, grad_accum_steps=2)
        accumulated.fit(epoch_loader(_dataset(), PER_PROCESS_BATCH, seed=5, rank=rank, world_size=world_size), EPOCHS)
        torch.save(accumulated.model.state_dict(), Path(out) / f"accumulated_rank{rank}.pt")
        # a non-finite loss on one process must stop every process (no hang), with the same message
        try:
            _trainer(None, context, _nan_on_rank1).fit(
                epoch_loader(_dataset(), PER_PROCESS_BATCH, seed=5, rank=rank, world_size=world_size), 1
            )
        except NonFiniteLossError as exc:
            (Path(out) / f"nan_rank{rank}.txt").write_text(str(exc))
    finally:
        shutdown_distributed()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_gloo_processes_equal_one_process_on_the_doubled_batch(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)

    single = _trainer(tmp_path / "single")
    history = single.fit(epoch_loader(_dataset(), 2 * PER_PROCESS_BATCH, seed=5), EPOCHS)

    rank0 = torch.load(tmp_path / "weights_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "weights_rank1.pt", weights_only=True)
    for name, reference in single.model.state_dict().items():
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between processes"
        torch.testing.assert_close(rank0[name], reference, rtol=1e-5, atol=1e-6, msg=name)
    ddp_history = json.loads((tmp_path / "history_rank0.json").read_text())
    assert [e["steps"] for e in ddp_history] == [e["steps"] for e in history.epochs] == [4, 8]
    for ddp_epoch, epoch in zip(ddp_history, history.epochs, strict=True):
        assert ddp_epoch["samples"] == epoch["samples"] == 24  # metrics reduced over both processes
        assert ddp_epoch["loss"] == pytest.approx(epoch["loss"], rel=1e-5)
        assert ddp_epoch["mae"] == pytest.approx(epoch["mae"], rel=1e-5)
    # only rank 0 writes files; the checkpoint of the DDP run holds both processes' generator states
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "epoch_002.pt", weights_only=True)
    assert len(checkpoint["rng"]) == 2 and checkpoint["world_size"] == 2
    # 2 processes x 2 micro-batches of 3 = one process with batches of 12
    big = _trainer(None)
    big.fit(epoch_loader(_dataset(), 4 * PER_PROCESS_BATCH, seed=5), EPOCHS)
    accumulated = torch.load(tmp_path / "accumulated_rank0.pt", weights_only=True)
    for name, reference in big.model.state_dict().items():
        torch.testing.assert_close(accumulated[name], reference, rtol=1e-5, atol=1e-6, msg=name)
    for rank in (0, 1):
        message = (tmp_path / f"nan_rank{rank}.txt").read_text()
        assert message.startswith("non-finite loss nan at epoch 1/1, optimizer step 1, batch 0")
