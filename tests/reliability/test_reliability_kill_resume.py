"""Kill and resume: ``pecop pretrain`` and ``pecop finetune`` SIGKILLed mid-epoch and mid-write, then resumed.

Each scenario runs the real command line as a subprocess (smoke preset, CPU, a tiny world), kills it
twice at chosen points (``_stalling_pecop.py`` stalls one write so that the kill lands exactly
there), resumes it with ``--resume`` and checks:

* after every kill, every checkpoint file and JSON record on disk is complete (the interrupted
  write left only a truncated hidden temporary file, which the resumed run removes);
* nothing written before a kill is lost (the epoch records and evaluations reappear unchanged);
* the resumed run ends with exactly the weights and metrics of an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from _reliability_support import (
    pecop_env,
    read_json,
    reliability_world,
    run_pecop,
    run_until_stall_then_kill,
    without_timing,
)
from safetensors.torch import load_file

from pecop_lib.train.checkpoint import LATEST_FILE, load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return reliability_world(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One pecop cache for the module's subprocesses (stage 1 is trained once, by the first run)."""
    return tmp_path_factory.mktemp("kill-resume-cache")


def intact_checkpoints(folder: Path) -> tuple[str, list[Path]]:
    """Check that every checkpoint in ``folder`` is complete; return the newest name and any leftover temp files."""
    index = read_json(folder / LATEST_FILE)
    assert index["latest"] in index["files"]
    for name in index["files"]:
        assert (folder / name).is_file(), f"latest.json lists {name}, which is missing"
    for path in folder.glob("*.pt"):
        load_checkpoint(path)  # raises on a truncated or corrupt file
    return index["latest"], sorted(folder.glob(".*.tmp"))


def assert_interrupted_write(leftovers: list[Path], name: str, *, started: bool) -> None:
    """The kill interrupted the write of ``name``: only its hidden temporary file is left (empty if not ``started``).

    A started write left a truncated, unreadable file: the kill really landed in the middle of it.
    """
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{name}."), leftovers
    assert (leftovers[0].stat().st_size > 0) == started
    if started:
        with pytest.raises(Exception):  # noqa: B017 (torch raises RuntimeError or UnpicklingError for a cut zip)
            torch.load(leftovers[0], weights_only=True)


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), f"{key} differs from the uninterrupted run"


def test_pretrain_killed_mid_epoch_and_mid_checkpoint_write_resumes_exactly(world, cache, tmp_path):
    env = pecop_env(cache)

    def args(out: Path, *extra: str) -> list[str]:
        return ["pretrain", "--preset", "smoke", "--strategy", "pecop", "--data-root", str(world.root), "--device",
                "cpu", "--out", str(out), "--no-progress", "--epochs", "2", "--batch-size", "2",
                "--checkpoint-every", "1", "--set", "pretrain_list_repeat=1", *extra]

    reference, out = tmp_path / "reference", tmp_path / "killed"
    done = run_pecop(args(reference), env)
    assert done.returncode == 0, done.stderr[-3000:]
    steps_per_epoch = read_json(reference / "metrics.json")["epochs"][0]["steps"]
    assert steps_per_epoch >= 4

    # kill 1: mid-epoch, in step 3 of epoch 1 (its update done, not yet checkpointed: that work is lost)
    run_until_stall_then_kill(args(out), env, "before:step_0000003.pt", tmp_path / "stall1")
    latest, leftovers = intact_checkpoints(out / "checkpoints")
    assert latest == "step_0000002.pt"
    assert_interrupted_write(leftovers, "step_0000003.pt", started=False)

    # kill 2 (after resuming): while the end-of-epoch-2 checkpoint is half written
    run_until_stall_then_kill(args(out, "--resume"), env, "during:epoch_002.pt", tmp_path / "stall2")
    latest, leftovers = intact_checkpoints(out / "checkpoints")
    assert latest == f"step_{2 * steps_per_epoch - 1:07d}.pt"  # the last step checkpoint of epoch 2
    assert_interrupted_write(leftovers, "epoch_002.pt", started=True)
    before_kill = read_json(out / "metrics.json")  # the trainer records an epoch, then checkpoints it
    assert [e["epoch"] for e in before_kill["epochs"]] == [1, 2]
    assert not (out / "stage2.json").exists()

    done = run_pecop(args(out, "--resume"), env)
    assert done.returncode == 0, done.stderr[-3000:]
    latest, leftovers = intact_checkpoints(out / "checkpoints")
    assert latest == "epoch_002.pt" and leftovers == []  # the resumed run removed the partial write

    after = read_json(out / "metrics.json")
    assert after["epochs"][0] == before_kill["epochs"][0]  # kept as recorded before the kill, timings included
    assert without_timing(after["epochs"][1]) == without_timing(before_kill["epochs"][1])  # redone: same numbers
    assert after["steps"] == before_kill["steps"]
    assert without_timing(after) == without_timing(read_json(reference / "metrics.json"))
    assert without_timing(read_json(out / "stage2.json")["history"]) == without_timing(
        read_json(reference / "stage2.json")["history"])
    for name in ("adapter_model", "backbone_bn_stats", "heads"):
        assert_same_tensors(load_file(out / "adapters" / f"{name}.safetensors"),
                            load_file(reference / "adapters" / f"{name}.safetensors"))
    assert_same_tensors(load_checkpoint(out / "checkpoints" / "epoch_002.pt")["model"],
                        load_checkpoint(reference / "checkpoints" / "epoch_002.pt")["model"])
    shutil.rmtree(tmp_path)  # ~0.5 GB of checkpoints: do not leave them in pytest's kept temp folders


def test_finetune_killed_mid_checkpoint_write_and_before_evaluation_resumes_exactly(world, cache, tmp_path):
    env = pecop_env(cache)

    def args(out: Path, *extra: str) -> list[str]:
        return ["finetune", "--head", "usdl", "--dataset", "PD4T", "--task", "Gait", "--backbone-checkpoint", "none",
                "--preset", "smoke", "--device", "cpu", "--out", str(out), "--data-root", str(world.root),
                "--epochs", "3", "--label", "scratch", "--no-progress", *extra]

    reference, out = tmp_path / "reference", tmp_path / "killed"
    run = Path("scratch") / "usdl-PD4T-Gait"
    done = run_pecop(args(reference), env)
    assert done.returncode == 0, done.stderr[-3000:]

    # kill 1: while the end-of-epoch-2 checkpoint is half written (epoch 2's training is lost)
    run_until_stall_then_kill(args(out), env, "during:epoch_002.pt", tmp_path / "stall1")
    latest, leftovers = intact_checkpoints(out / run / "checkpoints")
    assert latest == "epoch_001.pt"
    assert_interrupted_write(leftovers, "epoch_002.pt", started=True)
    evaluated = read_json(out / run / "evaluation.json")
    assert [e["epoch"] for e in evaluated["epochs"]] == [1]

    # kill 2 (after resuming): epoch 3 checkpointed, its evaluation not yet written
    run_until_stall_then_kill(args(out, "--resume"), env, "before:evaluation.json#3", tmp_path / "stall2")
    latest, leftovers = intact_checkpoints(out / run / "checkpoints")
    assert latest == "epoch_003.pt" and leftovers == []
    before_kill = read_json(out / run / "evaluation.json")
    assert [e["epoch"] for e in before_kill["epochs"]] == [1, 2]
    assert before_kill["epochs"][0] == evaluated["epochs"][0]
    assert not (out / run / "result.json").exists() and not (out / "metrics.json").exists()

    done = run_pecop(args(out, "--resume"), env)
    assert done.returncode == 0, done.stderr[-3000:]
    final = read_json(out / run / "evaluation.json")
    assert final["epochs"][:2] == before_kill["epochs"]  # nothing evaluated before the kills was lost
    assert final == read_json(reference / run / "evaluation.json")  # predictions of every epoch, bit for bit
    assert without_timing(read_json(out / run / "result.json")) == without_timing(
        read_json(reference / run / "result.json"))
    assert without_timing(read_json(out / "metrics.json")) == without_timing(read_json(reference / "metrics.json"))
    assert not (out / run / "checkpoints").exists()  # a finished run keeps its exported model, not the checkpoints
    for name in ("model.safetensors", "card.json"):  # the model the honest protocol selects, byte for byte
        assert (out / run / "export" / "honest" / name).read_bytes() == (
            reference / run / "export" / "honest" / name).read_bytes()
    assert json.loads((out / "metrics.json").read_text())["runs"][0]["epochs"] == 3
    shutil.rmtree(tmp_path)
