"""``pecop pretrain``: clear errors on bad arguments, a smoke run as a subprocess, resume, torchrun."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _worlds import tiny_world
from conftest import REPO_ROOT
from safetensors.torch import load_file

from pecop_lib.cli import _pretrain_overrides, build_parser, main


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "PD4T"], "PD4T needs a task, one of ('Gait', 'Finger tapping', 'Hand movement', 'Leg agility')"),
        (["--dataset", "MTL-AQA", "--task", "Gait"], "MTL-AQA has a single task"),
        (["--dataset", "JIGSAWS", "--task", "Suturing"], "JIGSAWS needs the test fold being evaluated, one of (0, 1, 2, 3)"),
        (["--dataset", "JIGSAWS", "--task", "Suturing", "--fold", "4"], "the other three folds); got fold=4"),
        (["--fold", "1"], "MTL-AQA has a single train/test split; do not pass fold=1 (only JIGSAWS has folds)"),
        (["--set", "pretrain_lrr=0.1"], "unknown config key 'pretrain_lrr' (did you mean 'pretrain_lr'?)"),
        (["--set", "pretrain_epochs=two"], "config key 'pretrain_epochs' expects int, got str 'two'"),
        (["--kinetics-weights", "/nonexistent/model_rgb.pth"], "--kinetics-weights /nonexistent/model_rgb.pth does not exist"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--epochs", "-3"], "config key 'pretrain_epochs' = -3 is out of range; accepted: 1 <= value"),
        (["--lr", "nan"], "config key 'pretrain_lr' must be a finite number, got nan"),
        (["--set", "pretrain_dropout=1.5"], "config key 'pretrain_dropout' = 1.5 is out of range; accepted: 0 <= value < 1"),
        (["--seed", "-1"], "config key 'seed' = -1 is out of range"),
    ],
)
def test_bad_arguments_give_clear_errors(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    code = main(["pretrain", "--preset", "smoke", "--strategy", "pecop", "--out", str(tmp_path / "run"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "smoke", "--strategy", "lora"], "invalid choice: 'lora'"),
        (["--preset", "smoke", "--strategy", "pecop", "--pretext", "jigsaw"], "invalid choice: 'jigsaw'"),
        (["--strategy", "pecop"], "the following arguments are required: --preset"),
        (["--preset", "smoke", "--optimizer", "lion"], "invalid choice: 'lion'"),
    ],
)
def test_parser_rejects_unknown_choices(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_flags_become_config_overrides() -> None:
    args = build_parser().parse_args(["pretrain", "--preset", "paper", "--strategy", "hpt", "--pretext", "videopace",
                                      "--epochs", "3", "--lr", "0.5", "--optimizer", "adam", "--backbone", "r3d18", "--compile",
                                      "--set", "pretrain_list_repeat=7", "--set", "pretrain_vspp_mode='paper'"])
    assert _pretrain_overrides(args) == {
        "pretrain_strategy": "hpt", "pretrain_pretext": "pace", "pretrain_epochs": 3, "pretrain_full_epochs": 3,
        "pretrain_lr": 0.5, "pretrain_optimizer": "adam", "model_backbone": "r3d18", "train_compile": True, "pretrain_list_repeat": 7,
        "pretrain_vspp_mode": "paper",
    }


def _pecop(args: list[str], cache: Path, *, torchrun: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PECOP_CACHE_DIR": str(cache), "PECOP_HEADLESS": "1"}
    if torchrun:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}",
                   f"--master_port={port}", "-m", "pecop_lib"]
    else:
        command = [sys.executable, "-m", "pecop_lib"]
    return subprocess.run([*command, *args], check=False, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_smoke_run_writes_the_run_folder_and_resumes(world, tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "run"
    args = ["pretrain", "--preset", "smoke", "--strategy", "pecop", "--data-root", str(world.root), "--device", "cpu",
            "--out", str(out), "--no-progress"]
    done = _pecop(args, tmp_path / "cache")  # as a user runs it: a subprocess
    assert done.returncode == 0, done.stderr
    assert "pecop: stage 1 trained" in done.stdout and "pecop: stage 2 pecop/vspp on MTL-AQA" in done.stdout
    for name in ("stage2.json", "config.json", "metrics.json", "metrics.csv", "steps.csv", "checkpoints/latest.json",
                 "adapters/adapter_model.safetensors", "adapters/backbone_bn_stats.safetensors"):
        assert (out / name).is_file(), name
    record = json.loads((out / "stage2.json").read_text())
    assert record["spec"]["strategy"] == "pecop" and record["trainable_backbone_params"] == 1_109_068
    assert json.loads((out / "config.json").read_text())["config"]["preset"] == "smoke"
    assert len(list((tmp_path / "cache" / "pretrain").glob("stage1-i3d-smoke-seed0-*/model.safetensors"))) == 1

    monkeypatch.setenv("PECOP_CACHE_DIR", str(tmp_path / "cache"))  # the same cache, in this process
    assert main(args) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    adapters = load_file(out / "adapters" / "adapter_model.safetensors")
    assert main([*args, "--resume"]) == 0
    assert "stage 1 loaded" in capsys.readouterr().out  # the cached stage-1 backbone is reused
    after = load_file(out / "adapters" / "adapter_model.safetensors")
    assert all(torch.equal(after[k], v) for k, v in adapters.items())  # training was complete: nothing changed
    assert main([*args[:-2], str(tmp_path / "fresh"), "--resume"]) == 2
    assert "holds no checkpoint; start without --resume" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_runs_under_torchrun_with_two_cpu_processes(world, tmp_path: Path) -> None:
    if shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not installed")
    out = tmp_path / "ddp"
    done = _pecop(["pretrain", "--preset", "smoke", "--strategy", "hpt_bn", "--data-root", str(world.root),
                   "--device", "cpu", "--out", str(out), "--batch-size", "4", "--set", "pretrain_list_repeat=2",
                   "--no-progress"], tmp_path / "cache", torchrun=2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("pecop: stage 2 hpt_bn/vspp") == 1  # only rank 0 reports
    record = json.loads((out / "stage2.json").read_text())
    assert record["world_size"] == 2 and record["weights"] == "model.safetensors"
    videos = record["data"]["videos"]
    assert record["history"]["epochs"][0]["samples"] == (2 * videos // 4) * 4  # both processes' clips counted
