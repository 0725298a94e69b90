"""Safe loading: annotation pickles and checkpoints crafted to run code are refused, through the public loaders.

The payload is an object whose ``__reduce__`` calls ``open(marker, "w")``: unpickling it creates the
marker file (a stand-in for any code a crafted file could run). The first test proves the payloads are
live with the unsafe loaders (``pickle.loads``, ``torch.load(weights_only=False)``); every other test
feeds them to a pecop loader and asserts that it raises and that the marker never appears.
"""

from __future__ import annotations

import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _reliability_support import reliability_world, tiny_data, tiny_trainer

from pecop_lib.cli import main
from pecop_lib.data import JIGSAWS, MTLAQA, FineDiving, UnsafePickleError
from pecop_lib.doctor import check_dataset
from pecop_lib.models import build_backbone, load_adapter_checkpoint, load_weights, save_adapter_checkpoint
from pecop_lib.train.checkpoint import LATEST_FILE


class CreatesFile:
    """Unpickling this object calls ``open(path, "w")``, which creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str, str]]:
        return open, (self.path, "w")


@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> Path:
    return reliability_world(tmp_path_factory.getbasetemp()).root


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "a crafted file ran code while being loaded"


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"records": CreatesFile(marker)}, protocol=4)


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A torch.save file with real tensors and one code-running object."""
    torch.save({"conv3d_1a_7x7.conv3d.weight": torch.zeros(2), "payload": CreatesFile(marker)}, path)
    return path


def test_payloads_run_code_with_unsafe_loaders(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    pickle.loads(evil_pickle(marker))
    assert marker.exists()
    marker.unlink()
    torch.load(evil_checkpoint(tmp_path / "evil.pth", marker), weights_only=False)
    assert marker.exists()


ANNOTATION_FILES = {
    "mtl-aqa-annotations": ("MTL-AQA", "info/final_annotations_dict_with_dive_number.pkl",
                            lambda root: MTLAQA(root, "train", crop=32)),
    "mtl-aqa-split": ("MTL-AQA", "info/test_split_0.pkl", lambda root: MTLAQA(root, "test", crop=32)),
    "finediving-annotations": ("FineDiving", "Annotations/fine-grained_annotation_aqa.pkl",
                               lambda root: FineDiving(root, "train", crop=32)),
    "finediving-split": ("FineDiving", "Annotations/train_split.pkl", lambda root: FineDiving(root, "train", crop=32)),
    "jigsaws-labels": ("JIGSAWS", "info/label.pkl", lambda root: JIGSAWS(root, "Suturing", 0, "train", crop=32)),
    "jigsaws-splits": ("JIGSAWS", "info/splits.pkl", lambda root: JIGSAWS(root, "Suturing", 0, "train", crop=32)),
}


@pytest.mark.parametrize("which", ANNOTATION_FILES)
def test_dataset_loaders_refuse_code_in_annotation_pickles(which: str, world_root: Path, tmp_path: Path,
                                                           marker: Path) -> None:
    dataset, relative, open_dataset = ANNOTATION_FILES[which]
    root = tmp_path / dataset
    shutil.copytree(world_root / dataset, root)
    open_dataset(root)  # the genuine file loads
    (root / relative).write_bytes(evil_pickle(marker))
    with pytest.raises(UnsafePickleError, match=r"refuses to unpickle global (io|builtins)\.open") as info:
        open_dataset(root)
    assert str(root / relative) in str(info.value)


def test_doctor_reports_a_crafted_annotation_without_running_it(world_root: Path, tmp_path: Path,
                                                                marker: Path) -> None:
    root = tmp_path / "MTL-AQA"
    shutil.copytree(world_root / "MTL-AQA", root)
    (root / "info" / "final_annotations_dict_with_dive_number.pkl").write_bytes(evil_pickle(marker))
    (finding,) = check_dataset("mtl-aqa", root, crop=32)
    assert finding.level == "error" and "UnsafePickleError" in finding.message


def test_load_weights_refuses_a_code_running_checkpoint(tmp_path: Path, marker: Path) -> None:
    path = evil_checkpoint(tmp_path / "model_rgb.pth", marker)
    with pytest.raises(ValueError, match="weights_only=True") as info:
        load_weights(build_backbone("i3d", seed=0), path)
    assert str(path) in str(info.value)


def test_trainer_resume_refuses_a_code_running_checkpoint(tmp_path: Path, marker: Path) -> None:
    run = tmp_path / "run"
    tiny_trainer(run).fit(tiny_data, 1)
    checkpoint = run / "checkpoints" / "epoch_001.pt"
    evil_checkpoint(checkpoint, marker)  # replaces the genuine checkpoint named by latest.json
    assert json.loads((run / "checkpoints" / LATEST_FILE).read_text())["latest"] == checkpoint.name
    with pytest.raises(ValueError, match="cannot read checkpoint .* with weights_only=True") as info:
        tiny_trainer(run).fit(tiny_data, 2, resume=True)
    assert str(checkpoint) in str(info.value)


@pytest.mark.parametrize("file", ["adapter_model.safetensors", "backbone_bn_stats.safetensors"])
def test_adapter_checkpoint_refuses_a_pickle_in_place_of_safetensors(file: str, tmp_path: Path, marker: Path) -> None:
    folder = save_adapter_checkpoint(build_backbone("i3d", adapters=True, seed=0), tmp_path / "adapters")
    evil_checkpoint(folder / file, marker)
    with pytest.raises(ValueError, match="cannot read .* as safetensors") as info:
        load_adapter_checkpoint(build_backbone("i3d", adapters=True, seed=0), folder)
    assert str(folder / file) in str(info.value)


def test_finetune_command_refuses_a_code_running_backbone_checkpoint(tmp_path: Path, marker: Path, capsys) -> None:
    path = evil_checkpoint(tmp_path / "backbone.pth", marker)
    code = main(["finetune", "--head", "usdl", "--dataset", "PD4T", "--task", "Gait", "--backbone-checkpoint", str(path),
                 "--preset", "smoke", "--device", "cpu", "--out", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("pecop: error: cannot read") and str(path) in err
    assert not (tmp_path / "out").exists()


def test_pretrain_command_refuses_code_running_kinetics_weights(world_root: Path, tmp_path: Path, marker: Path,
                                                                capsys) -> None:
    path = evil_checkpoint(tmp_path / "model_rgb.pth", marker)
    code = main(["pretrain", "--preset", "smoke", "--strategy", "pecop", "--kinetics-weights", str(path), "--data-root",
                 str(world_root), "--device", "cpu", "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("pecop: error: cannot read") and str(path) in err
