"""A full disk and a read-only file system for real, not simulated: a small tmpfs is mounted for each test.

Mounting needs root (with ``CAP_SYS_ADMIN``); elsewhere the tests are skipped and say why. The
catalogue's ``disk-full-checkpoint`` case simulates the error on any machine; these check that the
kernel's own ``ENOSPC`` and ``EROFS`` reach the user as the same one clear message, with nothing lost.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from _reliability_support import read_json, tiny_data, tiny_trainer

from pecop_lib.atomic import atomic_write_json
from pecop_lib.outputs import prepare_out_dir
from pecop_lib.run_lock import run_lock
from pecop_lib.train.checkpoint import LATEST_FILE

CHUNK = 64 * 1024


@contextmanager
def tmpfs(path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of ``size_kib`` KiB mounted at ``path`` for the block (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'mount failed'}): a real full disk and a "
                    "read-only file system are tested as root only; the catalogue simulates them elsewhere")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until the file system is full; return it."""
    filler = folder / "filler.bin"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * CHUNK)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_says_so(tmp_path):
    with tmpfs(tmp_path / "disk", 1024) as disk:
        run = disk / "run"
        tiny_trainer(run).fit(tiny_data, 1)
        checkpoints = run / "checkpoints"
        kept = (checkpoints / "epoch_001.pt").read_bytes()
        filler = fill(disk)
        with pytest.raises(OSError) as caught:
            tiny_trainer(run).fit(tiny_data, 2, resume=True)
        assert caught.value.errno == errno.ENOSPC
        message = str(caught.value)
        assert f"no space left while writing {run}" in message and "Free disk space" in message, message
        assert "unexpected pos" not in message
        # nothing lost, nothing half-written: the last checkpoint and its index are as they were
        assert (checkpoints / "epoch_001.pt").read_bytes() == kept
        assert read_json(checkpoints / LATEST_FILE)["latest"] == "epoch_001.pt"
        assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch_001.pt", LATEST_FILE]
        filler.unlink()  # space freed: the run resumes from its last checkpoint
        history = tiny_trainer(run).fit(tiny_data, 2, resume=True)
        assert [e["epoch"] for e in history.epochs] == [1, 2]


def test_a_read_only_file_system_gives_one_clear_message(tmp_path):
    with tmpfs(tmp_path / "disk", 256) as disk:
        existing = disk / "run"
        existing.mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for call, fix in ((lambda: prepare_out_dir(disk / "02_adapter_architecture"), "set OUT_DIR elsewhere"),
                          (lambda: run_lock(existing).__enter__(), "choose another output folder"),
                          (lambda: atomic_write_json(existing / "metrics.json", {"a": 1}), "choose another output folder")):
            with pytest.raises(OSError) as caught:
                call()
            assert caught.value.errno == errno.EROFS
            assert f"lies on a read-only file system; {fix}" in str(caught.value)
        assert sorted(p.name for p in existing.iterdir()) == []
