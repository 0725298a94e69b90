"""The training loop: exact resume, non-finite loss, accumulation, precision, files and errors (CPU)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from pecop_lib.train import (
    NonFiniteLossError,
    StepOutput,
    Trainer,
    epoch_loader,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)


class Interrupted(Exception):
    """Raised by a test step function to simulate a crash / a killed job."""


def _dataset(n: int = 20) -> TensorDataset:
    g = torch.Generator().manual_seed(123)
    x = torch.randn(n, 5, generator=g)
    return TensorDataset(x, x @ torch.randn(5, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g))


def _model(seed: int, dropout: float = 0.3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 1))


def _noisy_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    """Uses dropout (torch RNG) plus NumPy and Python global draws, so every generator matters."""
    x, y = batch
    noise = torch.from_numpy(np.random.standard_normal(tuple(x.shape)).astype(np.float32)).to(x.device)
    x = x + 0.01 * noise * random.random()
    pred = model(x)
    return StepOutput(((pred - y) ** 2).mean(), {"mae": (pred - y).abs().mean()}, count=len(x))


def _build(run_dir: Path | None, *, seed: int = 0, **kwargs) -> Trainer:
    model = _model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5)
    return Trainer(model, kwargs.pop("step_fn", _noisy_step), optimizer, scheduler, run_dir=run_dir,
                   device=kwargs.pop("device", "cpu"), show_progress=False, **kwargs)


def _interrupt_at(call: int):
    calls = {"n": 0}

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        calls["n"] += 1
        if calls["n"] == call:
            raise Interrupted(f"killed at call {call}")
        return _noisy_step(model, batch)

    return step


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize(
    ("every", "kill_call"),
    [pytest.param(None, 13, id="resume-from-epoch-checkpoint"), pytest.param(2, 13, id="resume-mid-epoch")],
)
def test_resume_after_interruption_is_bit_identical(tmp_path: Path, every: int | None, kill_call: int) -> None:
    data = epoch_loader(_dataset(), 4, seed=7)  # 5 batches per epoch
    seed_everything(1)
    reference = _build(tmp_path / "ref", checkpoint_every_steps=every)
    ref_history = reference.fit(data, 4)

    seed_everything(1)
    crashed = _build(tmp_path / "run", checkpoint_every_steps=every, step_fn=_interrupt_at(kill_call))
    with pytest.raises(Interrupted):
        crashed.fit(data, 4)  # dies in epoch 3 (calls 11-15), after step 12
    saved = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert saved["position"] == ({"epoch": 2, "batch": 0, "step": 10} if every is None else {"epoch": 2, "batch": 2, "step": 12})

    seed_everything(99)  # the resumed process starts with other random state and other initial weights
    resumed = _build(tmp_path / "run", seed=5, checkpoint_every_steps=every)
    history = resumed.fit(data, 4, resume=True)

    ref_weights = _weights(reference)
    for name, tensor in _weights(resumed).items():
        assert torch.equal(tensor, ref_weights[name]), name
    assert [s["loss"] for s in history.steps] == [s["loss"] for s in ref_history.steps]
    assert [e["loss"] for e in history.epochs] == [e["loss"] for e in ref_history.epochs]
    assert resumed.optimizer.state_dict()["state"][0]["momentum_buffer"].equal(
        reference.optimizer.state_dict()["state"][0]["momentum_buffer"]
    )
    assert resumed.scheduler.state_dict() == reference.scheduler.state_dict()


def test_non_finite_loss_stops_with_a_clear_message_before_the_update(tmp_path: Path) -> None:
    calls = {"n": 0}
    weights_seen: dict[str, torch.Tensor] = {}

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        calls["n"] += 1
        out = _noisy_step(model, batch)
        if calls["n"] != 8:
            return out
        weights_seen.update({k: v.clone() for k, v in model.state_dict().items()})
        return StepOutput(out.loss * float("nan"), out.metrics, out.count)

    trainer = _build(tmp_path, step_fn=step)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss nan at epoch 2/3, optimizer step 8, batch 2") as info:
        trainer.fit(epoch_loader(_dataset(), 4, seed=0), 3)  # 5 steps per epoch: call 8 = epoch 2, batch 2
    assert "epoch_001.pt" in str(info.value)  # names the last good checkpoint
    for name, tensor in _weights(trainer).items():
        assert torch.isfinite(tensor).all() and torch.equal(tensor, weights_seen[name]), name


def test_inf_loss_is_caught_too(tmp_path: Path) -> None:
    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        return StepOutput((model(batch[0]) ** 2).sum() * float("inf"), count=len(batch[0]))

    with pytest.raises(NonFiniteLossError, match=r"loss inf at epoch 1/1, optimizer step 1, batch 0"):
        _build(None, step_fn=step).fit(epoch_loader(_dataset(), 4, seed=0), 1)


def _plain_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
    x, y = batch
    return StepOutput(((model(x) - y) ** 2).mean(), count=len(x))


def _deterministic_trainer(batch_accum: int) -> Trainer:
    model = _model(0, dropout=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return Trainer(model, _plain_step, optimizer, device="cpu", grad_accum_steps=batch_accum, show_progress=False)


def test_gradient_accumulation_equals_the_large_batch() -> None:
    dataset = _dataset(22)  # 22 = 2 full batches of 8 + a short batch of 6 (3 micro-batches of 2)
    big = _deterministic_trainer(1)
    big_history = big.fit(epoch_loader(dataset, 8, seed=3), 3)
    accumulated = _deterministic_trainer(4)
    acc_history = accumulated.fit(epoch_loader(dataset, 2, seed=3), 3)
    assert len(acc_history.steps) == len(big_history.steps) == 9
    for (name, a), b in zip(accumulated.model.state_dict().items(), big.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    for a, b in zip(acc_history.steps, big_history.steps, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_metrics_files_and_checkpoint_pruning(tmp_path: Path) -> None:
    trainer = _build(tmp_path, keep_last=2)
    trainer.fit(epoch_loader(_dataset(), 4, seed=0), 3)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
    assert len(record["steps"]) == 15 and record["steps"][-1]["step"] == 15
    assert {"loss", "mae", "lr", "samples", "seconds", "samples_per_s"} <= set(record["epochs"][0])
    assert record["epochs"][0]["samples"] == 20
    assert record["epochs"][0]["lr"] == pytest.approx(0.05) and record["epochs"][1]["lr"] < 0.05  # cosine, per epoch
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("epoch,lr,steps,loss,mae") and len(csv_lines) == 4
    assert len((tmp_path / "steps.csv").read_text().splitlines()) == 16
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt")) == ["epoch_002.pt", "epoch_003.pt"]
    assert latest_checkpoint(tmp_path / "checkpoints").name == "epoch_003.pt"


def test_epoch_summary_averages_weighted_by_batch_size() -> None:
    # 10 samples, batches of 4, 4, 2: the epoch loss is the sample mean, not the mean of batch means
    model = _model(0, dropout=0.0)
    trainer = Trainer(model, _plain_step, torch.optim.SGD(model.parameters(), lr=0.0), device="cpu", show_progress=False)
    dataset = _dataset(10)
    history = trainer.fit(epoch_loader(dataset, 4, seed=0, shuffle=False), 1)
    x, y = dataset.tensors
    with torch.no_grad():
        expected = ((model(x) - y) ** 2).mean().item()
    assert history.epochs[0]["loss"] == pytest.approx(expected, rel=1e-6)


def test_precision_autocast_on_cpu_only_when_asked() -> None:
    dtypes = []

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        out = model(batch[0])
        dtypes.append(out.dtype)
        return StepOutput(((out.float() - batch[1]) ** 2).mean(), count=len(out))

    for precision in ("auto", "bf16"):
        model = _model(0)
        Trainer(model, step, torch.optim.SGD(model.parameters(), lr=0.01), device="cpu", precision=precision,
                show_progress=False).fit(epoch_loader(_dataset(8), 8, seed=0), 1)
    assert dtypes == [torch.float32, torch.bfloat16]
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        Trainer(_model(0), step, torch.optim.SGD(_model(0).parameters(), lr=0.01), device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Trainer(_model(0), step, torch.optim.SGD(_model(0).parameters(), lr=0.01), device="cpu", precision="fp8")


def test_bad_inputs_get_clear_errors(tmp_path: Path) -> None:
    trainer = _build(tmp_path)
    with pytest.raises(TypeError, match="data must be a function epoch -> iterable"):
        trainer.fit(torch.utils.data.DataLoader(_dataset()), 1)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        trainer.fit(epoch_loader(_dataset(), 4, seed=0), 1, resume=True)
    with pytest.raises(ValueError, match="returned no batches"):
        trainer.fit(lambda epoch: [], 1)
    trainer.fit(epoch_loader(_dataset(), 4, seed=0), 1)
    other = nn.Linear(5, 1)
    mismatched = Trainer(other, _plain_step, torch.optim.SGD(other.parameters(), lr=0.1), run_dir=tmp_path,
                         device="cpu", show_progress=False)
    with pytest.raises(RuntimeError, match="does not match checkpoint .*epoch_001.pt"):
        mismatched.fit(epoch_loader(_dataset(), 4, seed=0), 2, resume=True)
    with pytest.raises(ValueError, match="grad_accum_steps=1, this run uses 2"):
        _build(tmp_path, grad_accum_steps=2).fit(epoch_loader(_dataset(), 4, seed=0), 2, resume=True)

    def bad_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        return 1.0

    with pytest.raises(TypeError, match="must return a StepOutput"):
        _build(None, step_fn=bad_step).fit(epoch_loader(_dataset(), 4, seed=0), 1)


def test_checkpoint_files_are_checked_on_load(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a pecop training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "truncated.pt").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    path = save_checkpoint(tmp_path / "ok.pt", {"x": torch.arange(3)})
    assert torch.equal(load_checkpoint(path)["x"], torch.arange(3))
    assert not list(tmp_path.glob(".ok.pt.*"))  # the temporary file was renamed away


def test_compiled_model_trains_like_eager() -> None:
    # aot_eager traces through dynamo and AOT autograd like inductor, without generating C++ (fast on CI)
    dataset = _dataset(16)
    eager = _deterministic_trainer(1)
    eager.fit(epoch_loader(dataset, 8, seed=0), 2)
    model = _model(0, dropout=0.0)
    compiled = Trainer(model, _plain_step, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), device="cpu",
                       compile="aot_eager", show_progress=False)
    compiled.fit(epoch_loader(dataset, 8, seed=0), 2)
    for a, b in zip(compiled.model.state_dict().values(), eager.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_progress_bar_shows_loss_and_metrics_per_step(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from pecop_lib.train import loop

    bars = []

    class RecordingBar:
        def __init__(self, iterable, **kwargs) -> None:
            self.iterable, self.kwargs, self.postfixes = iterable, kwargs, []
            bars.append(self)

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, values, refresh=True) -> None:
            self.postfixes.append(dict(values))

    monkeypatch.setattr(loop, "progress", RecordingBar)
    model = _model(0)
    history = Trainer(model, _noisy_step, torch.optim.SGD(model.parameters(), lr=0.01), device="cpu").fit(
        epoch_loader(_dataset(), 4, seed=0), 2
    )
    assert [b.kwargs["desc"] for b in bars] == ["train epoch 1/2", "train epoch 2/2"]
    assert [b.kwargs["total"] for b in bars] == [5, 5]
    postfixes = [p for b in bars for p in b.postfixes]
    assert postfixes == [{k: s[k] for k in ("loss", "mae")} for s in history.steps]
    printed = capsys.readouterr().out.splitlines()
    assert printed[-1] == f"train epoch 2/2: loss {history.epochs[1]['loss']:.4g}, mae {history.epochs[1]['mae']:.4g}"

    # a run trained one epoch per call (held-out measurement between epochs) counts to its planned epochs
    bars.clear()
    model = _model(0)
    trainer = Trainer(model, _noisy_step, torch.optim.SGD(model.parameters(), lr=0.01), device="cpu")
    for epoch in range(3):
        trainer.fit(epoch_loader(_dataset(), 4, seed=0), epoch + 1, of=3)
    assert [b.kwargs["desc"] for b in bars] == ["train epoch 1/3", "train epoch 2/3", "train epoch 3/3"]
    assert capsys.readouterr().out.splitlines()[-1].startswith("train epoch 3/3: loss ")


@pytest.mark.gpu
def test_cuda_autocast_scaler_and_resume(tmp_path: Path) -> None:
    device = torch.device("cuda")
    dtypes = []

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> StepOutput:
        out = model(batch[0])
        dtypes.append(out.dtype)
        return StepOutput(((out.float() - batch[1]) ** 2).mean(), count=len(out))

    model = _model(0, dropout=0.0)
    fp16 = Trainer(model, step, torch.optim.SGD(model.parameters(), lr=0.01), device=device, precision="fp16",
                   show_progress=False)
    assert fp16.scaler is not None
    history = fp16.fit(epoch_loader(_dataset(), 4, seed=0), 2)
    assert dtypes[-1] == torch.float16 and all(np.isfinite(s["loss"]) for s in history.steps)
    assert next(fp16.model.parameters()).dtype == torch.float32  # weights stay fp32

    data = epoch_loader(_dataset(), 4, seed=7)
    seed_everything(1)
    reference = _build(tmp_path / "ref", device=device)
    reference.fit(data, 3)
    seed_everything(1)
    crashed = _build(tmp_path / "run", device=device, step_fn=_interrupt_at(8))
    with pytest.raises(Interrupted):
        crashed.fit(data, 3)
    resumed = _build(tmp_path / "run", seed=5, device=device)
    resumed.fit(data, 3, resume=True)  # generator states are restored from CPU tensors
    assert reference.amp_dtype in (torch.bfloat16, torch.float16)  # "auto" on a GPU
    for (name, a), b in zip(resumed.model.state_dict().items(), reference.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
