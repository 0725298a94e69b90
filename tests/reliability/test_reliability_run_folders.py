"""Run folders: one run per output folder (a lock a live run holds and a killed run leaves stale), ``--resume``
that refuses another configuration before writing anything, ``pecop finetune`` that does not replace a
finished run unless told, and Ctrl-C that keeps the last checkpoint and prints the command that continues.

Processes are real: a second process holds the lock, a lock holder is SIGKILLed, a training ``pecop`` gets
SIGINT while it writes a checkpoint.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
from pathlib import Path

import pytest
from _reliability_support import (
    hold_folder,
    pecop_env,
    read_json,
    reliability_world,
    run_pecop,
    run_until_stall_then_signal,
)

from pecop_lib.atomic import atomic_write_json
from pecop_lib.cli import main
from pecop_lib.config import resolve
from pecop_lib.finetune import FinetuneOptions, Setting
from pecop_lib.finetune.runs import check_replacing, run_folder, run_request
from pecop_lib.pretrain.pipeline import resume_differences
from pecop_lib.run_lock import LOCK_FILE, RunFolderLockedError, run_lock


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return reliability_world(tmp_path_factory.getbasetemp())


def test_a_live_holder_is_refused_by_name_and_a_killed_one_taken_over(tmp_path):
    folder = tmp_path / "out"
    holder = hold_folder(folder)
    try:
        held = read_json(folder / LOCK_FILE)
        assert held["pid"] == holder.pid and held["host"] == socket.gethostname()
        with pytest.raises(RunFolderLockedError, match=f"pid {holder.pid} on host {socket.gethostname()}.*"
                                                       "the holder test run.*choose another output folder"):
            with run_lock(folder):
                pass
        assert read_json(folder / LOCK_FILE)["pid"] == holder.pid  # the refused run changed nothing
    finally:
        holder.kill()
        holder.wait(timeout=60)
    with pytest.warns(UserWarning, match=f"stale lock of a run that no longer exists \\(pid {holder.pid}"):
        with run_lock(folder, command="the second run") as lock:
            assert read_json(lock) | {"started": None} == {"pid": os.getpid(), "host": socket.gethostname(),
                                                          "started": None, "command": "the second run"}
    assert not (folder / LOCK_FILE).exists()  # released at the end


def test_the_holder_may_enter_again_and_an_unreadable_lock_is_stale(tmp_path):
    with run_lock(tmp_path / "a") as lock:
        with run_lock(tmp_path / "a"):  # e.g. pecop pretrain holds --out, then trains its stage into it
            pass
        assert lock.is_file()  # the inner block does not release the outer one's lock
    assert not lock.exists()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / LOCK_FILE).write_text("")  # a holder killed between creating and writing the file
    with pytest.warns(UserWarning, match="unreadable lock file"), run_lock(tmp_path / "b"):
        pass
    with run_lock(tmp_path / "c", enabled=False) as lock:  # other ranks under torchrun take no lock
        assert not lock.exists()


def test_the_command_line_refuses_a_held_folder_at_once(world, tmp_path, capsys):
    out = tmp_path / "busy"
    holder = hold_folder(out)
    try:
        status = main(["pretrain", "--preset", "smoke", "--strategy", "pecop", "--data-root", str(world.root),
                       "--device", "cpu", "--out", str(out), "--no-progress"])
    finally:
        holder.kill()
        holder.wait(timeout=60)
    err = capsys.readouterr().err
    assert status == 2 and f"pid {holder.pid}" in err and "choose another output folder" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing of the refused run was written


def test_resume_compares_the_configuration_but_not_where_the_run_runs():
    stored = {"config": resolve("smoke", seed=0).to_dict(), "dataset": "PD4T", "task": "Gait", "fold": None}
    same_elsewhere = {**stored, "config": {**stored["config"], "device": "cuda", "data_num_workers": 4}}
    assert resume_differences(stored, same_elsewhere) == []
    other = {**stored, "task": "Leg agility", "config": {**stored["config"], "seed": 3, "pretrain_strategy": "hpt"}}
    assert resume_differences(stored, other) == ["pretrain_strategy: 'pecop' in the run, 'hpt' requested",
                                                 "seed: 0 in the run, 3 requested",
                                                 "task: 'Gait' in the run, 'Leg agility' requested"]


def test_finetune_replaces_a_run_only_when_told(tmp_path):
    settings = [Setting("usdl", "MTL-AQA"), Setting("core", "MTL-AQA")]
    options = FinetuneOptions()

    def request(setting):
        return run_request(setting, "PECoP", options, seed=0, crop=32, clip_frames=None)

    finished, unfinished = (run_folder(tmp_path, "PECoP", s) for s in settings)
    assert check_replacing(tmp_path, "PECoP", settings, request, resume=False, overwrite=False) == []  # nothing yet
    atomic_write_json(finished / "result.json", {"request": request(settings[0])})
    (unfinished / "checkpoints").mkdir(parents=True)
    (unfinished / "checkpoints" / "epoch_001.pt").write_bytes(b"")
    atomic_write_json(unfinished / "checkpoints" / "latest.json", {"latest": "epoch_001.pt", "files": ["epoch_001.pt"]})
    with pytest.raises(FileExistsError, match="holds a finished run .*--resume to load or continue it, --overwrite"):
        check_replacing(tmp_path, "PECoP", settings, request, resume=False, overwrite=False)
    assert check_replacing(tmp_path, "PECoP", settings, request, resume=True, overwrite=False) == []
    assert check_replacing(tmp_path, "PECoP", settings, request, resume=False, overwrite=True) == [finished, unfinished]
    with pytest.raises(ValueError, match="seed: 0 in the run, 1 requested"):
        check_replacing(tmp_path, "PECoP", settings, lambda s: {**request(s), "seed": 1}, resume=True, overwrite=False)
    with pytest.raises(ValueError, match="exclude each other"):
        check_replacing(tmp_path, "PECoP", settings, request, resume=True, overwrite=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_keeps_the_last_checkpoint_and_prints_the_command_that_continues(world, tmp_path_factory, tmp_path):
    env = pecop_env(tmp_path_factory.mktemp("ctrl-c-cache"))
    out = tmp_path / "run"
    args = ["pretrain", "--preset", "smoke", "--strategy", "pecop", "--data-root", str(world.root), "--device", "cpu",
            "--out", str(out), "--no-progress", "--epochs", "2", "--batch-size", "2", "--set", "pretrain_list_repeat=1"]
    stopped = run_until_stall_then_signal(args, env, "before:epoch_002.pt", tmp_path / "stall", signal.SIGINT)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert f"the checkpoints written so far are in {out}" in stopped.stderr
    command = stopped.stderr.strip().splitlines()[-1].strip()
    assert command == "pecop " + shlex.join([*args, "--resume"])
    assert read_json(out / "checkpoints" / "latest.json")["latest"] == "epoch_001.pt"  # epoch 1 kept
    assert not (out / LOCK_FILE).exists()  # the interrupted run released its folder
    resumed = run_pecop(shlex.split(command)[1:], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [e["epoch"] for e in json.loads((out / "metrics.json").read_text())["epochs"]] == [1, 2]
    assert Path(out / "stage2.json").is_file()
