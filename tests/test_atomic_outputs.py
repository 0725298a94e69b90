"""Atomic writes and the files every notebook leaves behind."""

from __future__ import annotations

import json
import math
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import pytest

from pecop_lib.atomic import atomic_path, atomic_write_json, atomic_write_text
from pecop_lib.config import SMOKE_NOTICE
from pecop_lib.outputs import save_figure, titled, write_metrics


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "ckpt.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.bin"]


def test_unwritable_folder_names_the_folder(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError("denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match=f"folder {tmp_path} is not writable"):
        atomic_write_text(tmp_path / "x.json", "{}")


def test_atomic_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "m.json", {"x": math.nan})
    assert not (tmp_path / "m.json").exists()


def test_write_metrics_labels_smoke_and_converts_values(tmp_path):
    path = write_metrics(tmp_path, {"rho": np.float32(0.5), "arr": np.arange(3), "bad": float("nan")}, preset="smoke")
    record = json.loads(path.read_text())
    assert record == {"preset": "smoke", "notice": SMOKE_NOTICE, "rho": 0.5, "arr": [0, 1, 2], "bad": None}
    record = json.loads(write_metrics(tmp_path, {"rho": 0.9}, preset="tutorial").read_text())
    assert record == {"preset": "tutorial", "rho": 0.9}


def test_titled_only_marks_smoke():
    assert titled("Fig. 5", "smoke") == f"Fig. 5\n({SMOKE_NOTICE})"
    assert titled("Fig. 5", "tutorial") == "Fig. 5"


def test_save_figure_writes_each_format(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = save_figure(fig, tmp_path, "line", formats=("png", "pdf"))
    plt.close(fig)
    assert [p.name for p in paths] == ["line.png", "line.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:4] == b"%PDF"


def test_progress_is_a_text_bar_when_headless(monkeypatch):
    from tqdm.std import tqdm as text_tqdm

    from pecop_lib.outputs import HEADLESS_ENV, progress

    monkeypatch.setenv(HEADLESS_ENV, "1")
    bar = progress(range(3), desc="x", disable=True)
    assert type(bar) is text_tqdm
    bar.set_postfix(loss=1.0)  # callers update the bar they get back
    assert list(bar) == [0, 1, 2]


def test_atomic_files_get_umask_permissions(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "p.txt", "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
