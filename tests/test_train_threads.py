"""CPU training leaves a core to each loader worker: the intra-op thread count inside ``Trainer.fit`` follows
``min(current, max(1, cores - workers))``, is restored afterwards (also on an error), and the pretraining
stages and fine-tuning hand their ``num_workers`` to the trainer."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from pecop_lib.data import official_transform
from pecop_lib.data.video import write_frame_folder
from pecop_lib.finetune import FinetuneOptions, Setting, finetune, open_finetune_data
from pecop_lib.models import build_backbone
from pecop_lib.pretrain.continual import continual_pretrain
from pecop_lib.pretrain.general import domain_general_pretrain
from pecop_lib.pretrain.pretext import TargetVideo
from pecop_lib.ssl import VSPPSampler
from pecop_lib.train import threads
from pecop_lib.train.context import RunContext
from pecop_lib.train.loop import StepOutput, Trainer
from pecop_lib.train.threads import cpu_training_threads, training_threads
from tests._heads_stand_ins import TinyBackbone
from tests._worlds import tiny_world

finetune_module = importlib.import_module("pecop_lib.finetune.run")  # the package re-exports a function named run
pretrain_modules = [importlib.import_module(f"pecop_lib.pretrain.{name}") for name in ("continual", "general")]

BEFORE = 3  # intra-op threads set before each test (more than the 2 cores of the development machine is fine)
CORES = 4  # what the tests pretend the process may run on


@pytest.fixture(autouse=True)
def known_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``BEFORE`` intra-op threads and ``CORES`` cores during the test; the real count restored after."""
    real = torch.get_num_threads()
    torch.set_num_threads(BEFORE)
    monkeypatch.setattr(threads, "available_cores", lambda: CORES)
    yield
    torch.set_num_threads(real)


@pytest.mark.parametrize(("workers", "current", "cores", "expected"), [
    (2, 2, 2, 1),  # the development machine: 2 workers on 2 cores leave one thread
    (0, 2, 2, 2),  # no workers: unchanged
    (1, 4, 4, 3),
    (3, 16, 8, 5),  # a count above the cores is lowered to what the workers leave
    (1, 8, 16, 8),  # never raised above the current count (physical cores, OMP_NUM_THREADS, torchrun)
    (1, 1, 16, 1),
    (9, 4, 8, 1),  # more workers than cores: still one thread
])
def test_thread_rule(workers: int, current: int, cores: int, expected: int) -> None:
    assert training_threads(workers, current=current, cores=cores) == expected


def test_thread_rule_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="loader_workers must be >= 0, got -1"):
        training_threads(-1, current=2, cores=2)
    with pytest.raises(ValueError, match="current=0"):
        training_threads(0, current=0, cores=2)


def test_available_cores_is_the_affinity_where_there_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real function, not the fixture's stand-in
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert threads.available_cores() == expected
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert threads.available_cores() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert threads.available_cores() == 1


def test_context_sets_and_restores_on_cpu_only() -> None:
    with cpu_training_threads(torch.device("cpu"), 2) as inside:
        assert inside == torch.get_num_threads() == 2  # min(3, 4 - 2)
    assert torch.get_num_threads() == BEFORE
    with pytest.raises(KeyError), cpu_training_threads(torch.device("cpu"), 3):
        assert torch.get_num_threads() == 1
        raise KeyError("boom")
    assert torch.get_num_threads() == BEFORE
    with cpu_training_threads(torch.device("cuda", 0), 3) as inside:  # a GPU run: the CPU pool is left alone
        assert inside == torch.get_num_threads() == BEFORE


def _trainer(seen: list[int], *, loader_workers: int, fail_at: int | None = None) -> Trainer:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)

    def step(model_: nn.Module, batch: torch.Tensor) -> StepOutput:
        seen.append(torch.get_num_threads())
        if fail_at is not None and len(seen) == fail_at:
            raise RuntimeError("step failed")
        return StepOutput(model_(batch).square().mean(), count=len(batch))

    return Trainer(model, step, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu", show_progress=False,
                   loader_workers=loader_workers)


def test_fit_trains_with_the_rule_and_restores_the_count() -> None:
    data = [torch.randn(2, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    seen: list[int] = []
    _trainer(seen, loader_workers=2).fit(lambda epoch: data, 2)
    assert seen == [2] * 6  # min(3, 4 - 2) in every step of both epochs
    assert torch.get_num_threads() == BEFORE
    seen.clear()
    _trainer(seen, loader_workers=0).fit(lambda epoch: data, 1)
    assert seen == [BEFORE] * 3  # no workers: as set by the caller
    seen.clear()
    with pytest.raises(RuntimeError, match="step failed"):
        _trainer(seen, loader_workers=3, fail_at=2).fit(lambda epoch: data, 1)
    assert seen == [1, 1] and torch.get_num_threads() == BEFORE
    with pytest.raises(ValueError, match="loader_workers must be >= 0"):
        _trainer(seen, loader_workers=-1)


class _Stop(Exception):
    """Raised by the recording trainer at the first epoch: the test only needs what reached the trainer."""


def _recording_trainer(seen: list[tuple[int, int]]) -> type[Trainer]:
    class Recording(Trainer):
        def _run_epoch(self, data, epoch, epochs):
            seen.append((self.loader_workers, torch.get_num_threads()))
            raise _Stop

    return Recording


def test_pretraining_stages_hand_their_workers_to_the_trainer(tmp_path, monkeypatch) -> None:
    seen: list[tuple[int, int]] = []
    for module in pretrain_modules:  # stage 2 and stage 1
        monkeypatch.setattr(module, "Trainer", _recording_trainer(seen))
    frames = np.random.default_rng(0).integers(0, 255, (24, 16, 16, 3), dtype=np.uint8)
    video = TargetVideo(write_frame_folder(frames, tmp_path / "video"), 0, 24)
    with pytest.raises(_Stop):
        continual_pretrain(build_backbone("i3d", adapters=True, seed=0), [video], VSPPSampler(clip_len=8),
                           official_transform("core_mtl", train=True, crop=16), epochs=1, batch_size=2, list_repeat=2,
                               run=RunContext(device="cpu", num_workers=2, show_progress=False))
    clips = [{"clip": torch.zeros(3, 8, 16, 16), "label": i % 2} for i in range(4)]
    with pytest.raises(_Stop):
        domain_general_pretrain(build_backbone("r3d18", num_classes=2, seed=0), clips, epochs=1, batch_size=2, lr=0.01,
                                run=RunContext(device="cpu", num_workers=1, show_progress=False))
    assert seen == [(2, 2), (1, 3)]  # stage 2: min(3, 4 - 2); stage 1: min(3, 4 - 1)
    assert torch.get_num_threads() == BEFORE


def test_finetuning_hands_its_workers_to_the_trainer(tmp_path_factory, monkeypatch) -> None:
    world = tiny_world(tmp_path_factory.getbasetemp())
    setting = Setting("usdl", "MTL-AQA")
    data = open_finetune_data(world["MTL-AQA"], setting, crop=32, clip_frames=16, seed=0)
    seen: list[tuple[int, int]] = []
    monkeypatch.setattr(finetune_module, "Trainer", _recording_trainer(seen))
    options = FinetuneOptions(epochs=1, batch_size=2, decode="expectation", val_fraction=0.0, bootstrap=10)
    with pytest.raises(_Stop):
        finetune(TinyBackbone(32), setting, data, options,
                 run=RunContext(device="cpu", num_workers=3, show_progress=False))
    assert seen == [(3, 1)] and torch.get_num_threads() == BEFORE
