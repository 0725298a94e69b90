"""``pecop finetune``: a smoke run as a subprocess (then reloaded with --resume), and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _worlds import finetune_world

from pecop_lib.cli import main


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return finetune_world(tmp_path_factory.getbasetemp()).root


@pytest.mark.slow
def test_cli_finetune_smoke_subprocess_and_resume(data_root, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pecop_lib", "finetune", "--head", "core", "--dataset", "PD4T", "--task", "Gait",
               "--backbone-checkpoint", "none", "--preset", "smoke", "--device", "cpu", "--out", str(out),
               "--data-root", str(data_root), "--epochs", "1", "--no-progress", "--label", "scratch"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "core/PD4T/Gait" in done.stdout and "official rho" in done.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["preset"] == "smoke" and "notice" in metrics
    (run,) = metrics["runs"]
    assert run["setting"] == "core/PD4T/Gait" and run["epochs"] == 1 and run["lr_head"] == 1e-3
    assert run["bn_mode"] == "frozen" and run["grad_accum_steps"] == 2
    assert "official_rho" in run and "honest_rho" in run
    folder = out / "scratch" / "core-PD4T-Gait"
    assert (folder / "result.json").is_file() and (folder / "evaluation.json").is_file()
    # --resume loads the finished run instead of training it again
    mtime = (folder / "result.json").stat().st_mtime_ns
    again = subprocess.run(command + ["--resume"], check=False, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (folder / "result.json").stat().st_mtime_ns == mtime
    assert json.loads((out / "metrics.json").read_text())["runs"] == metrics["runs"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--head", "tsa", "--dataset", "PD4T", "--task", "Gait"], "tsa has no recipe for PD4T"),
    (["--head", "core", "--dataset", "PD4T"], "PD4T needs a task"),
    (["--head", "core", "--dataset", "PD4T", "--task", "Gait", "--fold", "1"], "only JIGSAWS has folds"),
    (["--head", "musdl", "--dataset", "JIGSAWS", "--task", "Suturing", "--fold", "7"], "needs the test fold being evaluated, one of (0, 1, 2, 3)"),
    (["--head", "core", "--dataset", "PD4T", "--task", "Gait", "--set", "finetune_decod=argmax"], "did you mean"),
    (["--head", "core", "--dataset", "PD4T", "--task", "Gait", "--set", "finetune_train_backbone=half"],
     "train_backbone must be one of"),
])
def test_cli_argument_errors(extra, message, capsys, tmp_path):
    args = ["finetune", "--backbone-checkpoint", "none", "--preset", "smoke", "--device", "cpu", "--out",
            str(tmp_path), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pecop: error:") and message in err


def test_cli_checkpoint_errors(capsys, tmp_path):
    base = ["finetune", "--head", "core", "--dataset", "PD4T", "--task", "Gait", "--preset", "smoke", "--device", "cpu",
            "--out", str(tmp_path / "o")]
    assert main(base + ["--backbone-checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err
    from pecop_lib.models import build_backbone, save_adapter_checkpoint

    save_adapter_checkpoint(build_backbone("i3d", adapters=True, seed=0), tmp_path / "adapters")
    assert main(base + ["--backbone-checkpoint", str(tmp_path / "adapters")]) == 2
    assert "--base-weights" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: unknown head
        main(["finetune", "--head", "lstm", "--dataset", "PD4T", "--backbone-checkpoint", "none", "--preset", "smoke"])
