"""The artifact store: keys, names, tensor digests, atomic folder replacement and the load-or-run rule."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pecop_lib.run_lock import LOCK_FILE, RunFolderLockedError, run_lock
from pecop_lib.store import (
    ArtifactStore,
    agreed,
    artifact_name,
    digest,
    file_sha256,
    replace_folder,
    slug,
    state_sha256,
    tensors_sha256,
    without_added,
)


def test_digest_is_the_sha256_prefix_of_sorted_json() -> None:
    value = {"b": 1, "a": [2, "x"], "p": Path("/x")}
    text = '{"a": [2, "x"], "b": 1, "p": "/x"}'
    assert json.dumps(value, sort_keys=True, default=str) == text
    assert digest(value) == hashlib.sha256(text.encode()).hexdigest()[:12]
    assert digest(value, length=32) == hashlib.sha256(text.encode()).hexdigest()[:32]
    assert digest(("stage1", {"lr": 1})) == digest(["stage1", {"lr": 1}])  # tuples are JSON lists
    assert digest({"lr": 1e-3}) != digest({"lr": 1e-2})


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"pecop" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"pecop" * 1000).hexdigest()


def test_slug_and_names() -> None:
    assert slug("musdl/JIGSAWS/Suturing/fold0") == "musdl-JIGSAWS-Suturing-fold0"
    assert slug("HPT+BN") == "HPT+BN" and slug("Leg agility") == "Leg-agility" and slug(" a/ ") == "a"
    assert artifact_name("stage1", "i3d", "", "seed0", "abc") == "stage1-i3d-seed0-abc"  # empty parts skipped
    assert artifact_name("stage2", "pecop", "vspp", "PD4T-Leg agility", "course") == "stage2-pecop-vspp-PD4T-Leg-agility-course"
    store = ArtifactStore(Path("/c"))
    assert store.folder("Dom-G", "core/MTL-AQA") == Path("/c/Dom-G/core-MTL-AQA")


def test_without_added_drops_only_the_values_held_before() -> None:
    added = {"resize": "bilinear", "fold": None}
    assert without_added({"lr": 0.1, "resize": "bilinear", "fold": None}, added) == {"lr": 0.1}
    assert without_added({"lr": 0.1, "resize": "official", "fold": 2}, added) == {"lr": 0.1, "resize": "official", "fold": 2}
    assert without_added({"lr": 0.1}, added) == {"lr": 0.1}  # a record written before the settings existed


def test_tensor_digests_by_hand() -> None:
    a, b = torch.tensor([1.0, 2.0]), torch.tensor(3, dtype=torch.int64)
    own = hashlib.sha256()
    for name, t in (("a", a), ("b", b)):
        own.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        own.update(t.reshape(-1).numpy().tobytes())
    assert tensors_sha256([("a", a), ("b", b)]) == own.hexdigest()
    as_float = hashlib.sha256()
    for name, t in (("a", a), ("b", b)):
        as_float.update(f"{name}:{tuple(t.shape)};".encode())
        as_float.update(t.to(torch.float32).numpy().tobytes())
    assert tensors_sha256([("a", a), ("b", b)], as_float32=True) == as_float.hexdigest()
    module = torch.nn.BatchNorm1d(2)
    before = state_sha256(module)
    module.running_mean += 1  # a buffer counts
    assert state_sha256(module) != before


def test_replace_folder_is_all_or_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "world"
    folder.mkdir()
    (folder / "old.txt").write_text("old")

    def broken(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("generator failed")

    with pytest.raises(RuntimeError, match="generator failed"):
        replace_folder(folder, broken)
    assert [p.name for p in tmp_path.iterdir()] == ["world"] and (folder / "old.txt").read_text() == "old"

    def good(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")

    assert replace_folder(folder, good) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["world"]  # no temporary sibling left


class _Ranks:
    """A process group of which this process is not rank 0: rank 0 answers ``answer``."""

    is_main = False

    def __init__(self, answer: bool) -> None:
        self.answer = answer

    def all_gather_object(self, obj: object) -> list[object]:
        return [self.answer, obj]


def test_agreed_takes_rank_0s_answer() -> None:
    assert agreed(True) and not agreed(False)
    assert agreed(False, _Ranks(True)) and not agreed(True, _Ranks(False))


def test_load_or_run(tmp_path: Path) -> None:
    store = ArtifactStore.at("things", tmp_path)
    assert store.root == tmp_path
    folder = store.folder("a")
    calls: list[tuple[str, object]] = []

    def finished(path: Path) -> bool:
        return (path / "done.json").is_file()

    def load(path: Path) -> str:
        calls.append(("load", path))
        return "loaded"

    def run(resume: bool) -> str:
        calls.append(("run", resume))
        assert (folder / LOCK_FILE).is_file()  # a run folder is locked while it is made
        with run_lock(folder):  # the holder may re-enter its own lock
            pass
        folder.mkdir(exist_ok=True)
        (folder / "done.json").write_text("{}")
        return "made"

    resumable = lambda path: (path / "checkpoint").is_file()  # noqa: E731
    assert store.load_or_run(folder, finished=finished, load=load, run=run, resumable=resumable) == "made"
    assert calls == [("run", False)] and not (folder / LOCK_FILE).exists()
    assert store.load_or_run(folder, finished=finished, load=load, run=run, resumable=resumable) == "loaded"
    assert calls[-1] == ("load", folder)
    (folder / "done.json").unlink()
    (folder / "checkpoint").write_text("")
    assert store.load_or_run(folder, finished=finished, load=load, run=run, resumable=resumable) == "made"
    assert calls[-1] == ("run", True)  # an unfinished run continues
    assert store.load_or_run(folder, finished=finished, load=load, run=run, resumable=resumable, force=True) == "made"
    assert calls[-1] == ("run", False)  # force: made anew, not resumed
    # rank 0 decides: it sees no finished artifact (this process does), so this process runs too, takes no
    # lock (rank 0 holds it) and does not resume (rank 0 sees no checkpoint)
    def run_unlocked(resume: bool) -> str:
        assert not (folder / LOCK_FILE).exists()
        return f"made resume={resume}"

    assert store.load_or_run(folder, finished=finished, load=load, run=run_unlocked, resumable=resumable,
                             context=_Ranks(False)) == "made resume=False"
    # a single file is made without a lock
    path = store.root / "f.bin"
    assert store.load_or_run(path, finished=Path.is_file, load=lambda p: p.read_bytes(),
                             run=lambda _r: path.write_bytes(b"x") and b"new", lock=False) == b"new"
    assert store.load_or_run(path, finished=Path.is_file, load=lambda p: p.read_bytes(), run=run, lock=False) == b"x"


def test_load_or_run_refuses_a_folder_another_run_makes(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "?", "command": "pecop"}))
    store = ArtifactStore(tmp_path)
    with pytest.raises(RunFolderLockedError, match="in use by another run"):
        store.load_or_run(folder, finished=lambda p: False, load=str, run=lambda r: "made")

