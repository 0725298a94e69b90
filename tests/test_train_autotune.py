"""cuDNN autotuning in the trainer: on for CUDA training unless PyTorch was asked for determinism, never
touched on the CPU, the previous value restored after ``fit`` (also on an error). The CUDA decision is
simulated on the CPU; the last test checks it on a real GPU (``--gpu``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from pecop_lib.train import loop
from pecop_lib.train.autotune import cudnn_autotuning, determinism_requested, use_cudnn_benchmark
from pecop_lib.train.loop import StepOutput, Trainer

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def backend_flags() -> Iterator[None]:
    """Start from PyTorch's defaults (no determinism, no autotuning); restore whatever was set after."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.benchmark = torch.backends.cudnn.deterministic = False
    torch.use_deterministic_algorithms(False)
    yield
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[0], saved[1]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def test_decision() -> None:
    assert not determinism_requested()
    assert use_cudnn_benchmark(CUDA) is True  # automatic: on for CUDA
    assert use_cudnn_benchmark(CUDA, False) is False and use_cudnn_benchmark(CUDA, True) is True
    for requested in (None, True, False):
        assert use_cudnn_benchmark(CPU, requested) is False  # no cuDNN on the CPU
    torch.use_deterministic_algorithms(True)
    assert determinism_requested() and use_cudnn_benchmark(CUDA) is False
    assert use_cudnn_benchmark(CUDA, True) is True  # an explicit request wins
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = True
    assert determinism_requested() and use_cudnn_benchmark(CUDA) is False


def test_context_sets_and_restores_on_cuda_only() -> None:
    with cudnn_autotuning(CUDA) as inside:
        assert inside is True and torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.benchmark is False
    with pytest.raises(KeyError), cudnn_autotuning(CUDA):
        raise KeyError("boom")
    assert torch.backends.cudnn.benchmark is False
    torch.backends.cudnn.benchmark = True  # set by the user before a run that asks for it off
    with cudnn_autotuning(CUDA, False):
        assert torch.backends.cudnn.benchmark is False
    assert torch.backends.cudnn.benchmark is True
    for before in (True, False):  # the CPU leaves the flag as the user set it
        torch.backends.cudnn.benchmark = before
        with cudnn_autotuning(CPU, True) as inside:
            assert inside is before and torch.backends.cudnn.benchmark is before
        assert torch.backends.cudnn.benchmark is before


def _fit(seen: list[bool], *, cudnn_benchmark: bool | None = None, fail: bool = False) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)

    def step(model_: nn.Module, batch: torch.Tensor) -> StepOutput:
        seen.append(torch.backends.cudnn.benchmark)
        if fail:
            raise RuntimeError("step failed")
        return StepOutput(model_(batch).square().mean(), count=len(batch))

    trainer = Trainer(model, step, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", show_progress=False,
                      cudnn_benchmark=cudnn_benchmark)
    trainer.fit(lambda epoch: [torch.ones(2, 3)] * 2, 1)


def test_cpu_training_leaves_the_flag_alone() -> None:
    for before in (False, True):
        torch.backends.cudnn.benchmark = before
        seen: list[bool] = []
        _fit(seen)
        assert seen == [before, before] and torch.backends.cudnn.benchmark is before


def test_fit_autotunes_a_simulated_cuda_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's device decision simulated: ``fit`` asks the context as if its device were CUDA."""
    asked: list[tuple[torch.device, bool | None]] = []

    def as_if_cuda(device: torch.device, requested: bool | None = None):
        asked.append((device, requested))
        return cudnn_autotuning(CUDA, requested)

    monkeypatch.setattr(loop, "cudnn_autotuning", as_if_cuda)
    seen: list[bool] = []
    _fit(seen)
    assert seen == [True, True] and torch.backends.cudnn.benchmark is False  # on inside, restored after
    assert asked == [(CPU, None)]  # the trainer's own device and request reach the decision
    seen.clear()
    _fit(seen, cudnn_benchmark=False)
    assert seen == [False, False]
    seen.clear()
    torch.use_deterministic_algorithms(True)
    _fit(seen)
    assert seen == [False, False]  # determinism was asked for: no autotuning
    torch.use_deterministic_algorithms(False)
    seen.clear()
    with pytest.raises(RuntimeError, match="step failed"):
        _fit(seen, fail=True)
    assert seen == [True] and torch.backends.cudnn.benchmark is False


@pytest.mark.gpu
def test_cuda_training_autotunes() -> None:
    seen: list[bool] = []
    model = nn.Conv3d(3, 4, 3)

    def step(model_: nn.Module, batch: torch.Tensor) -> StepOutput:
        seen.append(torch.backends.cudnn.benchmark)
        return StepOutput(model_(batch).square().mean(), count=len(batch))

    trainer = Trainer(model, step, torch.optim.SGD(model.parameters(), lr=0.1), device="cuda", show_progress=False)
    trainer.fit(lambda epoch: [torch.ones(2, 3, 4, 8, 8)] * 2, 1)
    assert seen == [True, True] and torch.backends.cudnn.benchmark is False
