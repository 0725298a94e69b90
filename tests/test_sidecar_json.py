"""Sidecar JSON files (records, checkpoint index, adapter configuration, results, world manifest): a corrupt or
truncated file is named, with its size and the fix, instead of a bare ``JSONDecodeError``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from pecop_lib.atomic import CorruptFileError, atomic_write_json, read_json
from pecop_lib.data.synthetic.world import LATENTS_FILE, MANIFEST, World, actions_identity, load_world
from pecop_lib.finetune.runs import RESULT_FILE, load_result
from pecop_lib.models.adapter_checkpoint import CONFIG_FILE, read_adapter_config
from pecop_lib.pretrain.artifacts import STAGE1_RECORD, STAGE2_RECORD
from pecop_lib.pretrain.stage1_artifact import load_stage1
from pecop_lib.pretrain.stage2_artifact import load_stage2
from pecop_lib.studies.tables import collect_results
from pecop_lib.train.checkpoint import LATEST_FILE, latest_checkpoint, record_checkpoint

GOOD = {"latest": "epoch_001.pt", "files": ["epoch_001.pt"], "format": "x", "generator_version": 0}


def _truncate(path: Path) -> Path:
    """Write ``GOOD`` as JSON, then cut it half-way (what an interrupted copy leaves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(GOOD)
    path.write_text(text[: len(text) // 2])
    return path


def test_read_json_reads_what_atomic_write_json_wrote(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "a.json", {"x": [1, 2.5, "é"]})
    assert read_json(path, fix="unused") == {"x": [1, 2.5, "é"]}
    with pytest.raises(FileNotFoundError):
        read_json(tmp_path / "missing.json", fix="unused")


@pytest.mark.parametrize("content", [b'{"latest": "epo', b"", b"\xff\xfe{}", b"{} trailing"])
def test_read_json_names_the_file_its_size_and_the_fix(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "record.json"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError, match=rf"{re.escape(str(path))} is corrupt or truncated \({len(content)} bytes, "
                                               r".*\); delete it"):
        read_json(path, fix="delete it")


SIDECARS: dict[str, tuple[str, Callable[[Path], object], str]] = {
    "stage-1 record": (STAGE1_RECORD, load_stage1, "and it is trained again"),
    "stage-2 record": (STAGE2_RECORD, load_stage2, "and it is trained again"),
    "checkpoint index": (LATEST_FILE, latest_checkpoint, "start the run again"),
    "checkpoint index (recording)": (LATEST_FILE, lambda folder: record_checkpoint(folder, "epoch_002.pt"),
                                     "start the run again"),
    "adapter configuration": (CONFIG_FILE, read_adapter_config, "save the adapters again"),
    "fine-tuning result": (RESULT_FILE, load_result, "the run is done again"),
    "fine-tuning result (notebook 08's collection)": (RESULT_FILE, lambda folder: collect_results(folder, "fig5"),
                                                      "run the notebook that made it again"),
    "world manifest": (MANIFEST, load_world, "the world is generated again"),
    "world manifest (action set identity)": (MANIFEST, lambda root: actions_identity(root / "Kinetics-synth"),
                                             "the world is generated again"),
    "world latents": (f"MTL-AQA/{LATENTS_FILE}", lambda root: World(root, {}).latents("MTL-AQA"),
                      "the world is generated again"),
}


@pytest.mark.parametrize("kind", list(SIDECARS))
def test_every_sidecar_reader_names_a_corrupt_file_and_the_fix(tmp_path: Path, kind: str) -> None:
    name, reader, fix = SIDECARS[kind]
    folder = tmp_path / "folder"
    (folder / "Kinetics-synth").mkdir(parents=True)
    path = _truncate(folder / name)
    with pytest.raises(CorruptFileError) as info:
        reader(folder)
    message = str(info.value)
    assert str(path) in message and fix in message
    assert path.read_text() == json.dumps(GOOD)[: len(json.dumps(GOOD)) // 2]  # nothing was overwritten
